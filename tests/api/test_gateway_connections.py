"""``notify serve`` keeps its SQLite descriptors bounded however often its worker threads come and go.

The gateway runs handlers on anyio's worker threads; a worker idle for 10 s ends at the next request, and
the next burst makes new ones. Each thread opens its own connection to the Store and to the stream log
(:class:`notify_core.per_thread.PerThread`), and the pool used to keep every ended thread's connection open:
burst after idle burst, ``notify serve`` gained ~2.4 SQLite descriptors per ended worker thread, never
released, until the process ran out and every request failed. A real server process, real HTTP clients, its
descriptors and threads read from ``/proc``.

What is compared: the descriptors once each burst's workers have ended (the server back to its idle
threads) against a bound set by the most workers any burst woke, not against each other. SQLite itself
keeps some descriptors of closed connections: a connection closed while another one in the process holds a
lock on the same file (in WAL mode every open connection holds one on the database file) cannot close its
descriptor without dropping that lock (POSIX locks are per process), so SQLite parks it and hands it to
the next connection that opens the file. Parked plus open descriptors of a file therefore never exceed the
most connections it had open at once: after a burst that woke 12 workers the idle count stays ~12 higher
until the server's long-lived connections close (one CI run read 17, 26, 26 with 5, 12 and 4 workers). The
leak grows with every ended worker instead, burst after burst (measured with the pool holding its slots:
28, 52, 64, 76).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.servers import notify_serve, serve_admin_key

CLIENTS = 30
BURSTS = 3
IDLE_S = 11.0  # anyio ends a worker thread idle for 10 s (WorkerThread.MAX_IDLE_TIME) at the next request
PER_WORKER = 2  # a worker's connections: one to the Store, one to the stream log
SPREAD = 4  # descriptors other than the workers' (a -shm, a lock file) seen to come and go


def _sqlite_descriptors(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if ".sqlite" in target:
            count += 1
    return count


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _idle_descriptors(pid: int, *, idle_threads: int) -> int:
    """The SQLite descriptors once the ended workers are gone: their threads exit (and close their
    connections) just after the request that ended them is answered, so wait for the thread count."""
    deadline = time.monotonic() + 10
    while _threads(pid) > idle_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    return _sqlite_descriptors(pid)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the server's descriptors from /proc")
def test_worker_threads_that_end_release_their_sqlite_connections(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with notify_serve(data) as (server, base):
        key = serve_admin_key(data)
        run = uuid.uuid4().hex[:8]

        def post(i: int) -> int:
            with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=30) as client:
                event = {"type": "click", "user_id": f"u{i % 7}", "ts": "2024-03-01T10:00:00Z",
                         "campaign_id": "c1", "event_id": f"{run}-{time.monotonic_ns()}-{i}"}
                return client.post("/v1/events", json=event).status_code

        assert post(-1) == 202
        threads = _threads(server.pid)
        start = _sqlite_descriptors(server.pid)
        idle: list[int] = []
        woken: list[int] = []  # workers a burst woke: none ends before it has been idle 10 s
        for _ in range(BURSTS):
            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                codes = list(pool.map(post, range(2 * CLIENTS)))
            assert set(codes) == {202}, codes
            woken.append(_threads(server.pid) - threads)
            time.sleep(IDLE_S)
            assert post(10_000) == 202  # the request that ends the idle workers
            idle.append(_idle_descriptors(server.pid, idle_threads=threads + 1))  # +1: the worker it kept
        assert max(woken) > 1, f"no burst woke a worker thread: workers {woken}"
        bounds = [start + PER_WORKER * max(woken[: k + 1]) + SPREAD for k in range(BURSTS)]
        assert all(n <= bound for n, bound in zip(idle, bounds, strict=True)), (
            f"SQLite descriptors of notify serve once each burst's workers ended: {idle}, over the most "
            f"workers had open at once ({bounds}); {start} before the bursts, workers each burst woke: {woken}")
