"""Sittings side by side (``bench/sittings.py``) and the commit a sitting records (``bench/peak.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.peak import code_revision, keep_sitting
from bench.sittings import HEADLINES, cell, table


def _sitting(when: str, rows: list[tuple[str, float, float]], *, code: str | None = None) -> dict[str, Any]:
    limits = [{"path": path, "figure": figure, "limit": limit, "unit": "x", "ratio": figure / limit,
               "target": 1.0, "met": True} for path, figure, limit in rows]
    sitting: dict[str, Any] = {"when": when, "quick": False, "seconds": 1200.0, "steps": [
        {"name": "one", "loadavg_before": [0.5, 0, 0], "loadavg_after": [2.25, 0, 0], "limits": limits[:1]},
        {"name": "two", "loadavg_before": [1.0, 0, 0], "loadavg_after": [1.5, 0, 0], "limits": limits[1:]}]}
    if code:
        sitting["code"] = code
    return sitting


def test_a_renamed_row_lines_up_and_a_missing_one_shows_a_dash() -> None:
    old = _sitting("2026-12-01T00:00:00+00:00", [
        ("recommendations over HTTP, real demo data (closed loop)", 1404.0, 23094.0),
        ("kafka 49k/s offered: persisted / consumer alone", 44565.0, 123062.0)])
    new = _sitting("2026-12-04T16:07:00+00:00", [
        ("recommendations over HTTP, real demo data (closed loop)", 1667.0, 16670.0),
        ("kafka 49k/s offered: persisted within 5 s, per second offered / consumer alone", 40000.0, 100000.0)],
        code="10566da0123456789")
    kafka = next(h for h in HEADLINES if h.label.startswith("kafka"))
    route = next(h for h in HEADLINES if h.show == "limit" and "HTTP" in h.label)
    spread = next(h for h in HEADLINES if h.label.startswith("delivery spread"))
    assert cell(old, kafka) == "44,565 (0.362)"
    assert cell(new, kafka) == "40,000 (0.400)"
    assert cell(new, route) == "16,670"  # the machine's raw speed, not the figure
    assert cell(new, spread) == "—"
    text = table([old, new])
    assert "| sitting | 2026-12-01 00:00 | 2026-12-04 16:07 |" in text
    assert "| code | — | 10566da012 |" in text
    assert "| load (1 min) | 0.5-2.2 | 0.5-2.2 |" in text
    assert "| recommendations, closed loop (req/s) | 1,404 (0.061) | 1,667 (0.100) |" in text


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_a_sitting_names_its_commit_and_says_when_tracked_files_differ(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.json").write_text("{}")  # untracked output of the run itself: not a change to the code
    assert code_revision() == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_revision() == head + "-dirty"
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # a box without git
    assert code_revision() == "unknown"


def test_a_full_sitting_is_kept_in_its_own_folder_with_the_files_of_the_steps_it_ran(tmp_path: Path) -> None:
    for name in ("peak.json", "peak.md", "stream.json", "stream_drain.json", "delivery.json", "other.json"):
        (tmp_path / name).write_text(name)
    sitting = _sitting("2026-12-04T16:07:14+00:00", [("a", 1.0, 1.0), ("b", 1.0, 1.0)])
    sitting["steps"][0]["name"], sitting["steps"][1]["name"] = "stream", "schedule"  # schedule.json: not written
    folder = keep_sitting(sitting, results=tmp_path)
    assert folder == tmp_path / "sitting_2026-12-04T1607"
    assert sorted(p.name for p in folder.iterdir()) == ["peak.json", "peak.md", "stream.json"]
    assert (folder / "stream.json").read_text() == "stream.json"
