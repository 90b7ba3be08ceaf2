"""Every route, called for real, touches only the Store tables its function's IAM role grants.

The roles in the template are derived from the code by reading it (``notify_cli.deploy_access``); a table
the code reaches without naming it is invisible to that reading. The erase function was such a case: the
erasure listed the tables at run time, its role named 8 of the 17 it writes, and on AWS the route was
refused by IAM while every local test passed (DynamoDB Local enforces no IAM). Here each route of the
OpenAPI document is called once with a valid request on the in-process gateway, every table operation is
recorded, and what was touched is checked against what the derivation grants: the tables, and writes and
scans as their own permissions. The key check runs in the authorizer function on AWS, so what it
touches counts against the authorizer's role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lambdas.routes import ROUTES
from notify_cli.deploy_access import derive_access
from notify_core.store.sqlite import SqliteTable
from tests.api.conftest import Served
from tests.api.test_attack import _requests

READS = ("get", "batch_get", "query", "query_columns", "query_many", "query_columns_many")
WRITES = ("batch_put", "put_encoded", "batch_put_frame", "put", "update", "update_many", "delete")


def _recording(touched: list[tuple[str, str]], kind: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def recorded(self: SqliteTable, *args: Any, **kwargs: Any) -> Any:
        touched.append((self.name, kind))
        return method(self, *args, **kwargs)
    return recorded


def test_each_route_touches_only_what_its_functions_role_grants(served: Served,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    requests = _requests(served)  # made before recording: seeding the world is not a route's doing
    token = served.key("admin")
    touched: list[tuple[str, str]] = []
    for name in READS:
        monkeypatch.setattr(SqliteTable, name, _recording(touched, "read", getattr(SqliteTable, name)))
    for name in WRITES:
        monkeypatch.setattr(SqliteTable, name, _recording(touched, "write", getattr(SqliteTable, name)))
    monkeypatch.setattr(SqliteTable, "scan", _recording(touched, "scan", SqliteTable.scan))
    authorizer = derive_access("lambdas.authorizer")

    problems: list[str] = []
    covered = 0
    for (method, path), spec in requests.items():
        [route] = [r for r in ROUTES if r.method == method and r.path == path]
        module = route.handler.partition(":")[0]
        touched.clear()
        reply = served.client.request(method, spec.get("valid_path", spec["path"]), json=spec.get("json"),
                                      headers={"x-api-key": token}, follow_redirects=False)
        assert reply.status_code < 500, (method, path, reply.text[:300])
        granted = derive_access(module)
        for table, kind in sorted(set(touched)):
            if table in granted.tables:
                if kind == "write" and not granted.store_writes:
                    problems.append(f"{method} {path} ({module}) writes {table}: its role only reads")
                if kind == "scan" and not granted.store_scans:
                    problems.append(f"{method} {path} ({module}) scans {table}: its role has no Scan")
            elif not (table in authorizer.tables and kind == "read" and route.scope is not None):
                problems.append(f"{method} {path} ({module}) {kind}s {table}: not in its role")
        covered += bool(touched)
    assert not problems, problems
    assert covered >= len(requests) - 1  # every route but the stateless capture reaches the Store
