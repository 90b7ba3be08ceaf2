"""Streaming ingestion benchmark: stream -> Store throughput and persistence latency, capture over HTTP.

For the embedded log and for Kafka (a real Kafka-protocol broker, librdkafka's mock cluster in its own
process): a producer process offers events at ``--rate`` for ``--seconds``; the consumer (in this
process, the real ``EventConsumer`` writing to a fresh SQLite Store) persists them; per event we take
produce time (the record timestamp) -> the moment its batch was written to the Store. Then the capture
endpoint: ``notify serve`` in a subprocess, client threads POSTing batches of 100 events.

First the consumer alone: 1M events already in the embedded log drained by the real consumer, beside the
limit measured in the same run: raw SQLite ``executemany`` of the very rows it wrote (issue 21).

    .venv/bin/python -m bench.bench_stream            # 1M drain + 49k/s for 60 s on both backends + capture
    .venv/bin/python -m bench.bench_stream --quick    # 200k drain + 20 s on the embedded log (~1.5 min)

Prints tables and writes ``bench/results/stream.json`` (``stream_drain.json`` for the drain; ``_quick``
names for --quick), every figure with its limit, ratio, target and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from notify_core.settings import KAFKA_LINGER_MS

ROOT = Path(__file__).resolve().parent.parent
APP_RESPONSE_MS = 300  # the spec's app response time (section 12): what a capture request may take


def _linger_label(backend: str, linger_ms: int | None) -> str:
    """``, linger N ms`` for a Kafka figure measured at a linger other than the default, else nothing."""
    return f", linger {linger_ms} ms" if backend == "kafka" and linger_ms not in (None, KAFKA_LINGER_MS) else ""

PRODUCER = r"""
import sys, threading, time, uuid
backend, target, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
from bench.bench_stream import event_messages
if backend == "kafka":
    from notify_core.settings import KAFKA_LINGER_MS
    from notify_core.stream.kafka import KafkaStream
    stream = KafkaStream(bootstrap_servers=target, linger_ms=int(sys.argv[6]) if len(sys.argv) > 6 else KAFKA_LINGER_MS)
else:
    from notify_core.stream.local_log import LocalLog
    stream = LocalLog(target)
run = uuid.uuid4().hex[:8]
batch_size = max(50, min(1000, int(rate / 100)))  # ~10 ms of events per batch
# Several producing threads, as several capture requests at once: produce_batch returns only once the
# batch is acknowledged (Kafka: linger + acks=all, ~10 ms), so ONE thread offers at most a batch per
# round trip (the 38.8k/s of a 49k/s run); N threads keep N batches in flight.
lock = threading.Lock(); state = {"sent": 0}; start = time.monotonic(); offer_start = time.time()
def produce():
    while True:
        with lock:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                return
            due = int(rate * elapsed) + batch_size
            lo = state["sent"] if state["sent"] < due else None
            if lo is not None:
                state["sent"] += batch_size
        if lo is None:
            time.sleep(0.002)
            continue
        stream.produce_batch(event_messages(lo, batch_size, run=run))
