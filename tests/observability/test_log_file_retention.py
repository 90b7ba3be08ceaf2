"""The CLI's JSON log files keep the logs' retention (30 days), by the records' own times.

``notify worker`` writes one line per delivery attempt to ``<data_dir>/logs/delivery.jsonl``; the other
commands share ``notify.jsonl``. ``LOG_RETENTION_DAYS`` (30) is the logs' documented retention, applied to the
Lambda log groups and the deliveries rows, but the files kept every line for as long as the processes ran.
The records carry their own times here: no test reads the calendar.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from notify_core.observability import JsonFormatter, LineFileHandler
from notify_core.slo import LOG_RETENTION_DAYS

T0 = datetime(2031, 1, 1, 0, 30, tzinfo=UTC)
DAYS = 60


def _record(at: datetime, message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "notify_core.delivery", "levelno": logging.INFO, "levelname": "INFO",
                                  "msg": message, "created": at.timestamp()})


def _days_on_disk(folder: Path) -> Counter[str]:
    """Lines per UTC day, over every log file in the folder (the current one and those moved aside)."""
    days: Counter[str] = Counter()
    for path in folder.iterdir():
        for line in path.read_text().splitlines():
            days[json.loads(line)["ts"][:10]] += 1
    return days


def test_two_processes_logging_for_two_months_keep_thirty_days_and_lose_no_line_of_them(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "notify.jsonl"
    path.parent.mkdir()
    handlers = [LineFileHandler(path), LineFileHandler(path)]  # `notify serve` and `notify consume`
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
    for day in range(DAYS):
        for hour in range(0, 24, 6):
            for n, handler in enumerate(handlers):
                handler.emit(_record(T0 + timedelta(days=day, hours=hour), f"process {n} day {day}"))
    for handler in handlers:
        handler.close()
    last = (T0 + timedelta(days=DAYS - 1)).date()
    kept = _days_on_disk(path.parent)
    expected = {(last - timedelta(days=d)).isoformat(): 8 for d in range(LOG_RETENTION_DAYS + 1)}
    assert kept == expected  # 30 days back and today, every line of them (4 a day from each process)
    assert len(list(path.parent.iterdir())) == LOG_RETENTION_DAYS + 1
    assert {json.loads(line)["ts"][:10] for line in path.read_text().splitlines()} == {last.isoformat()}
    assert (path.parent / f"notify.{(last - timedelta(days=1)).isoformat()}.jsonl").exists()


def test_a_line_from_an_earlier_day_moves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "delivery.jsonl"
    handler = LineFileHandler(path)
    handler.setFormatter(JsonFormatter())
    handler.emit(_record(T0 + timedelta(days=1), "after midnight"))
    handler.emit(_record(T0 + timedelta(days=1) - timedelta(hours=1), "a thread's line from before midnight"))
    handler.close()
    assert [p.name for p in tmp_path.iterdir()] == ["delivery.jsonl"]
    assert len(path.read_text().splitlines()) == 2
