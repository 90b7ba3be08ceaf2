"""Item (de)serialisation shared by adapters that keep an item as one document."""

from __future__ import annotations

import base64
import json
from typing import Any

from notify_core.store.port import Item

_BYTES_TAG = "__b64__"


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"a Store item cannot hold {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _BYTES_TAG in obj:
        return base64.b64decode(obj[_BYTES_TAG])
    return obj


def encode_item(item: Item) -> str:
    return json.dumps(item, default=_default, separators=(",", ":"), allow_nan=False)


def decode_item(text: str) -> Item:
    result: Item = json.loads(text, object_hook=_hook)
    return result
