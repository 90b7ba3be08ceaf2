"""notify_core.handover: the private folder in shared memory that worker processes take and give bytes through."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from notify_core import handover
from notify_core.handover import HandoverDir


def test_files_are_new_private_and_taken_once(tmp_path: Path) -> None:
    folder = HandoverDir(prefix="notify-test-handover-")
    try:
        assert folder.path.name.startswith(f"notify-test-handover-{os.getpid()}-")
        assert folder.path.stat().st_mode & 0o777 == 0o700
        path = folder.path / "one.call"
        handover.write_private(path, b"events")
        assert path.stat().st_mode & 0o777 == 0o600
        with pytest.raises(FileExistsError):  # never written over: each hand-over has its own name
            handover.write_private(path, b"other")
        assert handover.take(path) == b"events"
        assert not path.exists()
        with pytest.raises(FileNotFoundError):
            handover.take(path)
        for name in ("a", "b"):
            handover.write_private(folder.path / name, b"left by a dead worker")
        assert folder.clear() == 2 and not list(folder.path.iterdir())
    finally:
        folder.close()
    assert not folder.path.exists()


def test_a_dead_owners_folder_is_swept_and_a_live_ones_and_other_names_are_not() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    left = base / f"notify-test-sweep-{dead.pid}-x"
    left.mkdir(mode=0o700)
    (left / "chunk").write_bytes(b"x")
    live = base / f"notify-test-sweep-{os.getpid()}-y"
    live.mkdir(mode=0o700)
    odd = base / "notify-test-sweep-notapid"
    odd.mkdir(mode=0o700)
    block = base / f"notify-test-sweep-{dead.pid}-old-block"  # a file: the decoder's blocks before this module
    block.write_bytes(b"y")
    try:
        assert handover.sweep_orphans("notify-test-sweep-") == 2
        assert not left.exists() and not block.exists() and live.exists() and odd.exists()
    finally:
        for folder in (live, odd):
            folder.rmdir()
