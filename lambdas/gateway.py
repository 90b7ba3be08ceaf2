"""The local HTTP gateway (``notify serve``): API Gateway's job on one machine.

Each HTTP request becomes an API Gateway HTTP API v2 event and goes to the *same* Lambda handler that
runs in AWS, so the app, the tests and the benchmarks exercise the real handlers over HTTP.
Starlette on uvicorn: the event loop takes connections; the (synchronous) handlers run in its thread
pool, so a handler waiting on I/O (a Kafka acknowledgement, a model load) never blocks the others.
Routes marked ``inline`` are CPU-bound and never wait (recommendations: ~0.5 ms of numpy and local
reads): they run on the loop itself, which saves the thread hop (~0.2 ms and a GIL hand-off per
request), and ``--workers`` gives them the other cores. Routes also marked ``coalesce`` (recommendations)
run the requests waiting on a worker as one batch (:class:`_Together`): each request's handler runs as it
would alone, but the asks they share (:func:`notify_core.coalesce.ask`: the users to rank) are answered
by one call (one ranking of all of them: ~half a lone request's CPU each). To serve a new function, add one
line to :data:`ROUTES` (handlers are imported lazily, by dotted name).

The gateway itself answers JSON in the handlers' error shape for unknown paths (404) and methods (405),
serves the OpenAPI document generated from the handlers' models at ``/openapi.json`` and a
self-contained docs page at ``/docs`` (no CDN: it renders the document in the page). API keys are checked
by the handlers (:mod:`lambdas.edge`), exactly as on Lambda, not here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import importlib
import itertools
import logging
import re
import time
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdas.http import ApiEvent, Handler
from lambdas.routes import ROUTES, GatewayRoute
from notify_core.coalesce import run_together
from notify_core.metrics import observe_request
from notify_core.settings import REQUEST_BODY_TIMEOUT_S, REQUEST_HEADERS_TIMEOUT_S

_RUN = uuid.uuid4().hex[:12]  # request ids: unique per process start + a counter (uuid4 costs ~20 us)
_REQUESTS = itertools.count(1)
MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit: bigger bodies never reach a handler
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded")


def _load(dotted: str) -> Handler:
    module, _, name = dotted.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


class _Context:
    """The bits of a LambdaContext handlers may read."""

    def __init__(self, function_name: str, request_id: str) -> None:
        self.function_name = function_name
        self.aws_request_id = request_id
        self.memory_limit_in_mb = 1024

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class _BodyTimeout(Exception):
    """The client did not send its whole body in time (``NOTIFY_REQUEST_BODY_TIMEOUT_S``)."""


async def _read_body(request: Request, limit: int, *, timeout: float) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` (a 10 MB upload is cut off, not buffered);
    ``_BodyTimeout`` when it has not all arrived within ``timeout`` seconds (a stalled client)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        raise _BodyTimeout from None
    return b"".join(chunks)


@functools.lru_cache(maxsize=256)
def _hostname(scheme: str, server: tuple[str, int] | None, host_header: bytes | None) -> str | None:
    """The URL hostname Starlette derives from the Host header (else the server address), computed by
    Starlette itself once per distinct header: building a ``URL`` per request was a third of the
    translation's cost."""
    headers = [(b"host", host_header)] if host_header is not None else []
    return URL(scope={"type": "http", "scheme": scheme, "server": server, "path": "/", "query_string": b"",
                      "headers": headers}).hostname


def _url_path(path: str) -> str:
    """``request.url.path`` without building the URL: Starlette's escapes, then the characters
    ``urllib.parse.urlsplit`` removes from any URL (tab, CR, LF)."""
    escaped = path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    return escaped if escaped.isprintable() else escaped.replace("\t", "").replace("\r", "").replace("\n", "")


_CLOCK_TEXT: list[Any] = [None, ""]  # (second, its requestContext.time text): one strftime a second


def _time_text(now: float) -> str:
    second = int(now)
    if _CLOCK_TEXT[0] != second:
        _CLOCK_TEXT[1] = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        _CLOCK_TEXT[0] = second
    return str(_CLOCK_TEXT[1])


