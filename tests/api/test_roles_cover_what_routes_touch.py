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
from pathlib import Path
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


@pytest.fixture
def touched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(table, read | write | scan) of every Store table operation from here on."""
    seen: list[tuple[str, str]] = []
    for name in READS:
        monkeypatch.setattr(SqliteTable, name, _recording(seen, "read", getattr(SqliteTable, name)))
    for name in WRITES:
        monkeypatch.setattr(SqliteTable, name, _recording(seen, "write", getattr(SqliteTable, name)))
    monkeypatch.setattr(SqliteTable, "scan", _recording(seen, "scan", SqliteTable.scan))
    return seen


def _outside_role(touched: list[tuple[str, str]], module: str, *, also: frozenset[str] = frozenset()) -> list[str]:
    """What was touched that the role derived for ``module`` does not grant (``also``: tables read by
    another function on the way, the authorizer's)."""
    granted = derive_access(module)
    problems = []
    for table, kind in sorted(set(touched)):
        if table in granted.tables:
            if kind == "write" and not granted.store_writes:
                problems.append(f"{module} writes {table}: its role only reads")
            if kind == "scan" and not granted.store_scans:
                problems.append(f"{module} scans {table}: its role has no Scan")
        elif not (table in also and kind == "read"):
            problems.append(f"{module} {kind}s {table}: not in its role")
    return problems


def test_each_route_touches_only_what_its_functions_role_grants(served: Served, touched: list[tuple[str, str]]
                                                                 ) -> None:
    requests = _requests(served)  # seeding the world is not a route's doing
    token = served.key("admin")
    authorizer = derive_access("lambdas.authorizer").tables
    problems: list[str] = []
    covered = 0
    for (method, path), spec in requests.items():
        [route] = [r for r in ROUTES if r.method == method and r.path == path]
        touched.clear()
        reply = served.client.request(method, spec.get("valid_path", spec["path"]), json=spec.get("json"),
                                      headers={"x-api-key": token}, follow_redirects=False)
        assert reply.status_code < 500, (method, path, reply.text[:300])
        problems += [f"{method} {path}: {p}" for p in _outside_role(
            touched, route.handler.partition(":")[0], also=authorizer if route.scope else frozenset())]
        covered += bool(touched)
    assert not problems, problems
    assert covered >= len(requests) - 1  # every route but the stateless capture reaches the Store


def test_the_delivery_function_touches_only_what_its_role_grants(tmp_path: Path,
                                                                 touched: list[tuple[str, str]]) -> None:
    """One scheduled pass: sends, a retry and a dead letter, with their derived rows."""
    from lambdas import deliver_notifications
    from notify_core.clock import ManualClock
    from notify_core.delivery import DeliveryWorker, WorkerOptions
    from notify_core.delivery.channels import Outcome
    from notify_core.delivery.synthetic import seed_due
    from notify_core.store.sqlite import SqliteStore
    from tests.delivery.conftest import NOW, ScriptedChannel, minute_start

    clock = ManualClock(NOW)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    items = seed_due(store, n=20, start=minute_start(clock.now()), with_plans=True)
    channel = ScriptedChannel({items[0]["notification_id"]: [Outcome.RETRYABLE],
                               items[1]["notification_id"]: [Outcome.PERMANENT]})
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, lookback_minutes=3, prefetch_s=0.0))
    deliver_notifications.use_worker(worker)
    touched.clear()
    try:
        reply = deliver_notifications.handler({"source": "aws.events", "linger_s": 0}, None)
    finally:
        deliver_notifications.use_worker(None)
        worker.close()
        store.close()
    assert reply["delivered"] == 18 and reply["retried"] == 1 and reply["dead_lettered"] == 1
    assert {t for t, _ in touched} >= {"schedules", "deliveries", "retries", "dead_letters", "sends"}
    assert _outside_role(touched, "lambdas.deliver_notifications") == []


def test_the_event_consumer_touches_only_what_its_role_grants(tmp_path: Path,
                                                              touched: list[tuple[str, str]]) -> None:
    """The consumer pod's role: orders and clicks persisted, and a record of an erased user left out."""
    import json
    import threading
    from datetime import UTC, datetime

    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.erasure_register import register_erasure
    from notify_core.events import capture_events
    from notify_core.events.consumer import EventConsumer
    from notify_core.store.sqlite import SqliteStore
    from notify_core.stream.local_log import LocalLog
    from tests.events.helpers import click, events_clock, order

    store = SqliteStore(tmp_path / "store.sqlite")
    log = LocalLog(tmp_path / "log.sqlite")
    body = json.dumps([click(i) for i in range(13)] + [order(i) for i in range(13)])
    assert capture_events(body, stream=log, clock=events_clock()).accepted == 26
    register_erasure(store, "u12", erased_at=datetime.now(UTC))  # after its two records were produced
    consumer = EventConsumer(stream=log, store=store, landing=tmp_path / "landing", poll_timeout=0.2,
                             clock=SYSTEM_CLOCK)
    touched.clear()
    try:
        consumer.run(stop=threading.Event(), max_records=26, idle_exit=5)
        assert consumer.totals.persisted == 24
    finally:
        consumer.close()
        log.close()
        store.close()
    assert {t for t, _ in touched} >= {"purchases", "user_events", "events", "erasures"}
    assert _outside_role(touched, "notify_core.events.consumer") == []
