"""A client that stops sending its request body gets a 408 and a closed connection, not a request held open.

uvicorn limits the time between requests (keep-alive), not the time a request's body may take: a client
that declared ``content-length: 100`` and sent 7 bytes held its connection and the request open for ever
(no answer after 90 s), so enough such clients (or one buggy one in a loop) ran ``notify serve`` out of
descriptors. The gateway now gives the body ``NOTIFY_REQUEST_BODY_TIMEOUT_S`` (30 s by default; 4 s here, so
the test does not wait half a minute). A real server process and raw sockets.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import notify_serve, serve_admin_key

BODY_TIMEOUT_S = 4.0


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
    with notify_serve(data, env={"NOTIFY_REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}) as (server, base):
        port = int(base.rsplit(":", 1)[1])
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
        assert b"RequestTimeoutError" in reply and b"within 4 s" in reply
        assert BODY_TIMEOUT_S - 1 <= waited <= BODY_TIMEOUT_S + 15, waited
        assert server.poll() is None


def test_the_deadlines_default_to_api_gateways_and_refuse_nonsense(tmp_path: Path) -> None:
    from notify_core.errors import ConfigurationError
    from notify_core.settings import load_settings

    settings = load_settings(data_dir=tmp_path)
    assert (settings.request_headers_timeout_s, settings.request_body_timeout_s) == (10.0, 30.0)
    for bad in ("0", "-1", "301"):
        with pytest.raises(ConfigurationError, match="request_body_timeout_s"):
            load_settings(data_dir=tmp_path, request_body_timeout_s=bad)
