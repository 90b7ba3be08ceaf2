"""Private files and folders: everything Notify writes under its data directory is 0600 / 0700.

The data directory holds the Store, the lake, landing and quarantine files, artefacts, the outbox, logs
and the secret files; personal data and keys live there, so nobody but the service's own user may read
them. Two mechanisms, both needed:

* :func:`use_private_umask` (called once by each entry point: CLI, gateway / Lambda cold start, Dagster
  definitions) makes every file the process creates 0600 and every folder 0700, including the ones
  third-party code creates (SQLite's -wal/-shm, pyarrow's Parquet files, Dagster's storage);
* :func:`harden_tree` tightens what already exists (a data directory made by an older version).

``NOTIFY_ALLOW_SHARED_FILES`` is not a thing: there is no flag to weaken this; a deployment that needs a
group to read the lake sets the group itself, visibly, outside Notify.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from notify_core.atomic import atomic_write

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def use_private_umask() -> int:
    """Set the process umask to 077 (files 0600, folders 0700); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path | str) -> Path:
    """``mkdir -p`` with 0700 on the folder itself (whatever the umask)."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(p, DIR_MODE)
    return p


def require_private(path: Path | str, *, what: str) -> None:
    """ConfigurationError when others may read ``path`` (``what``: the kind of secret, for the message): a
    secret file that a copy or a restore left group- or world-readable is refused, not used."""
    from notify_core.errors import ConfigurationError

    if os.stat(path).st_mode & 0o077:
        raise ConfigurationError(f"{what} {path} is readable by others: chmod 600 it")


def write_private(path: Path | str, data: bytes) -> Path:
    """Write ``data`` atomically to a 0600 file in a 0700 folder (:func:`notify_core.atomic.atomic_write`: a
    temporary sibling, written whole, fsynced, renamed). The one owner of private file writes: keys, key
    documents, backup blobs and what a restore puts back. On a full disk the temporary is removed: before, a
    short write went unnoticed and a failed one left a ``.tmp`` copy of a secret beside the key file.
    ``BackendError`` when the system refuses (a full disk, a read-only folder): the CLI says it in a line
    (exit 75), where ``notify secrets rotate`` on a full disk ended in a traceback."""
    from notify_core.errors import BackendError

    p = Path(path)
    try:
        _write_private(p, data)
    except OSError as exc:
        raise BackendError(f"cannot write {p}: {exc.strerror or exc}") from exc
    return p


def _write_private(p: Path, data: bytes) -> None:
    private_dir(p.parent)

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, FILE_MODE)  # O_CREAT's mode is masked by the umask: exactly 0600 whatever it is

    atomic_write(p, write)


def harden_tree(root: Path | str) -> int:
    """chmod every folder under ``root`` to 0700 and every file to 0600; returns how many changed."""
    changed = 0
    base = Path(root)
    if not base.exists():
        return 0
    for current, dirs, files in os.walk(base):
        entries = [(Path(current), DIR_MODE)] + [(Path(current) / f, FILE_MODE) for f in files]
        for path, mode in entries:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(path, mode)
                changed += 1
        dirs[:] = [d for d in dirs if not (Path(current) / d).is_symlink()]
    return changed


def loose_entries(root: Path | str) -> list[str]:
    """Paths under ``root`` readable or writable by group or others (what a check should report)."""
    found: list[str] = []
    for current, dirs, files in os.walk(Path(root)):
        for name in [*dirs, *files, ""]:
            path = Path(current) / name if name else Path(current)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                found.append(f"{path} {oct(stat.S_IMODE(st.st_mode))}")
    return sorted(set(found))
