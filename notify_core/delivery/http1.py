"""A minimal HTTP/1.1 client connection for the webhook channel: one request head + body out in one
``sendall``, the response read from one buffer.

Why not ``http.client``: per request it builds the head line by line, sends head and body in separate
writes, and parses the response headers through the ``email`` package's feed parser. At the delivery
target (5,000 POSTs/s from one process, every sender sharing one GIL) that parsing and copying was the
largest part of the sender's CPU: the sender floor went from ~3,800/s (``http.client``) to the figure in
``bench/results/delivery*.json`` with this class. What it supports is what a webhook receiver can answer
with: ``Content-Length``, ``Transfer-Encoding: chunked`` and close-delimited bodies, interim ``1xx``
responses, keep-alive and ``Connection: close``, and TLS through an ``ssl.SSLContext`` (certificates
verified by default). Anything else malformed is a :class:`ProtocolError`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

MAX_HEAD = 64 * 1024  # a response head larger than this is not a webhook receiver's answer
MAX_BODY = 1024 * 1024  # the body is read (to keep the connection usable) but never kept past this
RESPONSE_TIMEOUTS = 3  # a whole response may take this many read timeouts, however it is trickled


class ProtocolError(Exception):
    """The peer answered something that is not HTTP/1.x."""


class Disconnected(ConnectionError):
    """The peer closed the connection before sending a byte of the response (an idle keep-alive
    connection the server dropped: the caller may retry once on a new connection)."""


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """A response head without its blank line -> (status, lower-cased headers, version); shared by the
    thread client here and the asyncio one (:mod:`notify_core.delivery.ahttp1`)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, parts[0]


def keeps_alive(headers: dict[bytes, bytes], version: bytes) -> bool:
    connection = headers.get(b"connection", b"").lower()
    return not (connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive"))


class Http1Connection:
    """One keep-alive connection to ``host:port`` (not thread-safe: one per sending thread)."""

    def __init__(self, host: str, port: int, *, timeout_s: float, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.tls = tls
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._deadline = 0.0
        self.retry_after: bytes | None = None  # the last final response's Retry-After (the worker honours it)
        # the status of this request's final answer once its head is read, even if its body then fails
        self.answered: int | None = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buf.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        return sock

    def request(self, head: bytes, body: bytes) -> int:
        """Send a complete request (``head`` ends with the blank line) and read the whole response;
        returns its status. Raises ``TimeoutError``, :class:`Disconnected`, ``OSError`` or
        :class:`ProtocolError`; after any of them the connection is closed."""
        self._deadline = time.monotonic() + self.timeout_s * RESPONSE_TIMEOUTS
        self.answered = None
        try:
            if self._sock is None:
                self._sock = self._open()
            self._sock.settimeout(self.timeout_s)
            self._sock.sendall(head + body)
            while True:
                status, headers, version = self._read_head()
                if 100 <= status < 200 and status != 101:
                    continue  # interim (100 Continue, 103 Early Hints): the real answer follows
                break
            self.retry_after = headers.get(b"retry-after")
            self.answered = status
            self._read_body(status, headers)
            connection = headers.get(b"connection", b"").lower()
            if connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive"):
                self.close()
            return status
        except BaseException:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------------
    def _recv(self) -> bytes:
        """One read, bounded by the time left to the whole response: a receiver that trickles a byte a
        second must not hold a sender thread for ever (each read alone would stay under the timeout)."""
        assert self._sock is not None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the response took longer than its deadline")
        self._sock.settimeout(min(left, self.timeout_s))
        return self._sock.recv(65536)

    def _read_head(self) -> tuple[int, dict[bytes, bytes], bytes]:
        first = True
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("response head too large")
            chunk = self._recv()
            if not chunk:
                if first and not self._buf:
                    raise Disconnected("the server closed the connection before answering")
                raise ProtocolError("connection closed inside the response head")
            first = False
            self._buf += chunk
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        return parse_head(head)

    def _take(self, n: int) -> None:
        """Consume exactly ``n`` body bytes (at most :data:`MAX_BODY`: a receiver announcing more is refused
        before a byte of it is buffered, so a hostile endpoint cannot make the worker hold gigabytes)."""
        if n > MAX_BODY:
            raise ProtocolError(f"response body of {n} bytes is over the {MAX_BODY}-byte limit")
        while len(self._buf) < n:
            chunk = self._recv()
            if not chunk:
                raise ProtocolError("connection closed inside the response body")
            self._buf += chunk
        del self._buf[:n]

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            if len(self._buf) > MAX_HEAD:
                raise ProtocolError("chunk header too long")
            chunk = self._recv()
            if not chunk:
                raise ProtocolError("connection closed inside a chunked body")
            self._buf += chunk

    def _read_body(self, status: int, headers: dict[bytes, bytes]) -> None:
        if status in (204, 304):
            return
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            total = 0
            while True:
                size_text = self._line().split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError as exc:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from exc
                if size == 0:
                    while self._line():  # trailers, then the blank line
                        pass
                    return
                total += size
                self._take(size if total <= MAX_BODY else MAX_BODY + 1)  # the whole body, not each chunk
                if self._line():
                    raise ProtocolError("chunk not followed by CRLF")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            self._take(int(length))
            return
        # No length: the body runs to the end of the connection.
        received = len(self._buf)
        self._buf.clear()
        while True:
            chunk = self._recv()
            if not chunk:
                break
            received += len(chunk)
            if received > MAX_BODY * 16:
                raise ProtocolError("close-delimited response body too large")
        self.close()
