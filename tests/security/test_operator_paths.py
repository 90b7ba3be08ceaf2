"""The operator's paths: what the ``notify`` commands say when a setting is wrong, and what they warn
about when a flag weakens security. Each command runs in a real process, as an operator starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _notify(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("NOTIFY_")}
    return subprocess.run([sys.executable, "-m", "notify_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **env})


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
