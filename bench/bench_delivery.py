"""Delivery benchmark: 100k notifications due in one minute, delivered to a loopback webhook sink.

A fresh SQLite Store; the sink (notify_core.delivery.sink, its own process) records receive times and
Idempotency-Keys; the worker (in this process, the same loop as ``notify worker``) runs with a clock
shifted so the minute starts ``LEAD_S`` seconds after seeding (no waiting for a real boundary).

Two shapes of the same minute:
* ``spread``: send_at spread evenly over the minute's 60 s (whole seconds): 1,667/s offered, the shape the
  planner's per-minute capacity produces. Lateness = receive time at the sink - send_at.
* ``burst``: all 100k at second :00: measures deliveries/s (first to last receipt); lateness then is
  mostly queueing (the last of 100k waits for the 99,999 before it).

Targets (issue #21): >= 5,000 deliveries/s (burst) and p99 lateness <= 1 s (spread); the requirement is
p99 <= 5 s, 99.5% within 10 s. ``--quick``: 10k notifications (spread over 6 s, same rate). Timings on a
shared 2-core machine are noisy: ``--repeats`` runs each shape several times and reports medians.

Every figure is printed beside the raw operations it is built on, measured in the same run:
* the webhook sender floor: ``WebhookChannel.send`` of one pre-rendered message from the same number of
  threads to the same sink, no Store (what the worker would reach if claims, rendering and outcomes
  cost nothing);
* the receiver floor: the sink alone, driven by two load processes over raw sockets with a pre-built
  request (so the sink is shown not to be what limits the sender floor);
* raw SQLite conditional updates on the Store's own table layout (``UPDATE .. WHERE pk, sk AND
  claim_token``), one per transaction and 100 per transaction: every delivery makes three conditional
  writes (claim, dedupe record, outcome), batched as the worker batches them.

Each worker logs as ``notify worker`` does: a JSON line a delivery attempt, appended to the run's
``delivery.jsonl`` (:func:`notify_core.observability.configure_logging`; with ``--processes N`` every process
appends to the one file, as N workers on one data directory do). Until session 55 the benchmark's workers had
no log handler, so their figures left out the ~20-28 us of CPU that line costs a delivery.

One command: ``python -m bench.bench_delivery`` (~6 min on a quiet machine); ``--quick`` (~1 min).
``--processes N`` runs N worker processes on the one Store (``notify worker`` started N times, as an operator
scales it out; claims keep them from sending one notification twice); results as ``delivery_pN[_quick].json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import against_limit, median, report
from notify_core.clock import SYSTEM_CLOCK
from notify_core.delivery import DeliveryWorker, OffsetClock, WebhookChannel, WorkerOptions
from notify_core.delivery.channels import Message
from notify_core.delivery.sink import read_receipts
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.worker import parse_ts, percentile
from notify_core.store.sqlite import SqliteStore

LEAD_S = 6.0
SECRET = "bench-secret"


@contextlib.contextmanager
def _logging_as_notify_worker(path: Path) -> Iterator[None]:
    """Within the block, Notify's loggers write JSON lines to ``path`` as in ``notify worker``; as before after."""
    from notify_core.observability import configure_logging

    loggers = [logging.getLogger(name) for name in ("notify_core", "lambdas", "notify_cli")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    configure_logging(path=path)
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            for handler in logger.handlers:
                handler.close()
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def _deliver(store: SqliteStore, *, url: str, offset: float, minute: int, n: int, budget: float, concurrency: int,
             done: Any, lost: Any, log_path: Path) -> float:
    """The ``notify worker`` loop on ``store`` until every process together has delivered ``n`` (``done`` is
    their shared count) or the budget is spent; adds its lost claims to ``lost``; returns this process's CPU
    seconds (all its threads). It logs to ``log_path`` as the command does (a line a delivery attempt)."""
    with _logging_as_notify_worker(log_path):
        return _worker_loop(store, url=url, offset=offset, minute=minute, n=n, budget=budget,
                            concurrency=concurrency, done=done, lost=lost)


def _worker_loop(store: SqliteStore, *, url: str, offset: float, minute: int, n: int, budget: float,
                 concurrency: int, done: Any, lost: Any) -> float:
    clock = OffsetClock(offset)
    worker = DeliveryWorker(store, WebhookChannel(url, secret=SECRET, clock=clock),
                            public_base_url="http://127.0.0.1:8080", clock=clock,
                            options=WorkerOptions(concurrency=concurrency, lookback_minutes=2))
    stop = threading.Event()
    counted = 0

    def watch(_step: Any) -> None:
        nonlocal counted
        total = worker.totals.delivered + worker.totals.dead_lettered
        with done.get_lock():
            done.value += total - counted
            finished = done.value >= n
        counted = total
        if finished or clock.now() - minute > budget:
            stop.set()

    cpu0 = time.process_time()
    worker.run_forever(stop, on_pass=watch)
    worker.close()
    with lost.get_lock():
        lost.value += worker.totals.lost_claims
    return time.process_time() - cpu0


def _extra_worker(store_path: str, cpu: Any, **deliver: Any) -> None:
    """One more ``notify worker`` process on the same Store (what an operator gets by starting it twice): the
    same loop, its own GIL and SQLite connection; claims keep the two from sending one notification twice."""
    store = SqliteStore(Path(store_path))
    used = _deliver(store, **deliver)
    store.close()
    with cpu.get_lock():
        cpu.value += used


def run_once(n: int, spread_s: float, *, concurrency: int, processes: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = SqliteStore(root / "store.sqlite")
        minute = (int(time.time()) // 60 + 2) * 60
        items = seed_due(store, n=n, start=datetime.fromtimestamp(minute, UTC), spread_s=spread_s)
        send_at = {i["notification_id"]: parse_ts(i["send_at"]) for i in items}
        out = root / "receipts.jsonl"
        sink = subprocess.Popen([sys.executable, "-m", "notify_core.delivery.sink", "--out", str(out)],
                                stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        port = json.loads(sink.stdout.readline())["port"]
        offset = (minute - LEAD_S) - time.time()  # "now" is LEAD_S before the minute starts
        spawn = multiprocessing.get_context("spawn")
        done, lost, extra_cpu = spawn.Value("q", 0), spawn.Value("q", 0), spawn.Value("d", 0.0)
        deliver = {"url": f"http://127.0.0.1:{port}/hook", "offset": offset, "minute": minute, "n": n,
                   "budget": LEAD_S + spread_s + 240, "concurrency": concurrency, "done": done, "lost": lost,
                   "log_path": root / "delivery.jsonl"}
        extras = [spawn.Process(target=_extra_worker, args=(str(root / "store.sqlite"), extra_cpu), kwargs=deliver)
                  for _ in range(processes - 1)]
        for proc in extras:
            proc.start()
        own_cpu = _deliver(store, **deliver)
        for proc in extras:
            proc.join()
        children0 = _children_cpu()  # the extra workers are waited-for children now: not the sink's CPU
        # every thread of every worker process: the workers' whole CPU (the extra processes report their own)
        worker_cpu = own_cpu + extra_cpu.value
        sink.terminate()
        sink.wait()
        sink_cpu = _children_cpu() - children0
        receipts = read_receipts(out)
        store.close()
        logged = _attempt_lines(root / "delivery.jsonl")
    ok = [r for r in receipts if r["status"] == 200]
    keys = Counter(r["key"] for r in ok)
    late = sorted(r["t"] + offset - send_at[r["key"]] for r in ok)
    times = sorted(r["t"] for r in ok)
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    return {
        "delivered": len(keys), "duplicates": sum(c - 1 for c in keys.values()),
        "p50_s": percentile(late, 50), "p99_s": percentile(late, 99), "max_s": late[-1] if late else None,
        "within_5s": sum(1 for x in late if x <= 5) / max(len(late), 1),
        "within_10s": sum(1 for x in late if x <= 10) / max(len(late), 1),
        "per_s": len(ok) / span if span == span and span > 0 else None,
        # CPU per delivery does not depend on what else runs on the box (the throughput does): the A/B figure
        "worker_cpu_ms_per_delivery": 1000 * worker_cpu / max(len(ok), 1),
        "sink_cpu_ms_per_request": 1000 * sink_cpu / max(len(receipts), 1),
        # claims another worker process won first (each a conditional write for nothing): 0 with one process
        "lost_claims": lost.value,
        "attempt_log_lines": logged,  # the workers' "delivery attempt" lines: one an attempt, as notify worker
    }


def _attempt_lines(path: Path) -> int:
    """The "delivery attempt" lines the workers wrote to ``path`` (their JSON log)."""
    if not path.exists():
        return 0
    with path.open("rb") as lines:
        return sum(1 for line in lines if json.loads(line).get("message") == "delivery attempt")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _start_sink(out: Path) -> tuple[subprocess.Popen[str], int]:
    sink = subprocess.Popen([sys.executable, "-m", "notify_core.delivery.sink", "--out", str(out)],
                            stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    return sink, int(json.loads(sink.stdout.readline())["port"])


def _stop_sink(sink: subprocess.Popen[str]) -> None:
    sink.terminate()
    sink.wait()


_FLOOR_MESSAGE = Message(
    notification_id="n" * 32, user_id="u0000001", campaign_id="c001", title="Campaign c001",
    body="User 0001, something new for you: http://127.0.0.1:8080/t/c?x=" + "y" * 120,
    link="http://127.0.0.1:8080/t/c?x=" + "y" * 120, open_pixel="http://127.0.0.1:8080/t/o?x=y",
    send_at="2026-01-01T00:00:00Z", unsubscribe="http://127.0.0.1:8080/u?x=" + "y" * 100)


def sender_floor(n: int, *, concurrency: int) -> dict[str, float]:
    """``WebhookChannel.send`` of one pre-rendered message, ``concurrency`` threads, no Store: sends/s."""
    message = _FLOOR_MESSAGE
    with tempfile.TemporaryDirectory() as tmp:
        sink, port = _start_sink(Path(tmp) / "floor.jsonl")
        channel = WebhookChannel(f"http://127.0.0.1:{port}/hook", secret=SECRET, clock=SYSTEM_CLOCK)
        latencies: list[float] = []

        def one(i: int) -> None:
            started = time.perf_counter()
            channel.send(message, idempotency_key=f"k{i}")
            latencies.append(time.perf_counter() - started)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(min(200, n))))  # connections up
            latencies.clear()
            began, cpu0 = time.perf_counter(), time.process_time()
            list(pool.map(one, range(n)))
            elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu0
        channel.close()
        _stop_sink(sink)
    latencies.sort()
    return {"per_s": n / elapsed, "p99_send_s": percentile(latencies, 99) or 0.0, "cpu_ms_per_send": 1000 * cpu / n}


def async_sender_floor(n: int, *, concurrency: int) -> dict[str, float]:
    """What the ``notify worker`` loop sends with now: ``concurrency`` coroutines on one event loop, each
    with its own :class:`AsyncWebhookSender`, the same pre-rendered message, no Store: sends/s and CPU."""
    import asyncio

    from notify_core.delivery.async_senders import _new_loop

    message = _FLOOR_MESSAGE
    with tempfile.TemporaryDirectory() as tmp:
        sink, port = _start_sink(Path(tmp) / "afloor.jsonl")
        channel = WebhookChannel(f"http://127.0.0.1:{port}/hook", secret=SECRET, clock=SYSTEM_CLOCK)
        latencies: list[float] = []

        async def run(count: int) -> None:
            todo = iter(range(count))

            async def one_sender() -> None:
                sender = channel.async_sender()
                try:
                    for i in todo:
                        started = time.perf_counter()
                        await sender.send(message, idempotency_key=f"k{i}")
                        latencies.append(time.perf_counter() - started)
                finally:
                    sender.close()

            await asyncio.gather(*(one_sender() for _ in range(concurrency)))

        loop = _new_loop()
        try:
            loop.run_until_complete(run(min(200, n)))  # warm-up (its connections are closed after it)
            latencies.clear()
            began, cpu0 = time.perf_counter(), time.process_time()
            loop.run_until_complete(run(n))
            elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu0
        finally:
            loop.close()
        _stop_sink(sink)
    latencies.sort()
    return {"per_s": n / elapsed, "p99_send_s": percentile(latencies, 99) or 0.0, "cpu_ms_per_send": 1000 * cpu / n}


def _raw_load(port: int, n: int, threads: int, body: bytes, results: Any) -> None:
    request = (f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Idempotency-Key: k\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    def loop(count: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count):
                sock.sendall(request)
                got = b""
                while not got.endswith(b"\r\n\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    got += chunk

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, [n // threads] * threads))
    results.put(n // threads * threads)


def receiver_floor(n: int, *, processes: int = 2, threads: int = 8) -> float:
    """The sink alone: ``processes`` x ``threads`` raw-socket clients with a pre-built request; requests/s."""
    body = b'{"x":"' + b"y" * 700 + b'"}'
    with tempfile.TemporaryDirectory() as tmp:
        sink, port = _start_sink(Path(tmp) / "floor.jsonl")
        results: Any = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=_raw_load, args=(port, n // processes, threads, body, results))
                 for _ in range(processes)]
        began = time.perf_counter()
        for proc in procs:
            proc.start()
        done = sum(results.get() for _ in procs)
        elapsed = time.perf_counter() - began
        for proc in procs:
            proc.join()
        _stop_sink(sink)
    return done / elapsed


def sqlite_floor(n: int, *, per_tx: int) -> float:
    """Raw conditional updates on the Store's table layout (WAL, synchronous=NORMAL): updates/s."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (pk TEXT NOT NULL, sk TEXT NOT NULL, ttl REAL, body TEXT NOT NULL)")
        conn.execute("CREATE UNIQUE INDEX t__key ON t (pk, sk)")
        rows = [(f"2026-01-01T00:00#{i % 16:02d}", f"u{i:07d}#n{i:032d}",
                 json.dumps({"status": "claimed", "claim_token": f"tok{i}", "pad": "x" * 300})) for i in range(n)]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (pk, sk, ttl, body) VALUES (?, ?, NULL, ?)", rows)
        conn.execute("COMMIT")
        sql = ("UPDATE t SET body = json_set(body, '$.status', 'sent') "
               "WHERE pk = ? AND sk = ? AND body->>'claim_token' = ?")
        args = [(pk, sk, f"tok{i}") for i, (pk, sk, _b) in enumerate(rows)]
        began = time.perf_counter()
        for start in range(0, n, per_tx):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, args[start : start + per_tx])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
        conn.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description="delivery benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--shapes", default="spread,burst", help="comma-separated: spread, burst")
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes on the one Store (`notify worker` started N times); 1 = one process")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    spread = 60.0 * min(1.0, n / 100_000)
    rows: list[list[Any]] = []
    raw: dict[str, list[dict[str, Any]]] = {}
    shapes = [s for s in (("spread", spread), ("burst", 0.0)) if s[0] in args.shapes.split(",")]
    for shape, spread_s in shapes:
        runs = [run_once(n, spread_s, concurrency=args.concurrency, processes=args.processes)
                for _ in range(args.repeats)]
        raw[shape] = runs

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return median([float(r[key]) for r in runs if r[key] is not None])

        rows.append([shape, n, int(med("delivered")), int(med("duplicates")), round(med("p50_s"), 3),
                     round(med("p99_s"), 3), round(med("max_s"), 3), f"{med('within_5s'):.2%}",
                     f"{med('within_10s'):.2%}", round(med("per_s")), round(med("worker_cpu_ms_per_delivery"), 3)])
    floor = sender_floor(10_000 if args.quick else 30_000, concurrency=args.concurrency)
    afloor = async_sender_floor(10_000 if args.quick else 30_000, concurrency=args.concurrency)
    receiver = receiver_floor(20_000 if args.quick else 60_000)
    sql_1 = sqlite_floor(5_000 if args.quick else 20_000, per_tx=1)
    sql_100 = sqlite_floor(20_000 if args.quick else 100_000, per_tx=100)
    rows.append(["limit: webhook sender floor (no Store)", n, "", "", "", round(floor["p99_send_s"], 4), "", "", "",
                 round(floor["per_s"]), round(floor["cpu_ms_per_send"], 3)])
    rows.append(["limit: async webhook sender floor (one event loop, no Store)", n, "", "", "",
                 round(afloor["p99_send_s"], 4), "", "", "", round(afloor["per_s"]),
                 round(afloor["cpu_ms_per_send"], 3)])
    rows.append(["limit: receiver floor (sink alone, raw sockets)", "", "", "", "", "", "", "", "", round(receiver),
                 ""])
    rows.append(["limit: raw SQLite conditional updates, 1/tx", "", "", "", "", "", "", "", "", round(sql_1), ""])
    rows.append(["limit: raw SQLite conditional updates, 100/tx", "", "", "", "", "", "", "", "", round(sql_100), ""])
    by_shape = {r[0]: r for r in rows}
    who = f" ({args.processes} worker processes; floors of one)" if args.processes > 1 else ""
    limits: list[dict[str, Any]] = []
    if "burst" in by_shape:
        burst = float(by_shape["burst"][9])
        limits += [
            against_limit(path=f"burst{who}: deliveries/s vs the webhook sender floor", figure=burst,
                          limit=floor["per_s"], unit="/s", target=5000),
            # the notify worker loop sends from its event loop (async_senders.py): this is its raw operation
            against_limit(path=f"burst{who}: deliveries/s vs the async webhook sender floor (one event loop)",
                          figure=burst, limit=afloor["per_s"], unit="/s", target=5000),
            against_limit(path=f"burst{who}: worker CPU ms per delivery vs the async sender floor's CPU ms per send",
                          figure=float(by_shape["burst"][10]), limit=afloor["cpu_ms_per_send"], unit="ms",
                          target=0.2, higher_is_better=False),
            against_limit(path=f"burst{who}: deliveries/s vs the receiver floor", figure=burst, limit=receiver,
                          unit="/s", target=5000),
            against_limit(path=f"burst{who}: conditional writes/s (3 per delivery) vs raw SQLite 100/tx",
                          figure=3 * burst, limit=sql_100, unit="/s", target=15000),
            # the load-independent figure: 5,000/s on the one core a GIL-bound process gets is 0.2 ms each
            against_limit(path=f"burst{who}: worker CPU ms per delivery vs the sender floor's CPU ms per send",
                          figure=float(by_shape["burst"][10]), limit=floor["cpu_ms_per_send"], unit="ms",
                          target=0.2, higher_is_better=False),
        ]
    if "spread" in by_shape:
        limits.append(against_limit(path=f"spread{who}: p99 lateness vs one send's p99 at the sender floor",
                                    figure=float(by_shape["spread"][5]), limit=floor["p99_send_s"], unit="s",
                                    target=1.0, higher_is_better=False))
    name = "delivery" + (f"_p{args.processes}" if args.processes > 1 else "") + ("_quick" if args.quick else "")
    report(name,
           f"Delivery to a loopback webhook sink (medians of {args.repeats}; shared 2-core machine, noisy)",
           ["shape", "due", "delivered", "duplicates", "p50 late s", "p99 late s", "max late s", "<=5 s", "<=10 s",
            "deliveries/s", "worker CPU ms/delivery"], rows,
           {"runs": raw, "concurrency": args.concurrency, "processes": args.processes, "limits": limits,
            "floors": {"sender_per_s": floor["per_s"], "sender_p99_send_s": floor["p99_send_s"],
                       "sender_cpu_ms_per_send": floor["cpu_ms_per_send"],
                       "async_sender_per_s": afloor["per_s"], "async_sender_p99_send_s": afloor["p99_send_s"],
                       "async_sender_cpu_ms_per_send": afloor["cpu_ms_per_send"],
                       "receiver_per_s": receiver, "sqlite_updates_1_per_tx": sql_1,
                       "sqlite_updates_100_per_tx": sql_100},
            "targets": {"p99_s": 1.0, "requirement_p99_s": 5.0, "within_10s": 0.995, "per_s": 5000}})


if __name__ == "__main__":
    main()