def to_api_event(request: Request, route: GatewayRoute, body: bytes) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event for this request.

    Read from the ASGI scope directly (the values Starlette's ``Request`` would give: tests/api checks
    they agree): its ``URL`` and ``Headers`` objects cost more than the rest of the translation, which runs
    on every request of every route.
    """
    now = time.time()
    scope = request.scope
    headers: dict[str, str] = {}
    host_header: bytes | None = None
    client_rid: str | None = None  # the first X-Request-ID, as Starlette's Headers.get answers
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if name in headers:
            headers[name] = f"{headers[name]},{value}"
            continue
        headers[name] = value
        if raw_name == b"host":
            host_header = raw_value
        elif raw_name == b"x-request-id":
            client_rid = value
    # A client's id is kept only if it is short and plain: it lands in every log line and Store row.
    rid = client_rid if client_rid and _CLIENT_REQUEST_ID.match(client_rid) else f"{_RUN}-{next(_REQUESTS):x}"
    content_type = headers.get("content-type", "application/json")
    text = not body or content_type.startswith(_TEXT_TYPES)
    if text:
        try:
            body_text, b64 = body.decode(), False
        except UnicodeDecodeError:
            body_text, b64 = base64.b64encode(body).decode(), True
    else:
        body_text, b64 = base64.b64encode(body).decode(), True
    raw_query: bytes = scope.get("query_string", b"")
    query: dict[str, str] = {}
    query_text = ""
    if raw_query:
        for name, value in parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        query_text = urlsplit("?" + raw_query.decode()).query
    path = _url_path(scope["path"])
    client = scope.get("client")
    server = scope.get("server")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{route.method} {route.path}",
        "rawPath": path,
        "rawQueryString": query_text,
        "headers": headers,
        "requestContext": {
            "accountId": "local",
            "apiId": "local",
            "domainName": _hostname(scope.get("scheme", "http"), tuple(server) if server else None,
                                    host_header) or "localhost",
            "http": {
                "method": scope["method"],
                "path": path,
                "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
                "sourceIp": client[0] if client else "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": rid,
            "routeKey": f"{route.method} {route.path}",
            "stage": "$default",
            "time": _time_text(now),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": b64,
    }
    if body:
        event["body"] = body_text
    if query:
        event["queryStringParameters"] = query
    path_params = scope.get("path_params")
    if path_params:
        event["pathParameters"] = {k: str(v) for k, v in path_params.items()}
    return event


def to_response(reply: Any) -> Response:
    """A Lambda proxy reply (dict with statusCode/headers/body) as an HTTP response."""
    if not isinstance(reply, dict) or "statusCode" not in reply:
        return JSONResponse(reply)
    body = reply.get("body") or ""
    content = base64.b64decode(body) if reply.get("isBase64Encoded") else str(body).encode()
    headers = {str(k): str(v) for k, v in (reply.get("headers") or {}).items()}
    return Response(content, status_code=int(reply["statusCode"]), headers=headers)


TOGETHER = 16  # at most this many requests a batch of a coalesced route (the first of them waits for all)


class _Together:
    """A coalesced route's requests that arrived while the process was busy, handled as one batch
    (:func:`notify_core.coalesce.run_together`) on the event loop: the loop is busy with one batch while the
    next requests queue, so under load each batch takes what came during the last one, and a lone request is
    a batch of one (the handler as it is, one turn of the loop later)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.waiting: list[tuple[ApiEvent, _Context, asyncio.Future[Any]]] = []
        self.scheduled = False
        self.seen = 0

    def submit(self, event: ApiEvent, context: _Context) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((event, context, reply))
        if not self.scheduled:
            self.scheduled, self.seen = True, 0
            loop.call_soon(self._run)
        return reply

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.seen < len(self.waiting) < TOGETHER:
            # more came in since the last look: one more turn of the loop lets the rest of the burst in (the
            # sockets read in one turn start their requests in the next)
            self.seen = len(self.waiting)
            loop.call_soon(self._run)
            return
        batch, self.waiting = self.waiting[:TOGETHER], self.waiting[TOGETHER:]
        handler = self.handler
        try:
            results: list[Any] = run_together([functools.partial(handler, event, context)
                                               for event, context, _ in batch])
        except BaseException as exc:  # never a request left waiting, nor the route stuck "scheduled"
            results = [exc] * len(batch)
            raise
        finally:
            for (_, _, reply), result in zip(batch, results, strict=True):
                if reply.done():  # cancelled: the client went away
                    continue
                if isinstance(result, BaseException):
                    reply.set_exception(result)
                else:
                    reply.set_result(result)
            self.seen = 0
            if self.waiting:
                loop.call_soon(self._run)
            else:
                self.scheduled = False


