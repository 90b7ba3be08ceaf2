"""Types of the Lambda proxy integration, the one place raw request bodies are decoded (base64 included,
size-checked), the one error shape (:func:`error_reply`: ``{"error": {"type", "message", "request_id"}}``
from a ``NotifyError``'s ``http_status``, anything else a logged 500 without internals), and what every
invocation records about itself (cold start, EMF on Lambda, the request id on every log line).
Routing, validation and API keys are :mod:`lambdas.edge`'s."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lambdas.coldstart import ColdStart
from notify_core.errors import (
    BackendError,
    DatabaseReplacedError,
    NotifyError,
    PayloadTooLargeError,
    RateLimitedError,
    ValidationError,
)
from notify_core.observability import Invocations, request_context

log = logging.getLogger("lambdas.edge")  # the edge's refusals and 500s: one logger, one shape

ApiEvent = Mapping[str, Any]
ApiResponse = dict[str, Any]
Handler = Callable[[ApiEvent, Any], ApiResponse]


def request_id(event: ApiEvent) -> str:
    context = event.get("requestContext") or {}
    rid = context.get("requestId") if isinstance(context, Mapping) else None
    return str(rid) if rid else uuid.uuid4().hex


def body_bytes(event: ApiEvent, *, limit: int | None = None) -> bytes:
    """The raw request body; base64 bodies decoded. Over ``limit`` bytes -> ``PayloadTooLargeError``."""
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise ValidationError("request body must be a string")
    if limit is not None and len(body) > (limit * 4) // 3 + 4:  # cheap check before decoding
        raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationError(f"body is not valid base64: {exc}") from None
    else:
        raw = body.encode()
    if limit is not None and len(raw) > limit:
        raise PayloadTooLargeError(f"request body is {len(raw)} bytes; the limit is {limit}")
    return raw


def json_reply(status: int, payload: Any, *, rid: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A proxy reply both payload versions accept (statusCode / headers / body)."""
    return {"statusCode": status,
            "headers": {"content-type": "application/json", "x-request-id": rid, **(headers or {})},
            "body": json.dumps(payload, separators=(",", ":"), default=str), "isBase64Encoded": False}


def error_payload(kind: str, message: str, rid: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "request_id": rid}}


def _error_headers(exc: Exception) -> dict[str, str]:
    return {"retry-after": str(exc.retry_after_s)} if isinstance(exc, (RateLimitedError, BackendError)) else {}


_ON_DATABASE_REPLACED: list[Callable[[], None]] = []


def on_database_replaced(hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever a reply is for a SQLite file replaced under this process
    (:class:`~notify_core.errors.DatabaseReplacedError`: its data directory wiped or restored under it). The local
    gateway stops then, for its supervisor to start it on the files now there; without it, it answered 503 to
    every write, and reads from the deleted file, until someone restarted it. Never on Lambda (no SQLite)."""
    _ON_DATABASE_REPLACED[:] = [hook]


def error_reply(exc: Exception, *, rid: str) -> dict[str, Any]:
    """The one error shape, for any exception: NotifyError -> its status, the rest -> a logged 500.

    A NotifyError that is a 500 (a ConfigurationError: a key file readable by others, an unreadable master
    key) is logged with its message and answered as any other 500, without it: the message names files and
    the server's security posture, and the key check runs before a caller is known (audit, session 39)."""
    if isinstance(exc, DatabaseReplacedError):
        for hook in _ON_DATABASE_REPLACED:
            hook()
    if isinstance(exc, NotifyError) and exc.http_status != 500:
        status, kind, message = exc.http_status, type(exc).__name__, str(exc)
    else:
        log.error("unhandled error", exc_info=exc, extra={"request_id": rid})
        status, kind, message = 500, "InternalError", "internal error"
    if status < 500:  # one line per refusal (a 500 has its traceback above)
        log.warning("request failed", extra={"request_id": rid, "status": status, "error_type": kind,
                                             "error": message})
    return json_reply(status, error_payload(kind, message, rid), rid=rid, headers=_error_headers(exc))


class Invocation:
    """The reply of the invocation being observed (:func:`observed` reads its status at the end)."""

    reply: Any = None


@contextmanager
def observed(function: str, rid: str) -> Iterator[Invocation]:
    """Around one invocation: the request id on every log line and produced record, the cold start, and
    (on Lambda) one EMF line with invocations, errors and duration."""
    invocations = _invocations.get()
    cold = invocations.cold_start(function)
    started = time.perf_counter()
    call = Invocation()
    with request_context(rid):
        try:
            yield call
        finally:
            invocations.done(function=function, status=_status(call.reply),
                             seconds=time.perf_counter() - started, cold_start=cold)


def api_handler(func: Handler) -> Handler:
    """For a handler outside an :class:`lambdas.edge.Edge`: observed like the edge's routes, and any
    exception answered in the edge's one error shape (NotifyError -> its status, the rest a logged 500)."""

    @functools.wraps(func)
    def wrapper(event: ApiEvent, context: Any) -> ApiResponse:
        rid = request_id(event)
        function = str(getattr(context, "function_name", None) or f"{func.__module__}:{func.__name__}")
        with observed(function, rid) as call:
            try:
                call.reply = func(event, context)
            except Exception as exc:
                call.reply = error_reply(exc, rid=rid)
        reply: ApiResponse = call.reply
        return reply

    return wrapper


def _build_invocations() -> Invocations:
    """At the first invocation. On Lambda (no entry point of ours ran): JSON logging and EMF lines."""
    import os

    from notify_core.observability import configure_logging, logging_configured

    on_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    if on_lambda and not logging_configured():
        configure_logging(level=os.environ.get("NOTIFY_LOG_LEVEL", "INFO").upper(), stream=sys.stdout)
    return Invocations(emit=print if on_lambda else None)


_invocations = ColdStart(_build_invocations)


def flush_metrics() -> None:
    """For handlers outside :func:`api_handler` (the scheduled delivery run): send the SLO counters' EMF."""
    _invocations.get().flush_counters()


def _status(reply: Any) -> int:
    return int(reply.get("statusCode") or 200) if isinstance(reply, dict) else 200
