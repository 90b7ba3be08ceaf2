"""Types of the Lambda proxy integration and the one place raw request bodies are decoded (base64
included, size-checked). Errors and replies are shaped by :mod:`lambdas.edge`, in one place."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from notify_core.errors import PayloadTooLargeError, ValidationError

ApiEvent = Mapping[str, Any]
ApiResponse = dict[str, Any]
Handler = Callable[[ApiEvent, Any], ApiResponse]


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
