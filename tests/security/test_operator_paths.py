"""The operator's paths: what the ``notify`` commands say when a setting is wrong, and what they warn
about when a flag weakens security. Each command runs in a real process, as an operator starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from notify_core.security.files import loose_entries

ROOT = Path(__file__).resolve().parents[2]


def _notify(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """``notify *args`` in a new process started from a shell whose umask is ``umask`` (022: the usual one)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}
    return subprocess.run([sys.executable, "-m", "notify_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
                          umask=umask)


@pytest.mark.parametrize("command", [["serve"], ["consume", "--idle-exit", "0.1"], ["keys", "list"],
                                     ["audit", "verify"], ["worker"]])
def test_a_bad_setting_is_one_clear_line_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    """A malformed NOTIFY_* value (here a non-integer NOTIFY_KAFKA_LINGER_MS) made `notify serve`,
    `consume`, `keys list`, `audit verify` and `worker` die with a 60-line traceback through pydantic's
    internals (only `notify run`, `backup` and a few others caught it): the setting at fault was buried,
    and the exit code (1) read as a crash rather than a configuration error (2, as `notify run` says it)."""
    done = _notify(*command, "--data-dir", str(tmp_path / "data"), env={"NOTIFY_KAFKA_LINGER_MS": "abc"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "───" not in done.stderr
    assert "error: invalid Notify settings" in done.stderr and "kafka_linger_ms" in done.stderr


def test_backup_and_restore_keep_the_data_directory_and_the_target_private(tmp_path: Path) -> None:
    """`notify backup` and `notify restore` were the commands that never set the private umask: from a
    shell with umask 022, a backup made the data directory's stream/ folder (and Litestream's folders in
    it) and the target's files/ and stream/ folders 0755, so every local user could list a folder of
    personal data and of its backup."""
    data, target = tmp_path / "data", tmp_path / "target"
    assert _notify("keys", "list", "--data-dir", str(data)).returncode == 0  # a Store, as a first serve makes
    done = _notify("backup", "--once", "--to", str(target), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    restored = tmp_path / "restored"
    done = _notify("restore", "--from", str(target), "--data-dir", str(restored))
    assert done.returncode == 0, done.stderr
    assert loose_entries(data) == [] and loose_entries(target) == [] and loose_entries(restored) == []
