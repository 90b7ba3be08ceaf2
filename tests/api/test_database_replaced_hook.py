"""A reply for a database replaced under the process runs the hook the local gateway registers to stop itself
(lambdas.http.on_database_replaced); no other error does."""

from __future__ import annotations

from lambdas import http
from notify_core.errors import BackendError, DatabaseReplacedError


def test_only_a_replaced_database_runs_the_hook() -> None:
    calls: list[str] = []
    http.on_database_replaced(lambda: calls.append("stop"))
    try:
        assert http.error_reply(BackendError("the disk is full"), rid="r1")["statusCode"] == 503
        assert calls == []
        reply = http.error_reply(DatabaseReplacedError("store.sqlite was replaced"), rid="r2")
        assert reply["statusCode"] == 503 and calls == ["stop"]
    finally:
        http.on_database_replaced(lambda: None)
