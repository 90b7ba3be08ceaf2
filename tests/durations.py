"""The suite's files, longest first, so two xdist workers end together.

``make test`` hands whole files to two workers (``--dist loadfile``: a file's module fixtures are built
once). xdist queues the files in collection order (by default reordered by their number of tests) and
gives a worker the next one when it has fewer than two left. The long files are long because each starts
servers or a Dagster run, not because they hold many tests, so they came last: on a 2-core box the suite
spent 1,756 s of test time in 1,050 s of wall, one worker running the end-to-end test on real servers
(174 s) after the other had run out of files.

Queued longest first (the classic longest-processing-time rule), the last file to start is a short one,
and the two workers finish within about one short file of each other. Measured on the same 2-core box,
one run after the other: 1,050 s of wall before, 973 s after (two timing-sensitive tests of
``tests/stream/test_groups.py`` failed in it and spent ~57 s; they were fixed). The lengths come from a
measured run, committed in ``tests/durations.json`` (seconds of setup, call and teardown per file); a
file not in it counts as short and keeps its place among the others. ``make test-durations`` measures
them again; measure on a clean checkout, as CI runs: with mypy's cache warm, ``test_static_checks``
takes 2 s instead of 66 and would be queued last.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

TABLE = Path(__file__).with_name("durations.json")


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def load(path: Path = TABLE) -> dict[str, float]:
    """Seconds per test file (its path as pytest names it); empty when the table is missing."""
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {str(name): float(seconds) for name, seconds in table.items()}


def longest_first(items: list[pytest.Item], seconds: dict[str, float]) -> None:
    """Reorder ``items`` in place: files by their recorded seconds, longest first. The sort is stable, so a
    file's tests keep their order and stay together, and files of equal (or unknown) length keep theirs."""
    items.sort(key=lambda item: -seconds.get(file_of(item.nodeid), 0.0))


class Recorder:
    """Sums each file's setup, call and teardown seconds over a run and writes them as the table.

    Registered on the process that sees every report (the xdist controller, or the only process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[file_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self) -> None:
        table = {name: round(total, 1) for name, total in sorted(self.seconds.items(), key=lambda kv: -kv[1])}
        self.path.write_text(json.dumps(table, indent=1) + "\n")