def _endpoint(route: GatewayRoute, max_body: int, body_timeout_s: float) -> Any:
    handler: list[Handler] = []
    handler_ready: list[bool] = []
    together: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Together] = weakref.WeakKeyDictionary()

    async def endpoint(request: Request) -> Response:
        if not handler:
            handler.append(_load(route.handler))
        try:
            body = await _read_body(request, max_body, timeout=body_timeout_s)
        except _BodyTimeout:  # 408 and close: the rest of the body may still come, and no next request can follow
            return _gateway_error(408, "RequestTimeoutError",
                                  f"the request body did not arrive within {body_timeout_s:g} s",
                                  headers={"connection": "close"})
        if body is None:
            return JSONResponse(
                {"error": {"type": "PayloadTooLargeError", "message": f"request body over {max_body} bytes"}},
                status_code=413,
            )
        event: ApiEvent = to_api_event(request, route, body)
        context = _Context(route.handler, event["requestContext"]["requestId"])
        if route.coalesce and handler_ready:
            loop = asyncio.get_running_loop()  # one batch a loop (a worker has one; a test client may run several)
            batch = together.get(loop) or together.setdefault(loop, _Together(handler[0]))
            reply = await batch.submit(event, context)
        elif route.inline and handler_ready:
            reply = handler[0](event, context)
        else:  # the first call cold-starts the handler (settings, Store, index): never on the loop
            reply = await run_in_threadpool(handler[0], event, context)
            if not handler_ready:
                handler_ready.append(True)
        return to_response(reply)

    return endpoint


