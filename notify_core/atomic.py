"""Atomic file writes: a temporary sibling renamed into place, removed whatever happens.

A crash (kill -9) or a full disk part-way through a write must leave neither a half-written target
nor a temporary file behind. ``atomic_write`` removes its temporary on any exception; a process killed
mid-write cannot clean up, so writers sweep their folder's leftovers (``sweep_temporaries``) before
writing again. Temporaries are dot-files ending in ``.tmp`` so readers listing a folder skip them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temporary_for(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")


def atomic_write(target: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` then rename ``tmp`` onto ``target``; on any failure ``tmp`` is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_for(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sweep_temporaries(folder: Path) -> int:
    """Remove temporaries a killed writer left under ``folder`` (recursively); returns how many.

    Only for folders with one writer at a time (a dataset being ingested, the landing preparation).
    """
    if not folder.exists():
        return 0
    removed = 0
    for path in folder.rglob(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
