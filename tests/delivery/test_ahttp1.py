"""The asyncio HTTP/1.1 client (the async senders' connection) against the same real socket servers and
the same answers as the thread client's tests: both must read every receiver the same way."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from notify_core.delivery.ahttp1 import TICK_S, AsyncHttp1Connection, deadlines_of
from notify_core.delivery.http1 import MAX_BODY, RESPONSE_TIMEOUTS, Disconnected, ProtocolError
from tests.delivery.test_http1 import HEAD, canned

REQUEST = HEAD + b"{}"


def _run(conn: AsyncHttp1Connection, times: int = 1) -> list[int]:
    async def go() -> list[int]:
        try:
            return [await conn.request(REQUEST) for _ in range(times)]
        finally:
            conn.close()
    return asyncio.run(go())


def test_keep_alive_content_length_chunked_and_interim_answers_on_one_connection() -> None:
    answers = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
               b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: y\r\n\r\n",
               b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    with canned(*answers) as (port, seen):
        conn = AsyncHttp1Connection("127.0.0.1", port, timeout_s=2.0)
        assert _run(conn, len(answers)) == [200, 202, 503]
        assert len(seen) == 3 and seen[0] == REQUEST  # one connection: canned serves one


def test_connection_close_and_a_close_delimited_body_end_the_connection() -> None:
    async def once(port: int) -> tuple[int, bool]:
        conn = AsyncHttp1Connection("127.0.0.1", port, timeout_s=2.0)
        status = await conn.request(REQUEST)
        return status, conn.is_open

    with canned(b"HTTP/1.0 200 OK\r\n\r\nbody until the end", close_after=True) as (port, _seen):
        assert asyncio.run(once(port)) == (200, False)
    with canned(b"HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") as (port, _seen):
        assert asyncio.run(once(port)) == (400, False)


def test_a_silent_close_is_disconnected_and_garbage_is_a_protocol_error() -> None:
    with canned(close_after=True) as (port, _seen):
        conn = AsyncHttp1Connection("127.0.0.1", port, timeout_s=2.0)
        with pytest.raises(Disconnected):
            _run(conn)
        assert not conn.is_open
    for garbage in (b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"):
        with canned(garbage, close_after=True) as (port, _seen):
            conn = AsyncHttp1Connection("127.0.0.1", port, timeout_s=2.0)
            with pytest.raises(ProtocolError):
                _run(conn)
            assert not conn.is_open


def test_a_receiver_that_never_answers_times_out() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        conn = AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.2)
        with pytest.raises(TimeoutError):
            _run(conn)
        assert not conn.is_open
    finally:
        server.close()


def test_a_hostile_receiver_cannot_make_the_sender_buffer_or_wait_without_bound() -> None:
    """A huge announced body is refused unread; chunks count as one body; a head over the limit is refused;
    a receiver trickling its answer is cut at the whole response's deadline."""
    too_big = MAX_BODY + 1
    for answer, match in ((f"HTTP/1.1 200 OK\r\nContent-Length: {too_big}\r\n\r\n".encode(), "limit"),
                          (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{MAX_BODY:x}\r\n".encode()
                           + b"a" * MAX_BODY + b"\r\n10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n", "limit"),
                          (b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * (200 * 1024) + b"\r\n\r\n", "too large")):
        with canned(answer, close_after=True) as (port, _seen):
            conn = AsyncHttp1Connection("127.0.0.1", port, timeout_s=2.0)
            with pytest.raises(ProtocolError, match=match):
                _run(conn)
            assert not conn.is_open
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.05):
                with contextlib.suppress(OSError):
                    conn.sendall(b"X")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        conn = AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            _run(conn)
        assert time.monotonic() - started < 0.2 * RESPONSE_TIMEOUTS + 1.0
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


def test_a_receiver_silent_past_the_timeout_is_a_timeout_on_both_senders() -> None:
    """The thread client bounds every read by ``timeout_s`` (and the whole response by ``RESPONSE_TIMEOUTS``
    of them); the async client bounded only the whole response, so a receiver that said nothing for twice
    ``webhook_timeout_s`` and then answered 200 was a retry (a timeout) on the threaded senders and a
    delivery on the async ones: the same receiver, two outcomes, and the async senders held a connection
    three times as long as the setting says before giving up on a silent receiver."""
    from datetime import UTC, datetime

    from notify_core.clock import ManualClock
    from notify_core.delivery.channels import Message, Outcome, WebhookChannel

    timeout = 0.3
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                stop.wait(2 * timeout)  # silent for twice the timeout, then a plain 200
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    message = Message(notification_id="n1", user_id="u1", campaign_id="c1", title="T", body="hi", link="l",
                      open_pixel="p", send_at="2031-01-01T10:00:00Z")
    channel = WebhookChannel(f"http://127.0.0.1:{server.getsockname()[1]}/hook", secret="s",
                             clock=ManualClock(datetime(2031, 1, 1, 10, tzinfo=UTC)), timeout_s=timeout)
    try:
        threaded = channel.send(message, idempotency_key="n1")
        sender = channel.async_sender()

        async def go() -> Outcome:
            try:
                return (await sender.send(message, idempotency_key="n1")).outcome
            finally:
                sender.close()

        started = time.monotonic()
        on_the_loop = asyncio.run(go())
        waited = time.monotonic() - started
    finally:
        channel.close()
        stop.set()
        server.close()
        thread.join(timeout=5)
    assert threaded.outcome is Outcome.RETRYABLE and threaded.detail.startswith("timeout")
    assert on_the_loop is Outcome.RETRYABLE
    assert waited < 2 * timeout


