"""A client that never completes its request headers (or sends nothing) gets a 408 and a closed connection.

uvicorn times the idle gap after a response, not a request whose line and headers never end: such a
connection was held open for ever (slowloris: one descriptor per slow client until ``notify serve`` runs
out). The gateway's protocol now gives the headers ``NOTIFY_REQUEST_HEADERS_TIMEOUT_S`` (10 s by default; 4 s
here), from the connection or the request's first byte. A real server process and raw sockets.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.servers import notify_serve

HEADERS_TIMEOUT_S = 4.0


def _until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_request_whose_headers_never_end_is_closed_and_others_are_served(tmp_path: Path) -> None:
    with notify_serve(tmp_path / "data", env={"NOTIFY_REQUEST_HEADERS_TIMEOUT_S": str(HEADERS_TIMEOUT_S)}) as (
            server, base):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as partial, \
                socket.create_connection(("127.0.0.1", port)) as silent:
            partial.sendall(b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # ... and nothing more
            started = time.monotonic()
            # a slow but complete request line and headers are still served, and others meanwhile
            with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
                for part in (b"GET /openapi.json HTTP/1.1\r\n", b"host: 127.0.0.1\r\n", b"connection: close\r\n\r\n"):
                    slow.sendall(part)
                    time.sleep(0.5)
                assert _until_closed(slow).startswith(b"HTTP/1.1 200")
            assert httpx.get(f"{base}/openapi.json", timeout=30).status_code == 200
            for sock in (partial, silent):
                sock.settimeout(HEADERS_TIMEOUT_S + 20)
            replies = [_until_closed(partial), _until_closed(silent)]  # before: socket.timeout, held open
            waited = time.monotonic() - started
        assert all(reply.startswith(b"HTTP/1.1 408") for reply in replies), replies
        assert HEADERS_TIMEOUT_S - 1 <= waited <= HEADERS_TIMEOUT_S + 15, waited
        assert server.poll() is None and httpx.get(f"{base}/openapi.json", timeout=30).status_code == 200
