"""The webhook's HTTP/1.1 client against a real socket server answering each shape a receiver may use."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from notify_core.delivery.http1 import MAX_BODY, RESPONSE_TIMEOUTS, Disconnected, Http1Connection, ProtocolError

HEAD = b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"


@contextmanager
def canned(*answers: bytes, close_after: bool = False) -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection server: per request read, send the next canned answer; records the requests."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for answer in answers:
                data = b""
                while not data.endswith(b"{}"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                seen.append(data)
                conn.sendall(answer)
            if close_after:
                with contextlib.suppress(OSError):  # the client may have hung up first (ENOTCONN)
                    conn.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, seen
    finally:
        server.close()
        thread.join(timeout=5)


def test_keep_alive_content_length_chunked_and_interim_answers_on_one_connection() -> None:
    answers = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
               b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: y\r\n\r\n",
               b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    with canned(*answers) as (port, seen):
        conn = Http1Connection("127.0.0.1", port, timeout_s=2.0)
        assert [conn.request(HEAD, b"{}") for _ in answers] == [200, 202, 503]
        assert conn.is_open and len(seen) == 3 and seen[0] == HEAD + b"{}"
        conn.close()


def test_connection_close_and_a_close_delimited_body_end_the_connection() -> None:
    with canned(b"HTTP/1.0 200 OK\r\n\r\nbody until the end", close_after=True) as (port, _seen):
        conn = Http1Connection("127.0.0.1", port, timeout_s=2.0)
        assert conn.request(HEAD, b"{}") == 200
        assert not conn.is_open
    with canned(b"HTTP/1.1 400 Bad\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") as (port, _seen):
        conn = Http1Connection("127.0.0.1", port, timeout_s=2.0)
        assert conn.request(HEAD, b"{}") == 400
        assert not conn.is_open


def test_a_silent_close_is_disconnected_and_garbage_is_a_protocol_error() -> None:
    with canned(close_after=True) as (port, _seen):
        conn = Http1Connection("127.0.0.1", port, timeout_s=2.0)
        with pytest.raises(Disconnected):
            conn.request(HEAD, b"{}")
        assert not conn.is_open
    for garbage in (b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with canned(garbage, close_after=True) as (port, _seen):
            conn = Http1Connection("127.0.0.1", port, timeout_s=2.0)
            with pytest.raises(ProtocolError):
                conn.request(HEAD, b"{}")
            assert not conn.is_open


def test_a_receiver_that_never_answers_times_out() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        conn = Http1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.2)
        with pytest.raises(TimeoutError):
            conn.request(HEAD, b"{}")
        assert not conn.is_open
    finally:
        server.close()


def test_a_hostile_receiver_cannot_make_the_sender_buffer_or_wait_without_bound() -> None:
    """A receiver announcing a huge body is refused before it is buffered; chunks count as one body; a
    receiver trickling its answer is cut at the response deadline, not one read timeout per byte."""
    too_big = MAX_BODY + 1
    for answer in (f"HTTP/1.1 200 OK\r\nContent-Length: {too_big}\r\n\r\n".encode(),
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + f"{MAX_BODY:x}\r\n".encode() + b"a" * MAX_BODY + b"\r\n10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n"):
        with canned(answer, close_after=True) as (port, _seen):
            conn = Http1Connection("127.0.0.1", port, timeout_s=2.0)
            with pytest.raises(ProtocolError, match="limit"):
                conn.request(HEAD, b"{}")
            assert not conn.is_open
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.05):  # one header byte every 50 ms: each read well under the timeout
                with contextlib.suppress(OSError):
                    conn.sendall(b"X")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        conn = Http1Connection("127.0.0.1", server.getsockname()[1], timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.request(HEAD, b"{}")
        assert time.monotonic() - started < 0.2 * RESPONSE_TIMEOUTS + 1.0
        assert not conn.is_open
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)