workers = [threading.Thread(target=produce) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
offer_end = time.time()
stream.close()
print(state["sent"], offer_start, offer_end, flush=True)  # what it offered, and over which wall-clock span
"""


_CLICK = (b'{"event_id":"%s-%d","user_id":"%s","ts":"2024-03-01T%02d:%02d:%02dZ","properties":{},"type":"click",'
          b'"campaign_id":"c%d"}')
_ORDER = (b'{"event_id":"%s-%d","user_id":"%s","ts":"2024-03-01T%02d:%02d:%02dZ","properties":{},"type":"order",'
          b'"order_id":"%s-o%d","items":[{"product_id":"p%d","quantity":1,"unit_price":2.5}]}')


def event_messages(start: int, count: int, *, run: str) -> list[Any]:
    """Events ``start..start+count`` as capture produces them: 1 in 10 an order, the rest clicks.

    The canonical JSON :func:`~notify_core.events.models.encode_event` writes, with the headers capture
    adds (the request id of a 100-event request, and the validated mark), so the consumer takes the path
    it takes in production. Formatted from two byte templates (the bytes ``orjson.dumps`` gives the
    event's dict, checked in tests/stream/test_bench_events.py): this is the load generator, which shares
    the box's two cores with the consumer it loads, and a dict + ``orjson.dumps`` per event cost ~3x.
    """
    from notify_core.events.models import VALIDATED_HEADERS
    from notify_core.stream.port import REQUEST_ID_HEADER, Message

    out = []
    append = out.append
    tag = run.encode()
    headers: tuple[tuple[str, bytes], ...] = ()
    for i in range(start, start + count):
        if i % 100 == 0 or not headers:
            headers = ((REQUEST_ID_HEADER, f"req-{run}-{i // 100}".encode()), *VALIDATED_HEADERS)
        user = b"u%d" % (i % 100003)
        hh, mm, ss = i // 3600 % 24, i // 60 % 60, i % 60
        if i % 10 == 0:
            append(Message("purchase_history", user, _ORDER % (tag, i, user, hh, mm, ss, tag, i, i % 4000), headers))
        else:
            append(Message("notify_clickstream", user, _CLICK % (tag, i, user, hh, mm, ss, i % 300), headers))
    return out


SPEC_BOUND_MS = 5000.0  # the spec: 99.9 % of events persisted within 5 s
SPEC_WITHIN_SHARE = 0.999
SPEC_P99_MS = 2000.0  # issue #21: p99 <= 2 s at the peak


def sustained_rate(latencies_ms: np.ndarray, *, offer_seconds: float, bound_ms: float = SPEC_BOUND_MS) -> float:
    """Events persisted within ``bound_ms`` of being produced, per second the producer offered.

    The figure of a sustained run. A consumer that keeps up scores the rate offered; one that falls behind
    scores what it persisted in time. Counting what was persisted by the producer's exit instead would
    leave out the events in flight at that moment, and timing from the producer's start would count its
    start-up (interpreter, imports, connecting), so that figure stays under the offered rate even when
    every event is persisted at once."""
    return float((latencies_ms <= bound_ms).sum()) / max(offer_seconds, 1e-9)


def sustained_limits(run: dict[str, Any], *, at: str, rate: float, alone: float | None,
                     floor: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A sustained run's figures against their limits and the spec's targets.

    The spec asks for 99.9 % of the events within 5 s at the peak, so the sustained figure (events persisted
    within 5 s, per second offered) meets it at 99.9 % of the rate offered: the producer's own span runs a
    few milliseconds past its nominal seconds, so a run that persisted every event within 5 s scores a hair
    under the nominal rate (48,989 for 49,000 in the sitting of 2026-12-05, every event within 5 s), and
    an exact comparison called that a miss. The limit is what the consumer alone drains in this sitting
    (``alone``: the producer shares the box, so the ratio shows what running beside it costs); a run
    without the drain compares with the rate offered and says so. ``floor``: the mock broker's floors
    (:func:`kafka_floor`), for a Kafka run."""
    from bench.common import against_limit  # here, as in main(): the producer script imports this module

    target = rate * SPEC_WITHIN_SHARE
    sustained = f"{at} offered: persisted within 5 s, per second offered"
    figure = run["sustained_events_per_s"]
    rows = [against_limit(path=f"{sustained} / consumer alone" if alone is not None else f"{sustained} / offered",
                          figure=figure, limit=alone if alone is not None else rate, unit="ev/s", target=target)]
    if floor is not None:
        rows.append(against_limit(path=f"{sustained} / bare confluent consumer (mock broker floor)",
                                  figure=figure, limit=floor["bare_consumer"]["events_per_s"], unit="ev/s",
                                  target=target))
        rows.append(against_limit(path="kafka: bench producer unthrottled (what the box offers into the mock broker)",
                                  figure=run["produced_per_s"], limit=floor["producer_events_per_s"], unit="ev/s",
                                  target=target))
    rows.append(against_limit(path=f"{at}: p99 / p50", figure=run["p99_ms"], limit=run["p50_ms"], unit="ms",
                              target=SPEC_P99_MS, higher_is_better=False))
    rows.append(against_limit(path=f"{at}: share within 5 s", figure=run["within_5s"], limit=1.0, unit="",
                              target=SPEC_WITHIN_SHARE))
    return rows


def _offered(producer: subprocess.Popen[str]) -> tuple[int, float, float]:
    """What the exited :data:`PRODUCER` printed: the events it sent, when it began offering (epoch s) and for
    how many seconds it offered (its own first-to-last span, without its start-up)."""
    sent, start, end = (producer.stdout.read() if producer.stdout else "").split()
    return int(sent), float(start), max(float(end) - float(start), 1e-9)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "p999_ms": float("nan"), "max_ms": float("nan")}
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "p999_ms": float(p999), "max_ms": float(values.max())}


