"""A log file the erasure sweep rewrites keeps the lines logged after it (``notify worker`` runs on)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from notify_core.erasure import erase_from_files
from notify_core.observability import configure_logging

NAMES = ("notify_core", "lambdas", "notify_cli")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in NAMES}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def test_lines_logged_after_an_erasure_rewrote_the_log_are_in_it(tmp_path: Path, restored_logging: None) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    configure_logging(path=logs / "delivery.jsonl")
    log = logging.getLogger("notify_core.delivery.test")
    log.info("sent", extra={"user_id": "keep", "n": 1})
    log.info("sent", extra={"user_id": "gone", "n": 2})
    assert erase_from_files([logs], frozenset({"gone"})) == {str(logs / "delivery.jsonl"): 1}
    log.info("sent", extra={"user_id": "keep", "n": 3})
    lines = [json.loads(line) for line in (logs / "delivery.jsonl").read_text().splitlines()]
    assert [(r["user_id"], r["n"]) for r in lines] == [("keep", 1), ("keep", 3)]
    assert (logs / "delivery.jsonl").stat().st_mode & 0o777 == 0o600
