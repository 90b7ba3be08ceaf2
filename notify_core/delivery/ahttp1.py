"""The asyncio twin of :class:`notify_core.delivery.http1.Http1Connection`: one keep-alive HTTP/1.1
connection driven by an event loop, so one thread keeps many requests in flight.

Why: with one blocking connection per sending thread, 16 threads take turns on one GIL and every
``recv`` hands it back and forth; the sender's CPU per request was several times the receiver's
(``bench/results/delivery*.json``). Here the waiting is the event loop's, and a request costs a write and
a read of one buffer. It answers what the thread client answers, with the same bounds: ``Content-Length``,
chunked and close-delimited bodies, interim ``1xx``, keep-alive and ``Connection: close``, TLS through an
``ssl.SSLContext``; a head over :data:`~notify_core.delivery.http1.MAX_HEAD` or a body over
:data:`~notify_core.delivery.http1.MAX_BODY` is a :class:`ProtocolError`, each read must return within
``timeout_s`` and the whole response arrive within ``timeout_s * RESPONSE_TIMEOUTS`` (a receiver trickling
a byte a second cannot hold a sender for ever). A read here is one step (the head, a body, a chunk line),
where the thread client's is one ``recv``.

The two deadlines of a request are kept by :class:`Deadlines`, one timer per event loop for every request
in flight, not by ``asyncio.timeout_at``: its timer and the reschedule to the second deadline cost ~8-11 us a
request on uvloop (measured here), ~2-3 % of a delivery's CPU at thousands of deliveries a second, where
setting a number in a dict costs well under a microsecond. A deadline is noticed within :data:`TICK_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import weakref
from typing import Any

from notify_core.delivery.http1 import (
    MAX_BODY,
    MAX_HEAD,
    RESPONSE_TIMEOUTS,
    Disconnected,
    ProtocolError,
    keeps_alive,
    parse_head,
)

__all__ = ["TICK_S", "AsyncHttp1Connection", "Deadlines", "deadlines_of"]

TICK_S = 0.01  # how often the shared timer looks at the deadlines while requests are in flight


class Deadlines:
    """The deadlines of the requests in flight on one event loop, looked at by one timer every :data:`TICK_S`.

    A request :meth:`set` s its task's deadline (again, to move it) and :meth:`clear` s it when it ends; a task
    still there past its deadline is cancelled, as ``asyncio.timeout_at`` cancels it, and ``clear`` then says
    that the ``CancelledError`` is this deadline's (for the request to turn into ``TimeoutError``). The timer
    runs only while some request is in flight: an idle loop is not woken. It holds no reference to its loop
    (the registry's weak key would never let a loop go), so each call runs on the loop it belongs to.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled by their deadline, until cleared
        self._ticking = False

    def set(self, task: asyncio.Task[Any], at: float) -> None:
        self._due[task] = at
        if not self._ticking:
            self._ticking = True
            asyncio.get_running_loop().call_later(TICK_S, self._tick)

    def clear(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``'s deadline; whether the deadline had passed and cancelled it."""
        self._due.pop(task, None)
        if self._expired and task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = [task for task, at in self._due.items() if at <= now]
        for task in late:
            del self._due[task]
            self._expired.add(task)
            task.cancel()
        if self._due:
            loop.call_later(TICK_S, self._tick)
        else:
            self._ticking = False


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()


def deadlines_of(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The one :class:`Deadlines` of ``loop`` (made on first use, gone with the loop)."""
    keeper = _DEADLINES.get(loop)
    if keeper is None:
        keeper = _DEADLINES[loop] = Deadlines()
    return keeper


class AsyncHttp1Connection:
    """One keep-alive connection to ``host:port`` for one coroutine at a time (not shared)."""

    def __init__(self, host: str, port: int, *, timeout_s: float, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.tls = tls
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the running request's loop (see _in_time)
        self._deadlines: Deadlines | None = None  # that loop's (looked up once per loop, not per request)
        self.retry_after: bytes | None = None  # the last final response's Retry-After (the worker honours it)
        # the status of this request's final answer once its head is read, even if its body then fails
        self.answered: int | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    async def _open(self) -> None:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls is not None else None,
            limit=MAX_HEAD)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer

    async def request(self, data: bytes) -> int:
        """Send a complete request (head, blank line and body in ``data``) and read the whole response;
        returns its status. Raises ``TimeoutError``, :class:`Disconnected`, ``OSError`` or
        :class:`ProtocolError`; after any of them the connection is closed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._deadlines is None:
            self._loop, self._deadlines = loop, deadlines_of(loop)
        deadlines = self._deadlines
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()  # cancellations already asked of the task before this request
        started = loop.time()
        self.answered = None
        try:
            # The head within timeout_s (the wait that matters: a silent receiver is cut there, as the thread
            # client cuts it), then the whole response within RESPONSE_TIMEOUTS of them; each body read is
            # judged by timeout_s once it returns (_in_time). Two numbers set a request, not a timer re-armed
            # before every read (3 a request, on the path of 5,000 deliveries a second).
            deadlines.set(task, started + self.timeout_s)
            if self._writer is None:
                await self._open()
            assert self._reader is not None and self._writer is not None
            self._writer.write(data)
            first = True
            while True:
                status, headers, version = await self._read_head(first=first)
                first = False
                if 100 <= status < 200 and status != 101:
                    continue  # interim (100 Continue, 103 Early Hints): the real answer follows
                break
            self.retry_after = headers.get(b"retry-after")
            self.answered = status
            deadlines.set(task, started + self.timeout_s * RESPONSE_TIMEOUTS)
            await self._read_body(status, headers)
            deadlines.clear(task)  # no mark here: the timer runs between steps, so a cancel would have been raised
            if not keeps_alive(headers, version):
                self.close()
            return status
        except BaseException as exc:
            expired = deadlines.clear(task)
            self.close()
            # our deadline's cancellation, and no other one asked of the task: a timeout (as asyncio.timeout)
            if expired and isinstance(exc, asyncio.CancelledError) and task.uncancel() <= cancelling:
                raise TimeoutError(f"no complete response within the deadline ({self.timeout_s} s a read)") from None
            raise

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _in_time(self, started: float) -> None:
        """A TimeoutError when the read begun at ``started`` took longer than ``timeout_s``. Why: the thread
        client bounds each read by ``timeout_s``; bounding only the whole response let a receiver silent for
        up to ``RESPONSE_TIMEOUTS`` timeouts count as delivered here and as a timeout (a retry) there."""
        if self._now() - started > self.timeout_s:
            raise TimeoutError(f"a read of the response took over {self.timeout_s} s")

    async def _read_head(self, *, first: bool) -> tuple[int, dict[bytes, bytes], bytes]:
        assert self._reader is not None
        started = self._now()
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if first and not exc.partial:
                raise Disconnected("the server closed the connection before answering") from None
            raise ProtocolError("connection closed inside the response head") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("response head too large") from None
        self._in_time(started)
        return parse_head(head[:-4])

    async def _take(self, n: int) -> None:
        if n > MAX_BODY:
            raise ProtocolError(f"response body of {n} bytes is over the {MAX_BODY}-byte limit")
        assert self._reader is not None
        started = self._now()
        try:
            await self._reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside the response body") from None
        self._in_time(started)

    async def _line(self) -> bytes:
        assert self._reader is not None
        started = self._now()
        try:
            line = await self._reader.readuntil(b"\r\n")
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside a chunked body") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("chunk header too long") from None
        self._in_time(started)
        return line[:-2]

    async def _read_body(self, status: int, headers: dict[bytes, bytes]) -> None:
        if status in (204, 304):
            return
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            total = 0
            while True:
                size_text = (await self._line()).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError as exc:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from exc
                if size == 0:
                    while await self._line():  # trailers, then the blank line
                        pass
                    return
                total += size
                await self._take(size if total <= MAX_BODY else MAX_BODY + 1)
                if await self._line():
                    raise ProtocolError("chunk not followed by CRLF")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            await self._take(int(length))
            return
        # No length: the body runs to the end of the connection.
        assert self._reader is not None
        received = 0
        while True:
            started = self._now()
            chunk = await self._reader.read(65536)
            self._in_time(started)
            if not chunk:
                break
            received += len(chunk)
            if received > MAX_BODY * 16:
                raise ProtocolError("close-delimited response body too large")
        self.close()
