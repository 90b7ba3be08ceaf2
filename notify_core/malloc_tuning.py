"""glibc's allocator told to keep the memory a bulk job frees, for its next chunk to reuse.

Why: by default glibc hands freed memory back to the kernel (it trims the heap's top past 128 KiB and
``munmap``s every block it ``mmap``ed, which is any block from 128 KiB to 32 MiB depending on history, and
every larger one), so a process that fills and empties the same gigabyte every chunk makes the kernel
fault in and zero that gigabyte again each time. The daily plan's two processes do exactly that:

* the writer: SQLite's page cache grows to a chunk's whole transaction (``tune_for_bulk_writes``: up to
  1 GiB of dirty pages) and shrinks back to 256 MiB at its commit; a later chunk spent ~18 % of its samples
  in the kernel's ``clear_page_erms`` under ``_int_malloc``'s page faults;
* the planner: each chunk's numpy arrays (vectors, candidate matrices) are large, so each was a fresh
  mapping; ``clear_page_erms`` was its hottest symbol (~12 % of its samples, above the ANN's ``sgemm``).

On this box (a virtual machine whose freed memory goes back to the host) a first touch costs more still.

What it costs: the process keeps its high-water mark of heap until it exits (the planner's peak +0.4 GB at
2M users, +0.6 GB at 10M), so it is for a process that does one bounded job and ends (a plan run's), not
for a server.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>: bytes of free heap top glibc keeps before giving it back
M_MMAP_MAX = -4  # <malloc.h>: how many blocks may have a mapping of their own (0: none, all from the heap)
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes a C int: ~2 GiB, more than a chunk frees


def keep_freed_memory() -> bool:
    """Have glibc serve every block from its heaps and keep freed memory there for reuse instead of returning
    it to the kernel; returns whether it applied (False off Linux or on a C library without glibc's
    ``mallopt``, where nothing changes). Process-wide and not undone: see the module's docstring."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(libc.mallopt(M_MMAP_MAX, 0))
    return False
