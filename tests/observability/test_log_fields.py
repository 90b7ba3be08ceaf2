"""``log_fields``: the hot loops' lines (a delivery attempt, a recommendation request) written without a
``LogRecord`` where Notify's own log file is all they meet, and by ``logging`` wherever anything else could look
at the record. Either way the line is the one ``logger.log(level, message, extra=fields)`` writes."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notify_core.observability import JsonFormatter, LineFileHandler, configure_logging, log_fields, request_context


@pytest.fixture
def logger(tmp_path: Path) -> Iterator[logging.Logger]:
    """``tests.log_fields.child`` under a parent holding a file handler as :func:`configure_logging` sets one up."""
    parent = logging.getLogger("tests.log_fields")
    handler = LineFileHandler(tmp_path / "notify.jsonl")
    handler.setFormatter(JsonFormatter())
    parent.handlers, parent.propagate, parent.level = [handler], False, logging.INFO
    child = logging.getLogger("tests.log_fields.child")
    try:
        yield child
    finally:
        parent.handlers, parent.propagate, parent.level = [], True, logging.NOTSET
        child.filters = []
        handler.close()


def _alone(logger: logging.Logger) -> None:
    """Only the file handler on ``logger``'s parent: pytest (9) adds its capture handlers to every logger that does
    not propagate, at the start of each test's call, and those look at records (so a record is made for them)."""
    assert logger.parent is not None
    logger.parent.handlers = [h for h in logger.parent.handlers if type(h) is LineFileHandler]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fields() -> dict[str, Any]:
    return {"user_id": "u-1:a@b/c+d=e", "attempt": 2, "lateness_s": 0.125, "detail": "é", "none": None,
            "at": dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "big": 2**70, "_private": "left out",
            "request_id": "from-the-fields"}


@pytest.fixture
def records_made() -> Iterator[list[str]]:
    """The messages of the ``LogRecord``s made meanwhile."""
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record.msg)
        return record

    logging.setLogRecordFactory(counting)
    try:
        yield made
    finally:
        logging.setLogRecordFactory(factory)


def test_the_line_is_the_one_logging_writes_field_for_field_and_in_order(
        logger: logging.Logger, tmp_path: Path, records_made: list[str]) -> None:
    _alone(logger)
    with request_context("from-the-context"):
        logger.info("delivery attempt", extra=_fields())
        log_fields(logger, logging.INFO, "delivery attempt", _fields())
    with request_context("only-the-context"):
        logger.warning("refused", extra={"n": 1})
        log_fields(logger, logging.WARNING, "refused", {"n": 1})
    assert records_made == ["delivery attempt", "refused"]  # logging's own calls only: no record for log_fields
    by_logging, fast, by_logging_2, fast_2 = _lines(tmp_path / "notify.jsonl")
    for slow, quick in ((by_logging, fast), (by_logging_2, fast_2)):
        assert dt.datetime.fromisoformat(quick["ts"]) >= dt.datetime.fromisoformat(slow["ts"])
        slow.pop("ts"), quick.pop("ts")
        assert list(quick.items()) == list(slow.items())  # the same keys in the same order, the same values
    assert fast == {"level": "info", "logger": "tests.log_fields.child", "message": "delivery attempt",
                    "request_id": "from-the-fields", "user_id": "u-1:a@b/c+d=e", "attempt": 2, "lateness_s": 0.125,
                    "detail": "é", "none": None, "at": "2031-01-02 03:04:05+00:00", "big": 2**70}
    assert fast_2 == {"level": "warning", "logger": "tests.log_fields.child", "message": "refused",
                      "request_id": "only-the-context", "n": 1}


def test_a_level_the_logger_does_not_take_writes_nothing(logger: logging.Logger, tmp_path: Path) -> None:
    _alone(logger)
    log_fields(logger, logging.DEBUG, "quiet", {"n": 1})
    log_fields(logger, logging.INFO, "heard", {"n": 2})
    assert [line["message"] for line in _lines(tmp_path / "notify.jsonl")] == ["heard"]


def test_a_filter_on_the_way_sees_a_record_and_decides(logger: logging.Logger, tmp_path: Path) -> None:
    seen: list[logging.LogRecord] = []

    def only_even(record: logging.LogRecord) -> bool:
        seen.append(record)
        return bool(getattr(record, "n", 0) % 2 == 0)

    _alone(logger)
    logger.addFilter(only_even)
    for n in (1, 2):
        log_fields(logger, logging.INFO, "filtered", {"n": n})
    assert [r.n for r in seen] == [1, 2]  # type: ignore[attr-defined]
    assert [line["n"] for line in _lines(tmp_path / "notify.jsonl")] == [2]


def test_any_other_handler_gets_the_record_from_logging(caplog: pytest.LogCaptureFixture) -> None:
    """With no file handler of Notify's configured, the line propagates to whatever the process has (pytest's
    capture here): a record, its fields as attributes, the caller's own frame."""
    logger = logging.getLogger("tests.log_fields_unconfigured")
    with caplog.at_level(logging.INFO, logger="tests.log_fields_unconfigured"):
        log_fields(logger, logging.INFO, "to the root", {"n": 3})
    [record] = [r for r in caplog.records if r.name == "tests.log_fields_unconfigured"]
    assert record.getMessage() == "to the root" and record.n == 3  # type: ignore[attr-defined]
    assert record.funcName == "test_any_other_handler_gets_the_record_from_logging"


def test_a_configured_process_writes_the_lines_to_its_file(tmp_path: Path, records_made: list[str]) -> None:
    """Through :func:`configure_logging`, as ``notify worker`` and ``notify serve`` set their loggers up."""
    names = ("notify_core", "lambdas", "notify_cli")
    saved = {n: (logging.getLogger(n).handlers, logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    try:
        configure_logging(path=tmp_path / "delivery.jsonl")  # after pytest added its handlers: only the file
        log_fields(logging.getLogger("notify_core.delivery.worker"), logging.INFO, "delivery attempt", {"n": 1})
        log_fields(logging.getLogger("lambdas.get_recommended_campaigns"), logging.INFO, "served", {"n": 2})
        assert [(line["logger"], line["n"]) for line in _lines(tmp_path / "delivery.jsonl")] == [
            ("notify_core.delivery.worker", 1), ("lambdas.get_recommended_campaigns", 2)]
        assert records_made == []
    finally:
        for n, (handlers, level, propagate) in saved.items():
            for handler in logging.getLogger(n).handlers:
                handler.close()
            logging.getLogger(n).handlers, logging.getLogger(n).level, logging.getLogger(n).propagate = (
                handlers, level, propagate)
