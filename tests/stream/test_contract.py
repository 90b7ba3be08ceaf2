"""One contract for the Stream port, run against the embedded log and a real Kafka-protocol broker."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from notify_core.stream.port import Message, Record, Stream, StreamConsumer

ROOT = Path(__file__).resolve().parents[2]


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def drain(consumer: StreamConsumer, n: int, *, timeout: float = 20.0) -> list[Record]:
    """Poll until ``n`` records arrived (a Kafka consumer first has to join its group)."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < n and time.monotonic() < deadline:
        records += consumer.poll_batch(max_records=n - len(records), timeout=0.5)
    return records


def produce(stream: Stream, name: str, count: int, *, keys: int = 7, start: int = 0) -> list[Message]:
    messages = [Message(name, f"user-{i % keys}".encode(), f"value-{i}".encode()) for i in range(start, start + count)]
    stream.produce_batch(messages)
    return messages


def test_round_trip_keeps_keys_values_and_per_key_order(stream_backend: Stream) -> None:
    name = topic()
    sent = produce(stream_backend, name, 300)
    consumer = stream_backend.consumer(group="g", topics=[name])
    got = drain(consumer, 300)
    consumer.close()
    assert sorted((r.key, r.value) for r in got) == sorted((m.key, m.value) for m in sent)
    for key in {m.key for m in sent}:
        assert [r.value for r in got if r.key == key] == [m.value for m in sent if m.key == key]
    now_ms = time.time() * 1000
    assert all(now_ms - 60_000 < r.timestamp_ms <= now_ms + 1000 for r in got)
    # the same key always lands in the same partition
    assert all(len({r.partition for r in got if r.key == key}) == 1 for key in {r.key for r in got})


def test_committed_position_survives_the_consumer(stream_backend: Stream) -> None:
    name = topic()
    produce(stream_backend, name, 100)
    first = stream_backend.consumer(group="g", topics=[name])
    got = drain(first, 100)
    first.commit(got[:40] if len({r.partition for r in got}) == 1 else got)
    committed = {(r.topic, r.partition, r.offset) for r in (got[:40] if len({r.partition for r in got}) == 1 else got)}
    first.close()
    produce(stream_backend, name, 20, start=100)
    second = stream_backend.consumer(group="g", topics=[name])
    rest = drain(second, 120 - len(committed), timeout=20)
    second.close()
    assert not committed & {(r.topic, r.partition, r.offset) for r in rest}
    assert len(committed) + len(rest) == 120


def test_uncommitted_records_are_delivered_again(stream_backend: Stream) -> None:
    name = topic()
    produce(stream_backend, name, 50)
    first = stream_backend.consumer(group="g", topics=[name])
    assert len(drain(first, 50)) == 50
    first.close()  # no commit: as if it crashed before its Store write
    second = stream_backend.consumer(group="g", topics=[name])
    assert len(drain(second, 50)) == 50
    second.close()


def test_a_new_group_starts_at_offset_zero_and_groups_are_independent(stream_backend: Stream) -> None:
    name = topic()
    produce(stream_backend, name, 30)
    a = stream_backend.consumer(group="a", topics=[name])
    a.commit(drain(a, 30))
    a.close()
    b = stream_backend.consumer(group="b", topics=[name])
    assert len(drain(b, 30)) == 30
    b.close()


def test_lag_counts_what_the_group_has_not_committed(stream_backend: Stream) -> None:
    name = topic()
    produce(stream_backend, name, 80)
    consumer = stream_backend.consumer(group="g", topics=[name])
    assert consumer.lag() == 80
    got = drain(consumer, 80)
    assert consumer.lag() == 80  # read is not committed
    consumer.commit(got)
    assert consumer.lag() == 0
    produce(stream_backend, name, 5, start=80)
    assert consumer.lag() == 5
    consumer.close()


def test_seek_to_beginning_replays_everything(stream_backend: Stream) -> None:
    name = topic()
    produce(stream_backend, name, 60)
    consumer = stream_backend.consumer(group="g", topics=[name])
    first = drain(consumer, 60)
    consumer.commit(first)
    consumer.seek_to_beginning()
    again = drain(consumer, 60)
    consumer.close()
    assert sorted(r.value for r in again) == sorted(r.value for r in first)


def test_one_batch_spans_topics_and_end_offsets_count_it(stream_backend: Stream) -> None:
    a, b = topic(), topic()
    stream_backend.produce_batch([Message(a, b"k", b"1"), Message(b, b"k", b"2"), Message(a, b"k", b"3")])
    assert sum(stream_backend.end_offsets(a).values()) == 2
    assert sum(stream_backend.end_offsets(b).values()) == 1
    consumer = stream_backend.consumer(group="g", topics=[a, b])
    got = drain(consumer, 3)
    consumer.close()
    assert sorted(r.value for r in got) == [b"1", b"2", b"3"]
    assert [r.value for r in got if r.topic == a] == [b"1", b"3"]


