"""The plan writer process (issue 21, scheduling): chunks written by a process with its own GIL leave the
Store byte for byte as the writer thread and one chunk do; its errors and its death surface in the run
(no silent drop, no hang); a kill -9 of the writer or of the run leaves whole chunks, no orphan writing
on, and a re-run ends as a clean run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.errors import BackendError
from notify_core.scheduling.service import plan_and_store
from notify_core.scheduling.writer import PlanWriterLost, opener_for
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_NOW
from tests.scheduling.test_bulk_write import CAMPS, DAY, _candidates, _state, _users


def _store(path: Path) -> SqliteStore:
    return SqliteStore(path, clock=ManualClock(STORE_NOW))


def _whole_chunks(store: SqliteStore) -> set[tuple[str, str]]:
    """Every schedule item has its plan item (plans are written first); returns the plan keys."""
    plans = {(i["user_id"], i["notification_id"]) for i in store.table(tables.PLANS).scan()}
    sched = {(i["user_id"], i["notification_id"]) for i in store.table(tables.SCHEDULES).scan()}
    assert sched <= plans
    return plans


def test_process_thread_and_one_chunk_leave_the_same_store(tmp_path: Path) -> None:
    us, cands = _users(200), _candidates(200)
    runs = {}
    for name, kwargs in {"one": {"chunk_users": 500}, "thread": {"chunk_users": 50, "writer_process": False},
                         "process": {"chunk_users": 50}}.items():
        store = _store(tmp_path / f"{name}.sqlite")
        run = plan_and_store(store, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, **kwargs)
        runs[name] = (run, _state(store))
        store.close()
    assert runs["process"][0].writer == "process" and runs["thread"][0].writer == "thread"
    assert runs["one"][0].writer == "inline"
    assert runs["process"][0].writes == runs["thread"][0].writes == runs["one"][0].writes
    assert runs["process"][1] == runs["thread"][1]  # keys, TTL, every attribute, campaign counters
    for name in (tables.PLANS, tables.SCHEDULES):  # (the counters' version counts chunks)
        assert runs["process"][1][name] == runs["one"][1][name]
    # a re-plan of the same day through the process compares the stored items and writes nothing
    again_store = _store(tmp_path / "process.sqlite")
    again = plan_and_store(again_store, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=50)
    assert again.writer == "process" and again.writes.written == 0
    assert again.writes.unchanged == runs["one"][0].writes.inserted
    again_store.close()


def test_opener_for_reopens_sqlite_and_sealed_sqlite_only(tmp_path: Path) -> None:
    from notify_core.security.crypto import build_sealer
    from notify_core.store.sealed import SealedStore

    store = _store(tmp_path / "s.sqlite")
    opener, clock = opener_for(store) or (None, None)
    assert opener is not None and clock is store.clock
    other = opener(clock=ManualClock(STORE_NOW))
    assert isinstance(other, SqliteStore) and other.path == store.path
    sealed = SealedStore(store, build_sealer(tmp_path / "secrets"))
    assert opener_for(sealed) is not None  # the plan tables are not sealed: the adapter is opened as is

    class Double:  # a Store without a reopener (DynamoDB, a test double): the writer thread
        def table(self, name: str) -> object:
            raise AssertionError

    assert opener_for(Double()) is None  # type: ignore[arg-type]
    other.close()
    store.close()


def test_an_error_in_the_writer_process_fails_the_run_and_keeps_chunks_whole(tmp_path: Path) -> None:
    """A write the process cannot make (here a trigger refusing one user's schedule rows, as a full disk
    would) is raised by the run, not dropped; after the cause is gone a re-run ends as a clean run."""
    us, cands = _users(200), _candidates(200)
    store = _store(tmp_path / "s.sqlite")
    store.table(tables.SCHEDULES)
    store.connection().execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON schedules WHEN NEW.sk LIKE 'u0120#%' "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    with pytest.raises(BackendError, match="disk says no"):
        plan_and_store(store, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=50)
    assert multiprocessing.active_children() == []  # the process was shut down with the run
    plans = _whole_chunks(store)
    assert plans and "u0120" not in {i["user_id"] for i in store.table(tables.SCHEDULES).scan()}
    store.connection().execute("DROP TRIGGER refuse")
    rerun = plan_and_store(store, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=50)
    clean = _store(tmp_path / "clean.sqlite")
    plan_and_store(clean, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=50)
    state, want = _state(store), _state(clean)
    assert state[tables.PLANS] == want[tables.PLANS] and state[tables.SCHEDULES] == want[tables.SCHEDULES]
    assert rerun.writes.repaired > 0  # the refused chunk's plan items got their schedule items back
    store.close()
    clean.close()


def test_kill_9_of_the_writer_process_fails_the_run_without_hanging(tmp_path: Path) -> None:
    """The writer dies mid-run (kill -9 while chunks are in flight): the run raises PlanWriterLost
    instead of waiting forever, every stored chunk is whole, and a re-run ends as a clean run."""
    us, cands = _users(400), _candidates(400)
    store = _store(tmp_path / "s.sqlite")
    asked = 0
    killed: list[int] = []

    def source(ids: list[str]) -> pl.DataFrame:
        nonlocal asked
        asked += 1
        if asked == 4:  # chunk 3 is being written (or about to be) by the process
            for child in multiprocessing.active_children():
                os.kill(child.pid or 0, signal.SIGKILL)
                killed.append(child.pid or 0)
        return cands.filter(pl.col("user_id").is_in(ids))

    started = time.monotonic()
    with pytest.raises(PlanWriterLost):
        plan_and_store(store, users=us, campaigns=CAMPS, candidates=source, plan_day=DAY, chunk_users=40)
    assert killed and time.monotonic() - started < 120
    assert _handover_folders(os.getpid()) == []  # the chunk it never read is not left in shared memory
    plans = _whole_chunks(store)
    assert plans
    rerun = plan_and_store(store, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=40)
    clean = _store(tmp_path / "clean.sqlite")
    first = plan_and_store(clean, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=40)
    assert rerun.writes.inserted == first.writes.inserted - len(plans)  # nothing twice
    state, want = _state(store), _state(clean)
    assert state[tables.PLANS] == want[tables.PLANS] and state[tables.SCHEDULES] == want[tables.SCHEDULES]
    store.close()
    clean.close()


_RUN = textwrap.dedent("""
    import multiprocessing, sys, time
    from notify_core.clock import ManualClock
    from notify_core.scheduling.service import plan_and_store
    from notify_core.store.sqlite import SqliteStore
    from tests.scheduling import test_bulk_write as t
    store = SqliteStore(sys.argv[1], clock=ManualClock(t.STORE_NOW))
    def slow(done, total):
        print(done, *[c.pid for c in multiprocessing.active_children()], flush=True)
        time.sleep(0.2)
    plan_and_store(store, users=t._users(400), campaigns=t.CAMPS, candidates=t._candidates(400), plan_day=t.DAY,
                   chunk_users=40, progress=slow)
    print("done", flush=True)
