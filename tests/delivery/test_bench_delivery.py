"""The delivery benchmark measures the worker as ``notify worker`` runs it, its log line a delivery included."""

from __future__ import annotations

import logging

from bench.bench_delivery import run_once


def test_a_short_burst_is_delivered_once_each_and_logged_as_notify_worker_logs_it() -> None:
    loggers = [logging.getLogger(name) for name in ("notify_core", "lambdas", "notify_cli")]
    before = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    run = run_once(200, 0.0, concurrency=4)
    assert run["delivered"] == 200 and run["duplicates"] == 0
    # Until session 55 the benchmark's worker had no log handler: 0 lines, and a delivery's CPU without them.
    assert run["attempt_log_lines"] == 200
    assert [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers] == before  # the process's as it was