def stream_run(backend: str, *, rate: float, seconds: float, drain: float, producer_threads: int = 4,
               decode_process: bool = True, linger_ms: int = KAFKA_LINGER_MS) -> dict[str, Any]:
    """One run: offer ``rate`` events/s for ``seconds``; persist with the real consumer; measure."""
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.events.consumer import EventConsumer
    from notify_core.gc_tuning import tune_gc_for_throughput
    from notify_core.store.sqlite import SqliteStore

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-stream-{backend}-"))
    broker = None
    try:
        if backend == "kafka":
            from notify_core.stream.kafka import KafkaStream
            from tests.kafka_broker import start_broker

            # The mock broker keeps only the last 5 MB of each partition (hard-coded in librdkafka's
            # rd_kafka_mock_partition_init, no property or API sets it): a consumer further behind than
            # that is reset to the oldest offset kept and the records before it are gone. The bytes are
            # the stored batches, which the adapter's producer compresses with lz4 (PRODUCER_DEFAULTS):
            # 8 partitions keep ~28 s at 49k events/s (~6 s uncompressed). More partitions would too, at
            # more producer CPU (smaller batches: 5.7 against 4.2 us an event at 32). What retention removed
            # is counted (``broker_dropped``: the partitions' low watermarks after the drain, read first or
            # not); what it removed unread shows as ``unpersisted_after_drain``, never hidden.
            broker = start_broker([("purchase_history", 8), ("notify_clickstream", 8),
                                   ("purchase_history.dlq", 1), ("notify_clickstream.dlq", 1)])
            target = broker.bootstrap
            stream: Any = KafkaStream(bootstrap_servers=target)
        else:
            from notify_core.stream.local_log import LocalLog

            target = str(workdir / "log.sqlite")
            stream = LocalLog(target)
        store = SqliteStore(workdir / "store.sqlite")
        store.tune_for_bulk_writes()
        tune_gc_for_throughput()  # as `notify consume` does
        latencies: list[np.ndarray] = []
        persisted_at: list[tuple[float, int]] = []

        def on_persisted(records: Any, at: float) -> None:
            ts = np.fromiter((r.timestamp_ms for r in records), dtype=np.int64, count=len(records))
            latencies.append(at * 1000 - ts)
            persisted_at.append((at, len(records)))

        consumer = EventConsumer(stream=stream, store=store, landing=workdir / "landing", max_batch=10_000,
                                 poll_timeout=0.05, on_persisted=on_persisted, clock=SYSTEM_CLOCK,
                                 decode_process=decode_process)  # `notify consume --decode-process`
        stop = threading.Event()
        thread = threading.Thread(target=consumer.run, kwargs={"stop": stop}, daemon=True)
        # warm the consumer up (group join on Kafka) before the clock starts
        thread.start()
        time.sleep(3.0 if backend == "kafka" else 0.5)
        started = time.time()
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, backend, target, str(rate), str(seconds),
                                     str(producer_threads), str(linger_ms)],
                                    cwd=ROOT, stdout=subprocess.PIPE, text=True)
        # CPU of every process of the run while the producer offers (who burns the 2 cores: the producer,
        # the mock broker, the consumer, its decoding process): sampled from /proc, the last sample kept.
        pids = {"producer": producer.pid, "broker": broker.process.pid if broker is not None else None,
                "decoder": consumer.decoder.pid if consumer.decoder is not None else None}
        cpu_start = {name: _process_cpu_s(pid) for name, pid in pids.items()}
        cpu_last = dict(cpu_start)
        consumer_cpu = time.process_time()
        while producer.poll() is None:
            if pids["decoder"] is None and consumer.decoder is not None and consumer.decoder.pid is not None:
                pids["decoder"] = consumer.decoder.pid  # up after its imports (started CPU counted from here)
                cpu_start["decoder"] = cpu_last["decoder"] = _process_cpu_s(pids["decoder"])
            cpu_last.update({name: v for name, pid in pids.items() if (v := _process_cpu_s(pid)) > 0})
            time.sleep(0.5)
        produce_end = time.time()
        consumer_cpu = time.process_time() - consumer_cpu
        produced, offer_start, offer_s = _offered(producer)
        window_s = max(produce_end - started, 1e-9)
        cpu_share = {name: round((cpu_last[name] - cpu_start[name]) / window_s, 3) for name in pids}
        cpu_share["consumer"] = round(consumer_cpu / window_s, 3)  # this process: poll, hand-over, writes
        deadline = time.monotonic() + drain
        while consumer.totals.records < produced and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join(60)
        lag_end = consumer.lag()
        dropped = _broker_dropped(target) if backend == "kafka" else 0
        consumer.close()
        stream.close()
        store.close()
        values = np.concatenate(latencies) if latencies else np.zeros(0)
        window = sum(n for at, n in persisted_at if at <= produce_end)
        total = int(values.size)
        last = max((at for at, _ in persisted_at), default=started)
        return {
            "backend": backend,
            "offered_rate": rate,
            "seconds": seconds,
            "produced": produced,
            "produced_per_s": round(produced / seconds),  # what the producer really offered on this box
            "producer_threads": producer_threads,
            "kafka_linger_ms": linger_ms if backend == "kafka" else None,
            "decode_process": decode_process,
            "persisted": total,
            "persisted_within_window": window,
            "events_per_s": round(total / max(last - started, 1e-9)),
            # The figure before session 21 (kept to compare with earlier results): persisted by the time the
            # producer was seen to exit, over the time since it was started. It stays under the offered rate
            # even when every event is persisted in time (see sustained_rate): session 8's 20 s runs persisted
            # all 980,490 events within the window and scored 47.6-47.7k.
            "window_events_per_s": round(window / max(produce_end - started, 1e-9)),
            # The figure: sustained_rate over the producer's own first-to-last wall-clock span.
            "sustained_events_per_s": round(sustained_rate(values, offer_seconds=offer_s)),
            "offer_seconds": round(offer_s, 3),
            "producer_startup_s": round(offer_start - started, 3),
            "unpersisted_after_drain": produced - total,
            # records the mock broker's retention removed by the end of the drain, whether the consumer had
            # read them first or not: those lost unread are in unpersisted_after_drain
            "broker_dropped": dropped,
            "lag_after": lag_end,
            # cores each process used while the producer offered (1.0 = one whole core), of 2 on this box
            "batches": len(persisted_at),
            "mean_batch": round(total / max(len(persisted_at), 1)),
            "cpu_cores": cpu_share,
            # the consuming process's CPU per event it persisted while the producer offered (us)
            "consumer_cpu_us_per_event": round(consumer_cpu / max(window, 1) * 1e6, 2),
            "decoder_cpu_us_per_event": round(cpu_share["decoder"] * window_s / max(window, 1) * 1e6, 2),
            "within_2s": float((values <= SPEC_P99_MS).mean()) if total else 0.0,
            "within_5s": float((values <= SPEC_BOUND_MS).mean()) if total else 0.0,
            **_percentiles(values),
        }
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def kafka_floor(*, seconds: float, producer_threads: int = 4) -> dict[str, Any]:
    """The mock broker's own floors, measured in the same run as the Kafka figure (a test double's limits,
    not the product's): the benchmark's producer unthrottled for ``seconds`` (what this box can offer
    into the broker at all), then a bare confluent consumer (the adapter's settings, ``consume(10000)``,
    no Python per message) draining what it wrote, then ``KafkaStreamConsumer.poll_batch`` (the adapter's
    poll, a ``Record`` per message) draining it again in a second group. CPU of each process beside."""
    from confluent_kafka import Consumer

    from notify_core.events.models import TOPICS
    from notify_core.stream.kafka import CONSUMER_DEFAULTS, KafkaStream
    from tests.kafka_broker import start_broker

    broker = start_broker([("purchase_history", 8), ("notify_clickstream", 8)])
    try:
        broker_cpu = _process_cpu_s(broker.process.pid)
        started = time.perf_counter()
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, "kafka", broker.bootstrap, "1e9", str(seconds),
                                     str(producer_threads)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        producer_cpu = 0.0
        while producer.poll() is None:
            producer_cpu = _process_cpu_s(producer.pid) or producer_cpu
            time.sleep(0.2)
        produce_s = time.perf_counter() - started
        produced, _, offer_s = _offered(producer)
        broker_produce_cpu = _process_cpu_s(broker.process.pid) - broker_cpu

        def drain(group: str, adapter: bool) -> dict[str, Any]:
            config = {"bootstrap.servers": broker.bootstrap, "group.id": group, **CONSUMER_DEFAULTS}
            stream = KafkaStream(bootstrap_servers=broker.bootstrap) if adapter else None
            consumer: Any = (stream.consumer(group=group, topics=TOPICS) if stream is not None
                             else Consumer(config))
            if stream is None:
                consumer.subscribe(list(TOPICS))
            count, first, last = 0, None, time.perf_counter()
            b_cpu, cpu = _process_cpu_s(broker.process.pid), time.process_time()
            give_up = time.monotonic() + 120
            while count < produced and time.monotonic() < give_up:
                if first is not None and time.perf_counter() - last > 3.0:
                    break  # what retention dropped will not come
                batch = (consumer.poll_batch(max_records=10_000, timeout=0.5) if stream is not None
                         else consumer.consume(num_messages=10_000, timeout=0.5))
                if batch:
                    if first is None:  # from the first message: the group join is not the broker's speed
                        first, cpu = time.perf_counter(), time.process_time()
                        b_cpu = _process_cpu_s(broker.process.pid)
                    count += len(batch)
                    last = time.perf_counter()
            cpu = time.process_time() - cpu
            b_cpu = _process_cpu_s(broker.process.pid) - b_cpu
            consumer.close()
            if stream is not None:
                stream.close()
            span = max(last - (first or last), 1e-9)
            return {"events": count, "events_per_s": round(count / span), "cpu_us_per_event": cpu / max(count, 1) * 1e6,
                    "broker_cpu_us_per_event": b_cpu / max(count, 1) * 1e6}

        bare = drain("floor-bare", adapter=False)
        adapter = drain("floor-adapter", adapter=True)
        return {
            "produced": produced,
            # while it offered (its own first-to-last span); from its start to its exit beside it
            "producer_events_per_s": round(produced / offer_s),
            "producer_start_to_exit_events_per_s": round(produced / produce_s),
            "producer_cpu_us_per_event": producer_cpu / max(produced, 1) * 1e6,
            "broker_cpu_us_per_produced_event": broker_produce_cpu / max(produced, 1) * 1e6,
            "bare_consumer": bare,
            "adapter_poll": adapter,
        }
    finally:
        broker.stop()