def test_poll_on_an_empty_topic_returns_within_its_timeout(stream_backend: Stream) -> None:
    consumer = stream_backend.consumer(group="g", topics=[topic()])
    started = time.monotonic()
    assert consumer.poll_batch(max_records=10, timeout=0.3) == []
    assert time.monotonic() - started < 3.0
    consumer.close()


def test_poll_returns_what_is_there_without_waiting_for_a_full_batch(stream_backend: Stream) -> None:
    """``timeout`` bounds the wait for the first record only: a poll never sits on records it has."""
    name = topic()
    produce(stream_backend, name, 3)
    consumer = stream_backend.consumer(group="g", topics=[name])
    assert len(drain(consumer, 1)) == 1  # joined, and the others are fetched by now or soon
    got: list[Record] = []
    started = time.monotonic()
    while len(got) < 2 and time.monotonic() - started < 10:
        got += consumer.poll_batch(max_records=1000, timeout=5.0)
    consumer.close()
    assert len(got) == 2
    assert time.monotonic() - started < 2.5  # not the 5 s timeout


def test_records_produced_by_another_process_are_consumed(stream_backend: Stream, tmp_path: Path) -> None:
    """The gateway produces in one process, the consumer reads in another."""
    name = topic()
    if type(stream_backend).__name__ == "LocalLog":
        target = f"LocalLog({str(stream_backend.path)!r})"  # type: ignore[attr-defined]
        imports = "from notify_core.stream.local_log import LocalLog"
    else:
        target = f"KafkaStream(bootstrap_servers={stream_backend.bootstrap_servers!r})"  # type: ignore[attr-defined]
        imports = "from notify_core.stream.kafka import KafkaStream"
    code = (
        f"{imports}\nfrom notify_core.stream.port import Message\ns = {target}\n"
        f"s.produce_batch([Message({name!r}, b'k', str(i).encode()) for i in range(25)])\ns.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    consumer = stream_backend.consumer(group="g", topics=[name])
    got = drain(consumer, 25)
    consumer.close()
    assert [r.value for r in got] == [str(i).encode() for i in range(25)]


@pytest.mark.parametrize("bad", ["", "has space", "x" * 300])
def test_local_log_rejects_bad_topic_names(tmp_path: Path, bad: str) -> None:
    from notify_core.errors import ValidationError
    from notify_core.stream.local_log import LocalLog

    log = LocalLog(tmp_path / "log.sqlite")
    with pytest.raises(ValidationError):
        log.produce(bad, None, b"x")
    log.close()


def test_local_log_survives_kill_9_of_a_producer(tmp_path: Path) -> None:
    """Batches acknowledged before a SIGKILL are all there afterwards, and the log still opens and appends."""
    from notify_core.stream.local_log import LocalLog

    path = tmp_path / "log.sqlite"
    code = (
        "import sys\nfrom notify_core.stream.local_log import LocalLog\nfrom notify_core.stream.port import Message\n"
        f"log = LocalLog({str(path)!r})\n"
        "for b in range(100000):\n"
        "    log.produce_batch([Message('t', b'k', b'%d-%d' % (b, i)) for i in range(100)])\n"
        "    print(b, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= 200:
            break
    proc.kill()
    proc.wait()
    log = LocalLog(path)
    end = log.end_offsets("t")[0]
    assert end >= (acked + 1) * 100 and end % 100 == 0  # whole batches only, every acknowledged one kept
    log.produce("t", b"k", b"after")
    assert log.end_offsets("t")[0] == end + 1
    log.close()


def test_each_record_keeps_its_own_headers_through_runs_of_equal_ones(stream_backend: Stream) -> None:
    """Consecutive records often share headers (one capture request's id and mark); adapters may reuse a
    converted run (Kafka does), so a change of headers, their absence and an empty value must still land
    on exactly the records that carried them."""
    name = topic()
    runs: list[tuple[tuple[str, bytes], ...]] = [
        (("x-request-id", b"req-1"), ("x-notify-validated", b"1")),
        (("x-request-id", b"req-2"), ("x-notify-validated", b"1")),
        (),
        (("x-request-id", b"req-2"), ("x-notify-validated", b"1")),
        (("x-request-id", b"req-3"), ("x-empty", b"")),
    ]
    sent = [Message(name, b"one-key", f"v{r}-{i}".encode(), headers) for r, headers in enumerate(runs)
            for i in range(40)]
    stream_backend.produce_batch(sent)
    consumer = stream_backend.consumer(group="g", topics=[name])
    got = drain(consumer, len(sent))
    consumer.close()
    assert [(r.value, r.headers) for r in got] == [(m.value, tuple(m.headers)) for m in sent]
