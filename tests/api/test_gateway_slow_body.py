"""A client that stops sending its request body gets a 408 and a closed connection, not a request held open.

uvicorn limits the time between requests (keep-alive), not the time a request's body may take: a client
that declared ``content-length: 100`` and sent 7 bytes held its connection and the request open for ever
(no answer after 90 s), so enough such clients (or one buggy one in a loop) ran ``notify serve`` out of
descriptors. The gateway now gives the body :data:`lambdas.gateway.BODY_TIMEOUT_S`. A real server process
and raw sockets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lambdas.gateway import BODY_TIMEOUT_S
from tests.servers import free_port, serve_admin_key, stop_process, wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def test_a_stalled_body_is_answered_408_and_the_connection_closed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", "serve", "--port", str(port), "--data-dir", str(data)],
        cwd=ROOT, env={**os.environ, "NOTIFY_ENV": "local"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, base)
        key = serve_admin_key(data)
        event = b'{"type":"click","user_id":"u1","ts":"2024-03-01T10:00:00Z","campaign_id":"c1","event_id":"slow-1"}'
        head = (f"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(event)}\r\n\r\n").encode()

        # a slow but complete body is still served
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(head + event[:10])
            time.sleep(1.0)
            slow.sendall(event[10:])
            assert slow.recv(65536).startswith(b"HTTP/1.1 202"), "a complete slow body must be captured"

        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(head + event[:7])  # ... and nothing more
            started = time.monotonic()
            # others are served meanwhile
            with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=30) as client:
                assert client.post("/v1/events", content=event.replace(b"slow-1", b"slow-2"),
                                   headers={"content-type": "application/json"}).status_code == 202
            stalled.settimeout(BODY_TIMEOUT_S + 20)
            reply = _read_all(stalled)  # before the fix: socket.timeout, the request still open
            waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"RequestTimeoutError" in reply
        assert BODY_TIMEOUT_S - 1 <= waited <= BODY_TIMEOUT_S + 15, waited
        assert server.poll() is None
    finally:
        stop_process(server)