def _broker_dropped(bootstrap: str) -> int:
    """Records the broker removed from the event topics (their partitions' low watermarks: nothing else
    deletes records here), i.e. what its retention removed, read first or not (measured after the drain)."""
    from confluent_kafka import Consumer, TopicPartition

    from notify_core.events.models import TOPICS

    admin = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        dropped = 0
        for topic in TOPICS:
            for partition in admin.list_topics(topic, timeout=10).topics[topic].partitions:
                dropped += admin.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[0]
        return dropped
    finally:
        admin.close()


def _process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc); 0 for None or where unreadable."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain_run(events: int, *, decode_process: bool = True) -> dict[str, Any]:
    """The consumer alone: ``events`` already in the embedded log, drained by the real ``EventConsumer``
    into a fresh SQLite Store; then the limit: the same rows written by raw SQLite ``executemany`` (and by
    one ``json_each`` statement per chunk, the form ``batch_put`` uses) into a fresh file of the same schema
    and tuning, in chunks of one consumer batch, one transaction each. Same process, same sitting."""
    import orjson

    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.events.consumer import EventConsumer
    from notify_core.gc_tuning import tune_gc_for_throughput
    from notify_core.store import tables
    from notify_core.store.sqlite import SqliteStore
    from notify_core.stream.local_log import LocalLog

    workdir = Path(tempfile.mkdtemp(prefix="bench-stream-drain-"))
    try:
        log = LocalLog(workdir / "log.sqlite")
        chunk = 10_000
        for start in range(0, events, chunk):
            log.produce_batch(event_messages(start, min(chunk, events - start), run="drain"))
        store = SqliteStore(workdir / "store.sqlite")
        store.tune_for_bulk_writes()
        tune_gc_for_throughput()  # as `notify consume` does
        consumer = EventConsumer(stream=log, store=store, landing=workdir / "landing", clock=SYSTEM_CLOCK,
                                 max_batch=chunk, poll_timeout=0.05, decode_process=decode_process)
        worker = None
        if consumer.decoder is not None:  # a one-off ~1 s of imports at start, outside the timed drain
            up_by = time.monotonic() + 60
            while (worker := consumer.decoder.pid) is None and time.monotonic() < up_by:
                time.sleep(0.02)
        worker_cpu = _process_cpu_s(worker)
        cpu = time.process_time()
        started = time.perf_counter()
        out = consumer.run(stop=threading.Event(), max_records=events)
        consumer_s = time.perf_counter() - started
        cpu = time.process_time() - cpu  # this process: poll, hand-over, SQLite writes, commits
        worker_cpu = _process_cpu_s(worker) - worker_cpu  # the decoding process (0 without one)
        consumer.close()
        log.close()
        names = (tables.USER_EVENTS, tables.PURCHASES, tables.EVENTS)
        conn = store.connection()
        rows = {name: conn.execute(f"SELECT pk, sk, ttl, body FROM {name} ORDER BY rowid").fetchall() for name in names}
        store.close()
        limits = {}
        for kind in ("executemany", "json_each"):
            raw = SqliteStore(workdir / f"raw-{kind}.sqlite")
            raw.tune_for_bulk_writes()
            for name in names:
                raw.table(name)
            rconn = raw.connection()
            started = time.perf_counter()
            for name in names:
                upsert = f"INSERT INTO {name} (pk, sk, ttl, body) "
                conflict = " ON CONFLICT(pk, sk) DO UPDATE SET ttl=excluded.ttl, body=excluded.body"
                share = max(1, len(rows[name]) * chunk // max(events, 1))  # this table's rows of one batch
                for i in range(0, len(rows[name]), share):
                    part = sorted(rows[name][i : i + share])
                    rconn.execute("BEGIN")
                    if kind == "executemany":
                        rconn.executemany(upsert + "VALUES (?, ?, ?, ?)" + conflict, part)
                    else:
                        rconn.execute(upsert + "SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?) "
                                      "WHERE true" + conflict, (orjson.dumps(part),))
                    rconn.execute("COMMIT")
            limits[kind] = time.perf_counter() - started
            raw.close()
        n_rows = sum(len(r) for r in rows.values())
        return {
            "events": events,
            "decode_process": decode_process,
            "rows": n_rows,
            "persisted": out.persisted,
            "consumer_s": consumer_s,
            "consumer_events_per_s": events / consumer_s,
            # CPU per event, per process: what a quiet 2-core box turns into wall time (the larger of the
            # two when they run on separate cores), much less noisy on a shared box than the wall clock
            "consumer_cpu_us_per_event": cpu / events * 1e6,
            "decoder_cpu_us_per_event": worker_cpu / events * 1e6,
            "executemany_s": limits["executemany"],
            "executemany_events_per_s": events / limits["executemany"],
            "json_each_s": limits["json_each"],
            "json_each_events_per_s": events / limits["json_each"],
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def capture_run(backend: str, *, seconds: float, clients: int, linger_ms: int = KAFKA_LINGER_MS) -> dict[str, Any]:
    """``notify serve`` in a subprocess; ``clients`` threads POST batches of 100 events for ``seconds``."""
    import httpx

    from tests.servers import free_port, serve_admin_key, wait_healthy

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-capture-{backend}-"))
    broker = None
    server = None
    try:
        extra: list[str] = []
        if backend == "kafka":
            from tests.kafka_broker import start_broker

            broker = start_broker([("purchase_history", 4), ("notify_clickstream", 4)])
            extra = ["--kafka", broker.bootstrap]
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "notify_cli.stream_commands", "serve", "--data-dir", str(workdir),
             "--port", str(port), *extra],
            cwd=ROOT, stderr=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_ENV": "local", "NOTIFY_KAFKA_LINGER_MS": str(linger_ms)},
        )
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base, timeout=30)
        key = serve_admin_key(workdir)  # the admin key `notify serve` wrote on its first start
        latencies: list[float] = []
        accepted = [0]
        errors = [0]
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client(cid: int) -> None:
            with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": key}) as http:
                n = 0
                while time.monotonic() < stop_at:
                    events = [{"type": "click", "user_id": f"u{cid}-{n}-{j % 50}", "ts": "2024-03-01T10:00:00Z",
                               "campaign_id": f"c{j}", "event_id": f"{cid}-{n}-{j}"} for j in range(100)]
                    t0 = time.perf_counter()
                    r = http.post("/v1/events", json={"events": events})
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt * 1000)
                        if r.status_code == 202:
                            accepted[0] += r.json()["accepted"]
                        else:
                            errors[0] += 1
                    n += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        values = np.array(latencies)
        return {
            "backend": backend,
            "clients": clients,
            "kafka_linger_ms": linger_ms if backend == "kafka" else None,
            "batch": 100,
            "seconds": round(elapsed, 1),
            "requests": int(values.size),
            "errors": errors[0],
            "events_per_s": round(accepted[0] / elapsed),
            "request_p50_ms": float(np.percentile(values, 50)) if values.size else float("nan"),
            "request_p99_ms": float(np.percentile(values, 99)) if values.size else float("nan"),
        }
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in runs)
    out["repeats"] = len(runs)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.common import against_limit, load_average, report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200k-event drain, 20 s sustained on the embedded log only, no capture (~1.5 min)")
    parser.add_argument("--drain-events", type=int, default=None, help="consumer-alone drain size (1,000,000)")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--backends", default=None, help="local,kafka (--quick: local)")
    parser.add_argument("--rates", default="49000", help="offered events/s, comma-separated (the spec's peak)")
    parser.add_argument("--seconds", type=float, default=None, help="sustained run length (60; --quick 20)")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to let the consumer catch up")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--capture-seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--skip-capture", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--producer-threads", type=int, default=4,
                        help="producing threads (concurrent capture requests; one Kafka batch in flight each)")
    parser.add_argument("--tag", default="", help="results file suffix (stream[_quick]_TAG.json), e.g. an A/B")
    parser.add_argument("--skip-kafka-floor", action="store_true",
                        help="leave out the mock broker's floors (bare producer / bare consumer) of a Kafka run")
    parser.add_argument("--kafka-linger-ms", type=int, default=KAFKA_LINGER_MS,
                        help="the Kafka producers' linger.ms (NOTIFY_KAFKA_LINGER_MS): capture latency against "
                             "larger message sets")
    parser.add_argument("--no-decode-process", action="store_true",
                        help="the consumer decodes in its own process (A/B against `notify consume`'s default)")
    args = parser.parse_args(argv)
    quick = args.quick
    drain_events = args.drain_events or (200_000 if quick else 1_000_000)
    seconds = args.seconds or (20.0 if quick else 60.0)
    backends = [b for b in (args.backends or ("local" if quick else "local,kafka")).split(",") if b]
    rates = [float(r) for r in args.rates.split(",") if r]
    skip_capture = args.skip_capture or quick
    suffix = ("_quick" if quick else "") + (f"_{args.tag}" if args.tag else "")
    output = args.output or ROOT / "bench" / "results" / f"stream{suffix}.json"

    limits: list[dict[str, Any]] = []
    drain: dict[str, Any] | None = None
    if not args.skip_drain:
        drain = drain_run(drain_events, decode_process=not args.no_decode_process)
        drain["loadavg"] = load_average()
        limits.append(against_limit(path=f"consumer alone, {drain_events:,} events / raw executemany",
                                    figure=drain["consumer_events_per_s"], limit=drain["executemany_events_per_s"],
                                    unit="ev/s", target=100_000))
        limits.append(against_limit(path="consumer alone / raw json_each", figure=drain["consumer_events_per_s"],
                                    limit=drain["json_each_events_per_s"], unit="ev/s", target=100_000))
        report(f"stream_drain{suffix}", "stream consumer alone vs raw SQLite on the same rows",
               ["what", "events", "rows", "seconds", "events/s"],
               [["EventConsumer.run (the real loop)" + (", decoding process" if drain["decode_process"] else ""),
                 drain_events, drain["rows"], round(drain["consumer_s"], 2), round(drain["consumer_events_per_s"])],
                ["raw executemany, same rows", drain_events, drain["rows"],
                 round(drain["executemany_s"], 2), round(drain["executemany_events_per_s"])],
                ["raw json_each, same rows", drain_events, drain["rows"],
                 round(drain["json_each_s"], 2), round(drain["json_each_events_per_s"])]],
               {"drain": drain, "limits": limits[:2],
                "ratio_target": "consumer within 2x of raw executemany (ratio >= 0.5)"})

    floor: dict[str, Any] | None = None
    if "kafka" in backends and not args.skip_kafka_floor:
        # the mock broker's own floors (a test double's limits), same run: see kafka_floor
        floor = kafka_floor(seconds=4.0, producer_threads=args.producer_threads)
        floor["loadavg"] = load_average()
        print(f"kafka floors: bench producer unthrottled {floor['producer_events_per_s']:,}/s "
              f"({floor['producer_cpu_us_per_event']:.2f} us CPU/event); bare confluent consumer "
              f"{floor['bare_consumer']['events_per_s']:,} ev/s ({floor['bare_consumer']['cpu_us_per_event']:.2f} us); "
              f"adapter poll_batch {floor['adapter_poll']['events_per_s']:,} ev/s "
              f"({floor['adapter_poll']['cpu_us_per_event']:.2f} us) (load {floor['loadavg'][0]:.2f})", flush=True)
    stream_results = []
    for backend in backends:
        for rate in rates:
            runs = [stream_run(backend, rate=rate, seconds=seconds, drain=args.drain,
                               producer_threads=args.producer_threads, decode_process=not args.no_decode_process,
                               linger_ms=args.kafka_linger_ms)
                    for _ in range(args.repeats)]
            stream_results.append(_median(runs))
            r = stream_results[-1]
            r["loadavg"] = load_average()
            linger = f" (linger {r['kafka_linger_ms']} ms)" if r.get("kafka_linger_ms") is not None else ""
            print(f"stream {backend:6s}{linger} offered {rate:>8.0f}/s: {r['events_per_s']:>7} ev/s "
                  f"({r['sustained_events_per_s']:,} a second offered persisted within 5 s; offered for "
                  f"{r['offer_seconds']} s after a {r['producer_startup_s']} s producer start-up) "
                  f"p50 {r['p50_ms']:.0f} ms p99 {r['p99_ms']:.0f} ms p99.9 {r['p999_ms']:.0f} ms "
                  f"produced {r['produced']:,} persisted {r['persisted']:,} (unpersisted "
                  f"{r['unpersisted_after_drain']:,}; removed by the broker's retention, read or not, "
                  f"{r['broker_dropped']:,}) "
                  f"mean batch {r['mean_batch']} consumer {r['consumer_cpu_us_per_event']} + decoder "
                  f"{r['decoder_cpu_us_per_event']} us CPU/event "
                  f"(load {r['loadavg'][0]:.2f}); cores used: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores"].items()), flush=True)
            limits.extend(sustained_limits(
                r, at=f"{backend} {rate / 1000:.0f}k/s" + _linger_label(backend, args.kafka_linger_ms), rate=rate,
                alone=drain["consumer_events_per_s"] if drain is not None else None,
                floor=floor if backend == "kafka" else None))
    capture_results = []
    if not skip_capture:
        for backend in backends:
            runs = [capture_run(backend, seconds=args.capture_seconds, clients=args.clients,
                                linger_ms=args.kafka_linger_ms)
                    for _ in range(args.repeats)]
            configured = _median(runs)
            capture_results.append(configured)
            if backend == "kafka" and args.kafka_linger_ms != KAFKA_LINGER_MS:
                # what the linger costs a capture request, against the default's measured beside it
                default = _median([capture_run(backend, seconds=args.capture_seconds, clients=args.clients)
                                   for _ in range(args.repeats)])
                capture_results.append(default)
                limits.append(against_limit(
                    path=f"kafka capture over HTTP ({args.clients} clients x 100 events): request p50 at linger "
                         f"{args.kafka_linger_ms} ms / at the default {KAFKA_LINGER_MS} ms",
                    figure=configured["request_p50_ms"], limit=default["request_p50_ms"], unit="ms",
                    target=APP_RESPONSE_MS, higher_is_better=False))

    print()
    if stream_results:
        print(f"{'stream -> Store':<16}{'offered/s':>10}{'produced/s':>11}{'events/s':>10}{'in 5 s/s':>10}"
              f"{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
              f"{'<=2 s':>8}{'<=5 s':>8}{'left':>8}{'load':>7}")
    for r in stream_results:
        print(f"{r['backend']:<16}{r['offered_rate']:>10.0f}{r['produced_per_s']:>11}{r['events_per_s']:>10}"
              f"{r['sustained_events_per_s']:>10}{r['p50_ms']:>9.0f}"
              f"{r['p99_ms']:>9.0f}{r['p999_ms']:>10.0f}{r['within_2s']:>8.1%}{r['within_5s']:>8.1%}"
              f"{r['unpersisted_after_drain']:>8}{r['loadavg'][0]:>7.2f}")
    if capture_results:
        print(f"\n{'capture (HTTP)':<16}{'clients':>10}{'events/s':>10}{'req p50':>9}{'req p99':>9}{'errors':>8}")
        for r in capture_results:
            name = r["backend"] + _linger_label(r["backend"], r["kafka_linger_ms"])
            print(f"{name:<16}{r['clients']:>10}{r['events_per_s']:>10}{r['request_p50_ms']:>9.1f}"
                  f"{r['request_p99_ms']:>9.1f}{r['errors']:>8}")
    if drain is not None:
        print(f"\nconsumer alone CPU per event: consuming process {drain['consumer_cpu_us_per_event']:.2f} us, "
              f"decoding process {drain['decoder_cpu_us_per_event']:.2f} us")
        print(f"consumer alone {drain['consumer_events_per_s']:,.0f} ev/s; raw executemany "
              f"{drain['executemany_events_per_s']:,.0f} ev/s (ratio "
              f"{drain['consumer_events_per_s'] / drain['executemany_events_per_s']:.2f}, target >= 0.5)")
    report(f"stream{suffix}", "stream: figures against their limits",
           ["path", "figure", "limit", "ratio", "target", "met"],
           [[x["path"], round(x["figure"], 3), round(x["limit"], 3), round(x["ratio"], 3), x["target"],
             "met" if x["met"] else "NOT met"] for x in limits],
           {"args": {k: str(v) for k, v in vars(args).items()}, "drain": drain, "kafka_floor": floor,
            "stream": stream_results,
            "capture": capture_results, "limits": limits})
    if args.output is not None and output != ROOT / "bench" / "results" / f"stream{suffix}.json":
        shutil.copy(ROOT / "bench" / "results" / f"stream{suffix}.json", output)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