def _gateway_error(status: int, kind: str, message: str, *, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = f"{_RUN}-{next(_REQUESTS):x}"
    return JSONResponse({"error": {"type": kind, "message": message, "request_id": rid}}, status_code=status,
                        headers={"x-request-id": rid, **(headers or {})})


async def _not_found(request: Request, _exc: Exception) -> Response:
    return _gateway_error(404, "NotFoundError", f"no route {request.url.path}")


async def _not_allowed(request: Request, _exc: Exception) -> Response:
    return _gateway_error(405, "MethodNotAllowedError", f"{request.method} is not allowed on {request.url.path}")


DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Notify API</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code,pre{background:#f4f4f4;padding:.1rem .3rem}h2{margin-top:2rem}.m{font-weight:bold;width:4rem;display:inline-block}
</style></head><body><h1>Notify API</h1><p>The machine-readable document: <a href="/openapi.json">/openapi.json</a>
(OpenAPI 3.1, generated from the handlers' models).</p><div id="ops">loading...</div><script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{const out=[`<p>${doc.info.description||''}</p>`];
for(const [path,item] of Object.entries(doc.paths)){for(const [method,op] of Object.entries(item)){
const scope=(op.security||[]).map(s=>Object.values(s).flat().join(',')).join(' ')||'public';
const params=(op.parameters||[]).map(p=>`<code>${p.in}:${p.name}</code>`).join(' ');
out.push(`<h2><span class="m">${method.toUpperCase()}</span><code>${path}</code></h2><p>${op.summary||''}
 &mdash; scope: <code>${scope}</code></p><p>${params}</p>
<p>responses: ${Object.keys(op.responses||{}).join(', ')}</p>`)}}
document.getElementById('ops').innerHTML=out.join('');});</script></body></html>"""


class RequestMetrics:
    """ASGI middleware: every HTTP request counted and timed by its route *template* (bounded labels).

    Starlette's router records the matched route in ``scope["route"]`` (also for a 405, a partial match);
    a path no route matches is labelled ``unmatched``, so a scan of random URLs adds one series, not one each.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started is what the client sees as a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            observe_request(route=str(getattr(route, "path", "unmatched")), method=str(scope.get("method", "")),
                            status=status, seconds=time.perf_counter() - started)


def build_app(routes: Sequence[GatewayRoute] | None = None, *, max_body: int = MAX_BODY_BYTES,
              body_timeout_s: float = REQUEST_BODY_TIMEOUT_S) -> Starlette:
    """The gateway: one route per handler route, plus health, metrics, the OpenAPI document and its page.
    ``body_timeout_s``: a body not all sent by then is answered 408 and its connection closed."""
    table = ROUTES if routes is None else routes
    document: list[bytes] = []

    async def openapi(_request: Request) -> Response:
        if not document:  # generated once per process, on first ask (imports every handler module)
            import json

            from lambdas.openapi import openapi_document

            document.append(json.dumps(openapi_document()).encode())
        return Response(document[0], media_type="application/json")

    async def docs(_request: Request) -> Response:
        return Response(DOCS_PAGE, media_type="text/html")

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    starlette_routes = [Route(r.path, _endpoint(r, max_body, body_timeout_s), methods=[r.method]) for r in table]
    starlette_routes += [Route("/healthz", health, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
                         Route("/openapi.json", openapi, methods=["GET"]), Route("/docs", docs, methods=["GET"])]
    return Starlette(routes=starlette_routes, middleware=[Middleware(RequestMetrics)],
                     exception_handlers={404: _not_found, 405: _not_allowed})


_TIMEOUT_REPLY = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@functools.cache
def _headers_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline of ``timeout_s`` on each request's headers: armed when the
    connection opens and when a request begins, disarmed when its headers are complete (the body has its
    own limit); past it the client gets a 408 and the connection closes."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadersDeadlineProtocol(HttpToolsProtocol):
        _headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._headers_timer = self.loop.call_later(timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
                self._headers_timer = None

        def _headers_late(self) -> None:
            self._headers_timer = None
            if not self.transport.is_closing():
                self.transport.write(_TIMEOUT_REPLY)
                self.transport.close()

    return HeadersDeadlineProtocol


def uvicorn_stack(*, headers_timeout_s: float = REQUEST_HEADERS_TIMEOUT_S) -> dict[str, Any]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools (C, both in pyproject.toml), named
    explicitly so a missing one is visible in the log rather than silently replaced. Measured on the real
    demo data with wrk (issue 21): the trivial route costs the server 0.06 ms of CPU a request with them,
    0.21 ms with asyncio + h11, whose separate header/body writes also stall ~40 ms a reply (Nagle).
    With httptools, its protocol carries a deadline of ``headers_timeout_s`` on each request's headers."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http: str | type[asyncio.Protocol] = "h11"
    if importlib.util.find_spec("httptools"):
        http = _headers_deadline_protocol(headers_timeout_s)
    if loop != "uvloop" or http == "h11":
        logging.getLogger("lambdas.gateway").warning(
            "serving without uvloop/httptools (slower, no deadline on request headers)",
            extra={"loop": loop, "http": str(http)})
    return {"loop": loop, "http": http}


def serve(
    *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning", workers: int = 1,
    tls_cert: str | None = None, tls_key: str | None = None,
    headers_timeout_s: float = REQUEST_HEADERS_TIMEOUT_S, body_timeout_s: float = REQUEST_BODY_TIMEOUT_S,
    watch: Sequence[Path] = (),
) -> None:
    """Run the gateway until SIGINT/SIGTERM (uvicorn handles both gracefully), or until a database file it uses
    is replaced under it (``watch``: the deployment's SQLite files; see :func:`_stops_when_replaced`).

    ``workers`` > 1 runs that many processes on one socket, as Lambda runs concurrent invocations in
    separate environments: the handlers are CPU-bound Python, so one process serves one core. The workers
    are forked from this process after :func:`lambdas.runtime.configure`, so they inherit the settings the
    CLI built (nothing passes through the environment); each cold-starts its own Store, stream and index
    (~160 MB at 200k campaigns) on its first request.
    """
    import uvicorn

    # HTTPS with TLS 1.2 as the minimum when a certificate is given (notify_core.security.tls).
    tls: dict[str, Any] = {}
    if tls_cert and tls_key:
        from notify_core.security.tls import tls12_context_factory

        tls = {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key, "ssl_context_factory": tls12_context_factory}
    if workers <= 1:
        server = uvicorn.Server(uvicorn.Config(
            build_app(body_timeout_s=body_timeout_s), host=host, port=port, log_level=log_level, access_log=False,
            **uvicorn_stack(headers_timeout_s=headers_timeout_s), **tls))
        replaced = _stops_when_replaced(server, watch)
        server.run()
        if not server.started:  # as uvicorn.run: the port taken, say (uvicorn logged why)
            raise SystemExit(3)
        if replaced:
            raise _replaced_error()
        return
    if _serve_forked(host=host, port=port, log_level=log_level, workers=workers, tls=tls,
                     headers_timeout_s=headers_timeout_s, body_timeout_s=body_timeout_s, watch=watch):
        raise _replaced_error()


_REPLACED_EXIT = 75  # a forked worker's exit code when it stopped on a replaced database (sysexits' EX_TEMPFAIL)


WATCH_EVERY_S = 2.0  # how often a server looks whether its database files were replaced (one stat each)


def _stops_when_replaced(server: Any, watch: Sequence[Path]) -> list[bool]:
    """Stop ``server`` gracefully (its requests in flight answered) once a handler meets a database file replaced
    under the process (:func:`lambdas.http.on_database_replaced`), or a file of ``watch`` is no longer the one
    it named at the start (looked at every :data:`WATCH_EVERY_S`: reads never check, so a server that only
    served reads went on answering from the deleted file); the list returned holds True then. Not by a signal:
    uvicorn raises a signal it handled again once it has stopped, which would end the process by it."""
    import threading

    from lambdas.http import on_database_replaced
    from notify_core.sqlite_tx import file_identity, started_with

    replaced: list[bool] = []

    def stop() -> None:
        if not replaced:
            replaced.append(True)
            logging.getLogger("lambdas.gateway").error(
                "a database file was replaced under the server; stopping for its supervisor to restart it")
        server.should_exit = True

    on_database_replaced(stop)
    opened = {path: file_identity(path) for path in watch}
    started_with(opened)  # the Store and log this worker opens on its first request must be these files

    def look() -> None:
        while not server.should_exit:
            time.sleep(WATCH_EVERY_S)
            if any(file_identity(path) != identity for path, identity in opened.items()):
                stop()

    if opened:
        threading.Thread(target=look, name="database-watch", daemon=True).start()
    return replaced


def _replaced_error() -> Exception:
    from notify_core.errors import DatabaseReplacedError

    return DatabaseReplacedError("the server stopped: its Store or stream log file was replaced or removed under it "
                                 "(a data directory wiped or restored); started again, it opens the files now there")


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> Any:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _serve_forked(*, host: str, port: int, log_level: str, workers: int, tls: dict[str, Any],
                  headers_timeout_s: float, body_timeout_s: float, watch: Sequence[Path]) -> bool:
    """``workers`` forked processes. Where the OS has SO_REUSEPORT each worker listens on its own socket
    and the kernel spreads new connections over them by hash: on one shared socket the worker that wakes
    first accepts a burst of connections (measured with wrk's 16 keep-alive connections: one worker did
    all of the trivial route's work and 64 % of the recommendations', the other idled). The parent binds
    first (so a port in use fails here, once) and closes its socket before the workers take over. True when a
    worker stopped on a database replaced under it (the others are stopped with it)."""
    import os
    import signal
    import socket

    import uvicorn

    reuse_port = hasattr(socket, "SO_REUSEPORT")
    sock = _listening_socket(host, port, reuse_port=reuse_port)
    sock.set_inheritable(True)
    if reuse_port:  # the workers open their own; the parent's would take a share of connections and never accept
        sock.close()
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own event loop and handlers on its own (or the shared) socket
            code = 0
            try:
                mine = _listening_socket(host, port, reuse_port=True) if reuse_port else sock
                config = uvicorn.Config(build_app(body_timeout_s=body_timeout_s), log_level=log_level,
                                        access_log=False, **uvicorn_stack(headers_timeout_s=headers_timeout_s),
                                        **tls)
                server = uvicorn.Server(config)
                stopped_on_replaced = _stops_when_replaced(server, watch)
                server.run(sockets=[mine])
                code = _REPLACED_EXIT if stopped_on_replaced else 0
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    if not reuse_port:
        sock.close()

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    replaced = False
    running = set(children)
    while running:
        pid, status = os.waitpid(-1, 0)
        if pid not in running:
            continue
        running.discard(pid)
        if os.waitstatus_to_exitcode(status) == _REPLACED_EXIT and not replaced:
            replaced = True  # one worker met a replaced file: the others would too; all stop, to be restarted
            for child in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
    return replaced
