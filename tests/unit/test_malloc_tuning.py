"""glibc keeps what a bulk job frees (notify_core.malloc_tuning), measured by the process's own RSS: asked for
directly, and by a plan run of more than one chunk (never by an API-sized plan of one chunk, whose process
may be a long-lived server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the plan probe imports tests.scheduling from here
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

_SETUP = {
    "default": "",
    "keep": "from notify_core.malloc_tuning import keep_freed_memory\n"
            "assert keep_freed_memory() is True  # applied: this suite runs on glibc\n",
    # a tiny real plan run in a temporary Store: 3 users in chunks of 1 (at scale), or in one chunk
    **{name: "import tempfile\nfrom datetime import UTC, datetime\nfrom pathlib import Path\n"
             "from notify_core.scheduling.service import plan_and_store\n"
             "from notify_core.store.sqlite import SqliteStore\n"
             "from tests.scheduling.conftest import campaigns, candidates, users\n"
             "store = SqliteStore(Path(tempfile.mkdtemp()) / 'store.sqlite')\n"
             "now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)\n"
             "plan_and_store(store, users=users([(f'u{i}', 'UTC', 5, None, None) for i in range(3)]),\n"
             "               campaigns=campaigns([('c1', 1, 0, None)]),\n"
             "               candidates=candidates([(f'u{i}', 'c1', 0.9) for i in range(3)]),\n"
             "               plan_day=now.date().replace(day=24), now=now, pipeline=False, writer_process=False,\n"
             f"               chunk_users={chunk})\n"
             "store.close()\n"
     for name, chunk in (("plan_in_chunks", 1), ("plan_in_one_chunk", 3))},
}

_PROBE = """
import os
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
before = rss()
blocks = [b"x" * 200_000 for _ in range(1_000)]  # ~200 MB touched, each block past glibc's default mmap size
peak = rss()
del blocks
print(peak - before, rss() - before)
"""


def _grown_and_kept(setup: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _SETUP[setup] + _PROBE], check=True, capture_output=True, text=True,
                         cwd=ROOT)
    grown, kept = (int(v) for v in out.stdout.split()[-2:])
    return grown, kept


@pytest.mark.parametrize(("setup", "keeps"), [("default", False), ("keep", True), ("plan_in_chunks", True),
                                              ("plan_in_one_chunk", False)])
def test_freed_memory_stays_mapped_for_reuse_only_when_asked(setup: str, keeps: bool) -> None:
    grown, kept = _grown_and_kept(setup)
    assert grown > 150e6
    if keeps:  # kept: the next chunk reuses it without the kernel faulting it in again
        assert kept > 150e6
    else:  # glibc's default: the blocks' memory went back to the kernel
        assert kept < 50e6
