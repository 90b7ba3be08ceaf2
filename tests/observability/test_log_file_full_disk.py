"""The JSON log file on a full disk (a real tmpfs, tests/small_disk.py): lines the file cannot take go to stderr
after one line saying so, where each was "--- Logging error ---" and ~70 lines of traceback, the line itself
lost; once the disk has room the file says how many went to stderr; no torn line is left in the file."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from notify_core.observability import JsonFormatter, LineFileHandler, log_fields
from tests.small_disk import fill, small_disk


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # each a whole JSON object


def _by_logging(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    logger.log(level, message, extra=fields)


@pytest.mark.parametrize("log", [_by_logging, log_fields], ids=["logging", "log_fields"])
def test_lines_the_full_disk_refuses_go_to_stderr_and_the_file_says_so_once_it_has_room(
        log: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "logs"
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    with small_disk(folder, 1024):
        path = folder / "notify.jsonl"
        handler = LineFileHandler(path)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("tests.full_disk_log")
        logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
        try:
            log(logger, logging.INFO, "before", {"n": 0})
            assert path.stat().st_size % 4096  # the file's last page has room: a long line is written in part
            filler = fill(folder, leave_kib=0)
            for n in (1, 2, 3):  # each longer than that room
                log(logger, logging.WARNING, "refused", {"n": n, "padding": "x" * 9000})
            assert [line["message"] for line in _lines(path)] == ["before"]  # no torn line left behind
            err = [json.loads(line) for line in stderr.getvalue().splitlines()]
            assert [(e["message"], e.get("n")) for e in err] == [
                ("the log file cannot be written; its lines go to stderr until it can", None),
                ("refused", 1), ("refused", 2), ("refused", 3)]
            assert "No space left on device" in str(err[0]["error"]) and err[0]["path"] == str(path)
            assert "Logging error" not in stderr.getvalue()

            filler.unlink()
            log(logger, logging.INFO, "after", {"n": 4})
            lines = _lines(path)
            assert [line["message"] for line in lines] == [
                "before", "log lines went to stderr: this file could not be written", "after"]
            assert lines[1]["lines"] == 3 and lines[1]["level"] == "warning"
            assert len(stderr.getvalue().splitlines()) == 4  # nothing more went to stderr
        finally:
            logger.handlers = []
            handler.close()
