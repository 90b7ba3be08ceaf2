"""A receiver's ``Retry-After`` on a retryable answer (429, 503, 408, 425): the retry waits at least that long."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WebhookChannel, WorkerOptions
from notify_core.delivery.channels import Message, Outcome, retry_after_s
from notify_core.delivery.synthetic import seed_due
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import SECRET, minute_start, raw_receiver

OPTS = WorkerOptions(concurrency=2, lookback_minutes=3, prefetch_s=0.0, heartbeat_s=0.0)


@contextmanager
def answering(answer: bytes) -> Iterator[str]:
    """A real HTTP server answering every request with ``answer`` (keep-alive); yields its URL."""

    def one(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            data = b""
            while not stop.is_set():
                end = data.find(b"\r\n\r\n")
                if end >= 0:
                    length = int(next((line.split(b":")[1] for line in data[:end].split(b"\r\n")
                                       if line.lower().startswith(b"content-length:")), b"0"))
                    if len(data) >= end + 4 + length:
                        data = data[end + 4 + length:]
                        conn.sendall(answer)
                        continue
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk

    with raw_receiver(one) as url:
        yield url


def test_a_429_with_retry_after_is_retried_no_sooner_than_the_receiver_asked(
        store: SqliteStore, clock: ManualClock) -> None:
    """Both senders dropped the response's headers, so a rate-limited receiver answering 429 with
    ``Retry-After: 120`` was retried on the fixed schedule (1 s, 5 s, 20 s): four attempts inside the
    receiver's own back-off window, each refused again, and the notification dead-lettered 26 s later
    although the receiver had only asked for two minutes. Now the retry is due no sooner than the
    receiver asked (delta-seconds or an HTTP-date, capped), on the thread and the async sender alike."""
    answer = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n"
    (item,) = seed_due(store, n=1, start=minute_start(clock.now()))
    with answering(answer) as url:
        channel = WebhookChannel(url, secret=SECRET, clock=clock, timeout_s=2.0)
        worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
        now = clock.now()
        summary = worker.run_pass()
        worker.close()
        assert summary.retried == 1
        row = store.table(tables.SCHEDULES).get(item["pk"], item["sk"])
        assert row is not None and row["status"] == "retry_scheduled" and row["next_attempt_at"] >= now + 120
        message = Message(notification_id="n1", user_id="u1", campaign_id="c1", title="T", body="hi", link="l",
                          open_pixel="p", send_at="2031-01-01T10:00:00Z")
        sender = channel.async_sender()

        async def go() -> float | None:
            try:
                result = await sender.send(message, idempotency_key="n1")
                assert result.outcome is Outcome.RETRYABLE
                return result.retry_after_s
            finally:
                sender.close()

        on_the_loop = asyncio.run(go())
        threaded = channel.send(message, idempotency_key="n1").retry_after_s
        channel.close()
    assert threaded == on_the_loop == 120.0


def test_retry_after_as_an_http_date_is_read_against_the_channel_clock(clock: ManualClock) -> None:
    now = clock.now()
    date = format_datetime(datetime.fromtimestamp(now, UTC), usegmt=True)
    assert retry_after_s(b"120", now=now) == 120.0
    assert retry_after_s(date.encode(), now=now - 30) == 30.0
    assert retry_after_s(b"soon", now=now) is None and retry_after_s(None, now=now) is None
    assert retry_after_s(b"-5", now=now) is None
    assert retry_after_s(b"99999999", now=now) == 3600.0  # capped: a receiver cannot park a message for ever

