"""Bytes handed between a process and its worker process, through a private folder in shared memory.

Two of Notify's worker processes take their input and give their output this way: the plan writer (a
chunk's plan items as an Arrow IPC file) and the stream's decoding process (a batch's records in, its
encoded rows out). Only the file names travel through the pool's pipes: a pipe message over 16 KB is two
writes, and a worker killed between them left the pool's reader waiting for the rest forever.

Why files in ``/dev/shm`` and not :mod:`multiprocessing.shared_memory`: on Linux both are the same tmpfs
pages, but a ``SharedMemory`` block registers with multiprocessing's resource tracker (a third process,
a message over a pipe, on create and in Python 3.11 on every attach too) and is mapped and unmapped each
time. A decoding call with 300 KB each way (a batch of ~1,000 events) cost 1,433-1,662 us of CPU across
the three processes that way, against 905-1,153 us as files (``bench/results/session34/handover_cost.py``).
What the tracker did (remove what a killed process left behind) is done here by the folder's name: it
carries its owner's pid, and the next :class:`HandoverDir` of that kind removes the folders whose owner
is gone.

What crosses is personal data (events, plans): the folder is 0700 and every file 0600. Where there is no
``/dev/shm`` (macOS) the folder is in the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from notify_core.security.files import FILE_MODE

_SHM = Path("/dev/shm")


def _base() -> Path | None:
    """``/dev/shm`` where it can be written, else None (the temporary directory)."""
    return _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None


def sweep_orphans(prefix: str) -> int:
    """Remove the folders of ``prefix`` whose owner process is gone (``kill -9`` skips :meth:`HandoverDir.close`,
    and a file in ``/dev/shm`` holds memory until a reboot); how many. Another user's folders are left alone."""
    removed = 0
    for base in {_SHM, Path(tempfile.gettempdir())}:
        if not base.is_dir():
            continue
        for folder in base.glob(f"{prefix}*"):
            try:
                pid = int(folder.name[len(prefix):].split("-", 1)[0])
                if folder.stat().st_uid != os.getuid():
                    continue
                os.kill(pid, 0)  # still running: its folder
            except ProcessLookupError:
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
                else:  # a file: a SharedMemory block of the decoder before this module, named the same way
                    folder.unlink(missing_ok=True)
                removed += 1
            except (ValueError, OSError):
                continue
    return removed


def create_private(path: Path) -> BinaryIO:
    """A new file (never an existing one) that only this user can read, open for writing."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb")


def write_private(path: Path, data: bytes) -> None:
    with create_private(path) as fh:
        fh.write(data)


def read(path: Path) -> bytes:
    with open(path, "rb", buffering=0) as fh:
        return fh.read()


def take(path: Path) -> bytes:
    """Read a file and remove it (the reader owns what was handed to it), even when the read fails."""
    try:
        return read(path)
    finally:
        path.unlink(missing_ok=True)


class HandoverDir:
    """This process's folder for one worker's hand-overs: ``<prefix><pid>-<random>``, 0700.

    Creating one first sweeps the folders of ``prefix`` that killed processes left.
    """

    def __init__(self, *, prefix: str) -> None:
        sweep_orphans(prefix)
        self.path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=_base()))  # mkdtemp: 0700

    def clear(self) -> int:
        """Remove the files left in the folder (a worker that died mid-call); how many."""
        removed = 0
        for path in self.path.iterdir() if self.path.is_dir() else ():
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
