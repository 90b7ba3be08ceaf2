"""The suite's files queued longest first (tests/durations.py), a file's tests kept together and in order."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests import durations

ROOT = Path(__file__).resolve().parents[2]


def _items(*nodeids: str) -> list[Any]:
    return [SimpleNamespace(nodeid=n) for n in nodeids]


def test_files_go_longest_first_and_keep_their_tests_in_order() -> None:
    items = _items("tests/a.py::one", "tests/a.py::two", "tests/b.py::one", "tests/c.py::one", "tests/c.py::two",
                   "tests/d.py::one")
    durations.longest_first(items, {"tests/c.py": 90.0, "tests/a.py": 5.0, "tests/x.py": 200.0})
    assert [i.nodeid for i in items] == ["tests/c.py::one", "tests/c.py::two", "tests/a.py::one", "tests/a.py::two",
                                         "tests/b.py::one", "tests/d.py::one"]  # b and d unknown: in their order


def test_the_recorder_sums_each_files_phases_and_writes_the_table_it_is_read_back_as(tmp_path: Path) -> None:
    recorder = durations.Recorder(tmp_path / "durations.json")
    for nodeid, seconds in (("tests/a.py::one", 1.25), ("tests/a.py::one", 2.0), ("tests/b.py::x[1]", 0.5),
                            ("tests/a.py::two", 0.75)):
        recorder.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, duration=seconds))  # type: ignore[arg-type]
    recorder.pytest_sessionfinish()
    assert list(json.loads((tmp_path / "durations.json").read_text()).items()) == [("tests/a.py", 4.0),
                                                                                     ("tests/b.py", 0.5)]
    assert durations.load(tmp_path / "durations.json") == {"tests/a.py": 4.0, "tests/b.py": 0.5}
    assert durations.load(tmp_path / "missing.json") == {}


def test_the_committed_table_names_files_that_exist_and_covers_the_long_ones() -> None:
    table = durations.load()
    assert table, "tests/durations.json is missing: `make test-durations` writes it"
    missing = [name for name in table if not (ROOT / name).is_file()]
    assert not missing, f"renamed or deleted test files still in tests/durations.json: {missing}"
    assert max(table.values()) >= 60  # the end-to-end files are in it, not only the quick ones
