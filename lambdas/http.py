"""Helpers shared by the API Gateway (HTTP API, payload v2) handlers.

The one place NotifyError subclasses become HTTP statuses (each class carries ``http_status``), the one
place request bodies are decoded (base64 included), and the one shape of JSON replies, so every handler
answers errors the same way.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from lambdas.coldstart import ColdStart
from notify_core.errors import NotifyError, PayloadTooLargeError, ValidationError
from notify_core.observability import Invocations, request_context

log = logging.getLogger(__name__)

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


def json_response(status: int, payload: Any, *, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps(payload, separators=(",", ":"), default=str),
        "isBase64Encoded": False,
    }


def error_response(exc: NotifyError, *, rid: str) -> ApiResponse:
    """Every deliberate error, one shape: ``{"error": {"type", "message", "request_id"}}``."""
    return json_response(
        exc.http_status,
        {"error": {"type": type(exc).__name__, "message": str(exc), "request_id": rid}},
        headers={"x-request-id": rid},
    )


def api_handler(func: Handler) -> Handler:
    """Wrap a handler: NotifyError -> its status, anything else -> a logged 500 without internals."""

    @functools.wraps(func)
    def wrapper(event: ApiEvent, context: Any) -> ApiResponse:
        rid = request_id(event)
        invocations = _invocations.get()
        function = str(getattr(context, "function_name", None) or f"{func.__module__}:{func.__name__}")
        cold = invocations.cold_start(function)
        started = time.perf_counter()
        with request_context(rid):
            reply = _guarded(func, event, context, rid)
            invocations.done(function=function, status=_status(reply),
                             seconds=time.perf_counter() - started, cold_start=cold)
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


def _guarded(func: Handler, event: ApiEvent, context: Any, rid: str) -> ApiResponse:
    try:
        return func(event, context)
    except NotifyError as exc:
        level = logging.WARNING if exc.http_status < 500 else logging.ERROR
        log.log(level, "request failed", extra={"request_id": rid, "status": exc.http_status,
                                                "error_type": type(exc).__name__, "error": str(exc)})
        return error_response(exc, rid=rid)
    except Exception:
        log.exception("unhandled error", extra={"request_id": rid})
        return json_response(
            500,
            {"error": {"type": "InternalError", "message": "internal error", "request_id": rid}},
            headers={"x-request-id": rid},
        )
