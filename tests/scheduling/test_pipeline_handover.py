"""The pipelined plan's GIL hand-over (issue 21): a short switch interval only while the writer thread
runs beside the planner, the interpreter's own value back afterwards (also when a chunk fails), and the
per-thread CPU that shows how far the two threads overlap."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.scheduling.service import PIPELINE_SWITCH_INTERVAL_S, gil_handover, plan_and_store
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_NOW
from tests.scheduling.test_bulk_write import CAMPS, DAY, _candidates, _users


@pytest.fixture(autouse=True)
def _interval() -> object:
    """Every test starts from, and must leave, the interpreter's interval."""
    before = sys.getswitchinterval()
    yield
    assert sys.getswitchinterval() == before
    sys.setswitchinterval(before)


def test_gil_handover_sets_the_interval_for_the_block_and_restores_it() -> None:
    before = sys.getswitchinterval()
    with gil_handover(0.0002):
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), gil_handover(0.0003):
        raise RuntimeError("a failing chunk")
    assert sys.getswitchinterval() == before
    with gil_handover(None):  # None: the interpreter's value, untouched
        assert sys.getswitchinterval() == before


def test_a_pipelined_run_uses_the_short_interval_then_restores_it(tmp_path: Path) -> None:
    us, cands = _users(120), _candidates(120)
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(STORE_NOW))
    seen: list[float] = []

    def source(ids: list[str]) -> pl.DataFrame:
        seen.append(sys.getswitchinterval())
        return cands.filter(pl.col("user_id").is_in(ids))

    before = sys.getswitchinterval()
    run = plan_and_store(store, users=us, campaigns=CAMPS, candidates=source, plan_day=DAY, chunk_users=40,
                         writer_process=False)  # the writer thread: the one that shares the GIL
    assert run.writer == "thread"
    assert seen == [pytest.approx(PIPELINE_SWITCH_INTERVAL_S)] * 3
    assert sys.getswitchinterval() == before
    assert set(run.cpu_seconds) == {"main", "write"}
    assert run.cpu_seconds["write"] > 0 and run.cpu_seconds["main"] > 0
    assert run.writes.inserted == run.stats.notifications > 0
    # sequential (one thread): nothing to hand over, the interval is left alone
    seen.clear()
    plan_and_store(SqliteStore(tmp_path / "seq.sqlite", clock=ManualClock(STORE_NOW)), users=us, campaigns=CAMPS,
                   candidates=source, plan_day=DAY, chunk_users=40, pipeline=False)
    assert seen == [before] * 3
    # the writer process has its own GIL: nothing to hand over in this one, the interval is left alone
    seen.clear()
    run = plan_and_store(SqliteStore(tmp_path / "proc.sqlite", clock=ManualClock(STORE_NOW)), users=us,
                         campaigns=CAMPS, candidates=source, plan_day=DAY, chunk_users=40)
    assert run.writer == "process" and seen == [before] * 3
    assert run.cpu_seconds["write"] > 0 and run.writer_peak_rss_mb > 0
    store.close()


def test_a_failing_chunk_restores_the_interval_and_keeps_written_chunks_whole(tmp_path: Path) -> None:
    us, cands = _users(120), _candidates(120)
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(STORE_NOW))
    calls = 0

    def source(ids: list[str]) -> pl.DataFrame:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ValueError("the recommender failed on the third chunk")
        return cands.filter(pl.col("user_id").is_in(ids))

    before = sys.getswitchinterval()
    with pytest.raises(ValueError, match="third chunk"):
        plan_and_store(store, users=us, campaigns=CAMPS, candidates=source, plan_day=DAY, chunk_users=40)
    assert sys.getswitchinterval() == before
    # the chunks planned before the failure were written whole: every plan item has its schedule item
    plans = {(i["user_id"], i["notification_id"]) for i in store.table("plans").scan()}
    scheds = {(i["user_id"], i["notification_id"]) for i in store.table("schedules").scan()}
    assert plans and plans == scheds
    assert {u for u, _ in plans} <= {f"u{i:04d}" for i in range(80)}
    store.close()
