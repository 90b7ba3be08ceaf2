"""A real full disk for fault tests: a small tmpfs mounted over a test folder (needs root, as CI has).

Writes past its size fail with ENOSPC in the kernel, exactly as on a full volume; ``resize`` frees space
the way an operator would (remount larger), without stopping whoever has files open there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(path: Path, size_kib: int) -> Iterator[Callable[[int], None]]:
    """Mount a ``size_kib`` tmpfs (mode 0700) at ``path``; yields ``resize(kib)``; unmounts at the end.
    Skips the test where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")

    def resize(kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(path)], check=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, *, leave_kib: int) -> Path:
    """Fill the file system of ``path`` but ``leave_kib``; returns the filler file (delete it to free)."""
    stats = os.statvfs(path)
    free_kib = stats.f_bavail * stats.f_frsize // 1024
    filler = path / "filler"
    chunk = b"\0" * (1 << 20)
    left = max(free_kib - leave_kib, 0) * 1024
    with filler.open("wb", buffering=0) as fh:
        while left > 0:
            try:
                left -= fh.write(chunk[: min(left, len(chunk))])
            except OSError as exc:  # others filled the rest meanwhile: full is what was asked for
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler
