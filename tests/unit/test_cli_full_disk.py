"""One-shot commands on a full disk (a real tmpfs, tests/small_disk.py): one ``error:`` line and exit 75
(``notify_cli.STOPPED_UNFINISHED``: the same command works once there is room), never a traceback, and no
temporary copy of a secret left behind. Before, `notify users delete` printed a rich traceback of the SQLite
error (exit 1), `notify secrets rotate` one of the ``OSError`` (exit 1), and `notify backup` exited 2, the code of a
refusal, which the systemd unit never restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from notify_cli import STOPPED_UNFINISHED
from tests.small_disk import fill, small_disk

ROOT = Path(__file__).resolve().parents[2]


def _notify(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notify_cli.main", *args, "--data-dir", str(data)], cwd=ROOT,
                          env={**os.environ, "NOTIFY_ENV": "local"}, capture_output=True, text=True, timeout=120)


def test_commands_on_a_full_disk_say_so_in_one_line_and_exit_75(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with small_disk(data, 8192):
        made = _notify(data, "keys", "create", "--name", "first", "--scope", "events:write")
        assert made.returncode == 0, made.stderr  # the Store and the keys made while there is room
        secrets_before = sorted(p.name for p in (data / "secrets").iterdir())
        filler = fill(data, leave_kib=0)
        # `notify backup` exited 2 on a backend error, which the systemd unit takes for a refusal: never restarted
        for args in (["users", "delete", "12347"], ["secrets", "rotate"], ["users", "sweep-erasures"],
                     ["backup", "--once", "--to", str(tmp_path / "backup")]):
            done = _notify(data, *args)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == STOPPED_UNFINISHED, (args, done.returncode, done.stderr[-2000:])
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr[-2000:])
            assert "full" in lines[0] or "No space left" in lines[0], (args, lines)
        assert sorted(p.name for p in (data / "secrets").iterdir()) == secrets_before  # no .tmp/.new left
        filler.unlink()
        again = _notify(data, "users", "delete", "12347")
        assert again.returncode == 0, again.stderr[-2000:]  # the same command, once there is room