def _silent_server() -> socket.socket:
    """A listening socket that accepts (the kernel's backlog) and never answers."""
    return socket.create_server(("127.0.0.1", 0))


def test_one_timer_keeps_every_deadline_and_stops_when_nothing_is_in_flight() -> None:
    """Eight requests to a silent receiver on one loop time out together, each within a tick or so of its
    deadline, through the loop's one Deadlines; once they end it holds nothing and its timer has stopped.
    A task whose own request timed out then sends on a live receiver as if nothing had happened (its
    deadline's cancellation was taken back, none is left to hit a later await)."""
    server = _silent_server()
    try:
        async def go() -> tuple[list[BaseException | int], float, bool, bool, bool, list[int]]:
            loop = asyncio.get_running_loop()
            keeper = deadlines_of(loop)
            conns = [AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.2) for _ in range(8)]
            started = time.monotonic()
            outcomes = await asyncio.gather(*(c.request(REQUEST) for c in conns), return_exceptions=True)
            waited = time.monotonic() - started
            await asyncio.sleep(3 * TICK_S)
            idle = not keeper._due and not keeper._expired and not keeper._ticking
            own = AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.1)
            try:
                await own.request(REQUEST)
                own_timed_out = False
            except TimeoutError:
                own_timed_out = True
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            with canned(answer, answer) as (port, _seen):
                live = AsyncHttp1Connection("127.0.0.1", port, timeout_s=2.0)
                answers = [await live.request(REQUEST), await live.request(REQUEST)]
                await asyncio.sleep(3 * TICK_S)  # a cancellation left on this task would land here
                live.close()
            return outcomes, waited, idle, keeper is deadlines_of(loop), own_timed_out, answers

        outcomes, waited, idle, one_keeper, own_timed_out, answers = asyncio.run(asyncio.wait_for(go(), 20))
    finally:
        server.close()
    assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
    assert 0.2 <= waited < 0.2 + 0.5
    assert idle and one_keeper and own_timed_out
    assert answers == [200, 200]


def test_a_cancellation_from_outside_is_not_turned_into_a_timeout() -> None:
    """A task cancelled by its owner (the worker stopping) during a request gets CancelledError, never the
    TimeoutError of a deadline, and leaves no deadline behind; a deadline that passes while the task is
    also cancelled from outside is the outside's cancellation, as asyncio.timeout reads it."""
    server = _silent_server()
    try:
        async def go() -> tuple[bool, bool, bool]:
            loop = asyncio.get_running_loop()
            conn = AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=5.0)
            task = asyncio.ensure_future(conn.request(REQUEST))
            await asyncio.sleep(0.1)
            task.cancel()
            outside = False
            try:
                await task
            except asyncio.CancelledError:
                outside = True
            both_conn = AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=5.0)
            both = asyncio.ensure_future(both_conn.request(REQUEST))
            await asyncio.sleep(0.1)
            keeper = deadlines_of(loop)
            keeper.set(both, loop.time() - 1)  # its deadline passes and the owner cancels it, before it runs again
            keeper._tick()
            both.cancel()
            both_outside = False
            try:
                await both
            except asyncio.CancelledError:
                both_outside = True
            return outside, both_outside, not keeper._due and not keeper._expired and not conn.is_open

        outside, both_outside, clean = asyncio.run(asyncio.wait_for(go(), 20))
    finally:
        server.close()
    assert outside and both_outside and clean


def test_a_loop_that_timed_out_a_request_is_not_kept_alive_by_its_deadlines() -> None:
    """The registry of Deadlines is keyed weakly by loop: one asyncio.run per call (a test, a CLI command)
    must not leave every loop it made, and its Deadlines, behind."""
    import gc
    import weakref

    server = _silent_server()
    try:
        loop = asyncio.new_event_loop()
        conn = AsyncHttp1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.05)
        with pytest.raises(TimeoutError):
            loop.run_until_complete(conn.request(REQUEST))
        loop.run_until_complete(asyncio.sleep(3 * TICK_S))  # the timer's last tick: nothing left in flight
        loop.close()
        gone = weakref.ref(loop)
        del loop, conn
        gc.collect()
    finally:
        server.close()
    assert gone() is None
