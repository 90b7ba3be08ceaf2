"""A receiver's answer counts by its status line, whatever its body does after it (over the limit, never
ending), on the thread and the async sender alike."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from notify_core.clock import ManualClock
from notify_core.delivery import WebhookChannel
from notify_core.delivery.channels import AsyncWebhookSender, Message, Outcome, SendResult
from tests.delivery.conftest import SECRET, raw_receiver


def test_an_answer_whose_body_is_refused_or_never_ends_is_classified_by_its_status(clock: ManualClock) -> None:
    """The status line is the receiver's answer: a 200 whose body was over the 1 MiB limit, or never ended
    (a close-delimited body trickled past the response deadline), was a "connection error", RETRYABLE on
    both senders: the accepted notification was sent again on every attempt and dead-lettered at the end,
    and a 400 with such a body was retried instead of dead-lettered. Now the answer counts by its status
    once the head has arrived; the connection is still dropped."""
    cases = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", Outcome.DELIVERED),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2000000\r\n\r\n", Outcome.PERMANENT),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", Outcome.DELIVERED),  # then bytes for ever
    ]
    message = Message(notification_id="n1", user_id="u1", campaign_id="c1", title="T", body="hi", link="l",
                      open_pixel="p", send_at="2031-01-01T10:00:00Z")
    for head, expected in cases:
        with endless(head) as url:
            channel = WebhookChannel(url, secret=SECRET, clock=clock, timeout_s=0.2)
            threaded = channel.send(message, idempotency_key="n1")
            sender = channel.async_sender()

            async def go(sender: AsyncWebhookSender = sender) -> SendResult:
                try:
                    return await sender.send(message, idempotency_key="n1")
                finally:
                    sender.close()

            on_the_loop = asyncio.run(go())
            channel.close()
        assert (threaded.outcome, on_the_loop.outcome) == (expected, expected), (head, threaded, on_the_loop)


@contextmanager
def endless(head: bytes) -> Iterator[str]:
    """A real HTTP server answering each request with ``head`` and then body bytes until the client hangs up."""

    def one(conn: socket.socket, stop: threading.Event) -> None:
        with conn, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(head)
            while not stop.wait(0.02):
                conn.sendall(b"x" * 4096)

    with raw_receiver(one) as url:
        yield url
