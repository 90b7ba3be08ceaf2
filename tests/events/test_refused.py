"""The events the consumer refused, read back (`notify events refused`, notify_core/events/refused.py): on the
embedded log they sat in a table no command read. Both backends (the embedded log and a real Kafka-protocol
broker); the read moves no consumer group and can be made again."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from typer.testing import CliRunner

from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY
from notify_core.events.consumer import EventConsumer
from notify_core.events.models import VALIDATED_HEADERS, encode_event, parse_event
from notify_core.events.refused import READER_GROUP, refused_events
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.port import Message, Stream
from tests.events.helpers import click, events_clock, order

BAD = [b'{"type": "click", ', json.dumps({**click(1), "colour": "red"}).encode(), b"\xff\xfe not text",
       json.dumps({**click(2), "ts": "2024-13-01T10:00:00Z"}).encode()]


def _consume(stream: Stream, tmp_path: Path, *, expected: int) -> EventConsumer:
    good = [encode_event(parse_event(click(i))) for i in range(3)]
    stream.produce_batch([Message(CLICKSTREAM, b"k%d" % i, v, VALIDATED_HEADERS) for i, v in enumerate([*good, *BAD])]
                         + [Message(PURCHASE_HISTORY, b"o", json.dumps(click(9)).encode())])  # a click on orders
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=3.0)
    assert (totals.persisted, totals.dead_lettered) == (3, expected)
    return consumer


def test_the_refused_events_are_read_back_with_their_reasons(stream_backend: Stream, tmp_path: Path) -> None:
    consumer = _consume(stream_backend, tmp_path, expected=5)
    assert consumer.lag() == 0
    read = refused_events(stream_backend, timeout_s=30)
    assert read.complete and read.read == 5
    by_offset = {(e["topic"], e["partition"], e["offset"]): e for e in read.events}
    assert len(by_offset) == 5 and {e["dlq_topic"] for e in read.events} == {f"{CLICKSTREAM}.dlq",
                                                                              f"{PURCHASE_HISTORY}.dlq"}
    reasons = " | ".join(e["reason"] for e in read.events)
    assert "colour" in reasons and "ts" in reasons and "does not belong on purchase_history" in reasons
    assert [e for e in read.events if "value_b64" in e]  # the bytes that were not text, kept as they were
    assert all(e["failed_at"] and e["timestamp_ms"] for e in read.events)
    assert [e["failed_at"] for e in read.events] == sorted(e["failed_at"] for e in read.events)

    again = refused_events(stream_backend, timeout_s=30)  # nothing moved: the same again
    assert again.events == read.events
    assert consumer.lag() == 0  # the consumer's group is where it was
    newest = refused_events(stream_backend, topics=[CLICKSTREAM], limit=2, timeout_s=30)
    clicks = [e for e in read.events if e["dlq_topic"] == f"{CLICKSTREAM}.dlq"]
    assert newest.complete and newest.events == clicks[-2:]
    consumer.close()
    consumer.store.close()


def test_no_refused_events_is_an_empty_read(stream_backend: Stream) -> None:
    stream_backend.produce_batch([Message(PURCHASE_HISTORY, b"o", encode_event(parse_event(order(1))))])
    read = refused_events(stream_backend, timeout_s=10)
    assert (read.events, read.read, read.complete) == ([], 0, True)


def test_notify_events_refused_prints_one_json_object_a_line(tmp_path: Path) -> None:
    from notify_cli import main
    from notify_core.settings import load_settings
    from notify_core.stream import open_stream

    data = tmp_path / "data"
    settings = load_settings(data_dir=data)
    stream = open_stream(settings)
    try:
        _consume(stream, tmp_path, expected=5).close()
    finally:
        stream.close()
    done = CliRunner().invoke(main.app, ["events", "refused", "--data-dir", str(data)])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 5 and all(line["reason"] and "dlq_offset" in line for line in lines)
    locks = sorted(p.name for p in data.rglob("*.lock"))
    newest = CliRunner().invoke(main.app, ["events", "refused", "--limit", "1", "--data-dir", str(data)])
    assert [json.loads(line) for line in newest.stdout.splitlines()] == lines[-1:]
    assert sorted(p.name for p in data.rglob("*.lock")) == locks  # a read leaves no file behind it


def test_a_read_the_stream_does_not_finish_in_time_says_it_is_incomplete(tmp_path: Path) -> None:
    """A broker that stops answering after the ends were measured: what was read, and that it is not all
    (the CLI then exits 75), never a short list passed off as the whole."""
    from notify_core.stream.local_log import LocalLog

    class Silent(LocalLog):
        def consumer(self, **kwargs: object) -> object:  # type: ignore[override]
            inner = super().consumer(**kwargs)  # type: ignore[arg-type]
            if kwargs["group"] != READER_GROUP:
                return inner  # the event consumer reads as ever

            class Mute:
                def poll_batch(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[object]:
                    return []

                def close(self) -> None:
                    inner.close()
            return Mute()

    stream = Silent(tmp_path / "log.sqlite")
    _consume(stream, tmp_path, expected=5).close()
    read = refused_events(stream, timeout_s=1.0)
    assert (read.events, read.read, read.complete) == ([], 0, False)
    stream.close()
