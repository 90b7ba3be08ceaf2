"""The metrics port of the long-running processes (``notify consume``, ``notify worker``): Prometheus'
exposition at every path, and ``/healthz`` for a liveness probe.

A pod whose process is up but whose loop is stuck (a Store call or a decoding hand-over that never
returns) kept answering ``/metrics`` and was never restarted: only the process can tell that its loop has
stopped turning, so ``/healthz`` asks it (``healthy``) and answers 503 when it has. A slow backend is not a
stuck loop: the consumer's retries count as turns, and a restart would not bring the Store back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

HEALTH_PATH = "/healthz"


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape (wsgiref's default): the structured logs are the process's output."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's signature)
        pass


class MetricsServer:
    """Serves the process's metrics and health on ``addr:port`` from a daemon thread until :meth:`close`."""

    def __init__(self, *, port: int, addr: str = "127.0.0.1", healthy: Callable[[], bool] | None = None) -> None:
        metrics = make_wsgi_app()

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == HEALTH_PATH:
                ok = healthy is None or healthy()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "text/plain; charset=utf-8")])
                return [b"ok\n" if ok else b"stalled\n"]
            return metrics(environ, start_response)  # type: ignore[no-any-return]

        self._server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="notify-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