""")


def _handover_folders(pid: int) -> list[Path]:
    import tempfile

    return [f for base in (Path("/dev/shm"), Path(tempfile.gettempdir()))
            for f in base.glob(f"notify-plan-writer-{pid}-*")]


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":  # a zombie no longer writes
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_run_takes_the_writer_process_with_it(tmp_path: Path) -> None:
    """No orphan keeps writing beside the re-run: the writer dies with the run; the re-run is clean."""
    path = tmp_path / "killed.sqlite"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _RUN, str(path)], cwd=root, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                 filter(None, [str(root), os.environ.get("PYTHONPATH")]))})
    try:
        assert child.stdout is not None
        for _ in range(3):
            fields = child.stdout.readline().split()
            assert fields and fields[0].isdigit(), fields
        writers = [int(p) for p in fields[1:]]
        assert writers  # the run's writer process
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert all(_gone(pid, 10) for pid in writers)
    store = _store(path)
    plans = _whole_chunks(store)
    assert _handover_folders(child.pid)  # kill -9 skipped its clean-up
    us, cands = _users(400), _candidates(400)
    rerun = plan_and_store(store, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=40)
    assert _handover_folders(child.pid) == []  # the killed run's hand-over folder was swept by the next run
    clean = _store(tmp_path / "clean.sqlite")
    first = plan_and_store(clean, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=40)
    assert rerun.writes.inserted == first.writes.inserted - len(plans) > 0
    state, want = _state(store), _state(clean)
    assert state[tables.PLANS] == want[tables.PLANS] and state[tables.SCHEDULES] == want[tables.SCHEDULES]
    store.close()
    clean.close()


def test_a_main_that_spawn_cannot_import_keeps_the_writer_thread(tmp_path: Path) -> None:
    """``python -`` (no main module file for ``spawn`` to run again): the run writes from a thread
    instead of failing, and the Store is the same."""
    root = Path(__file__).resolve().parents[2]
    script = textwrap.dedent(f"""
        from notify_core.clock import ManualClock
        from notify_core.scheduling.service import plan_and_store
        from notify_core.store.sqlite import SqliteStore
        from tests.scheduling import test_bulk_write as t
        store = SqliteStore({str(tmp_path / "stdin.sqlite")!r}, clock=ManualClock(t.STORE_NOW))
        run = plan_and_store(store, users=t._users(120), campaigns=t.CAMPS, candidates=t._candidates(120),
                             plan_day=t.DAY, chunk_users=40)
        print(run.writer, run.writes.inserted)
    """)
    done = subprocess.run([sys.executable, "-"], input=script, cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(root), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 0, done.stderr
    writer, inserted = done.stdout.split()
    clean = _store(tmp_path / "clean.sqlite")
    want = plan_and_store(clean, users=_users(120), campaigns=CAMPS, candidates=_candidates(120), plan_day=DAY,
                          chunk_users=40)
    assert writer == "thread" and int(inserted) == want.writes.inserted
    assert _state(_store(tmp_path / "stdin.sqlite"))[tables.SCHEDULES] == _state(clean)[tables.SCHEDULES]
    clean.close()
