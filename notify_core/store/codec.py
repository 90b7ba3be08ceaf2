"""Item (de)serialisation shared by adapters that keep an item as one document.

orjson rather than the standard library: encoding items is the consumer's hottest Python step
(~5x faster here), and orjson rejects NaN/inf the same way DynamoDB does. msgspec for a projection
(:func:`decode_columns`): it skips the attributes nobody asked for without making Python objects of them.
"""

from __future__ import annotations

import base64
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson

from notify_core.store.port import Columns, Item

_BYTES_TAG = "__b64__"
_BYTES_TAG_JSON = b'"__b64__"'
_SCALARS = frozenset({str, int, bool, type(None), bytes})


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"a Store item cannot hold {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _BYTES_TAG in obj:
        return base64.b64decode(obj[_BYTES_TAG])
    return obj


def _check_finite(values: Any) -> None:
    """orjson writes NaN/inf as null; the port rejects them instead (DynamoDB cannot store them)."""
    for value in values:
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise ValueError("Out of range float values are not JSON compliant")
        elif kind is dict:
            _check_finite(value.values())
        elif kind is list or kind is tuple:
            _check_finite(value)
        elif kind not in _SCALARS and isinstance(value, float) and not math.isfinite(value):
            raise ValueError("Out of range float values are not JSON compliant")


def encode_item(item: Item) -> str:
    """One item as compact JSON text. Raises ValueError/TypeError for values no backend can store.

    orjson writes NaN/inf as ``null``, so an output without ``null`` cannot hide one: the walk over the
    values (about half the cost of encoding a flat item) runs only when the text contains ``null``.
    """
    try:
        data = orjson.dumps(item, default=_default)
    except orjson.JSONEncodeError as exc:
        _check_finite(item.values())  # a non-finite float subclass reads better as "not JSON compliant"
        raise ValueError(str(exc)) from exc
    if b"null" in data:
        _check_finite(item.values())
    return data.decode()


def decode_item(text: str) -> Item:
    # orjson has no object_hook: tagged bytes are restored by a walk that applies _hook bottom-up, as
    # json.loads(object_hook=_hook) would (the standard decoder costs ~0.2 ms on a 384-dim vector item).
    result: Item = orjson.loads(text)
    if _BYTES_TAG not in text:
        return result
    tagged: Item = _untag(result)
    return tagged


def _untag(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return _hook({k: _untag(v) for k, v in value.items()})
    if kind is list:
        return [_untag(v) for v in value]
    return value


def decode_columns(documents: Sequence[bytes], attributes: Sequence[str]) -> Columns:
    """The named attributes of each JSON document (an item as :func:`encode_item` wrote it) as columns: the
    values :func:`decode_item` would give, None where a document lacks one.

    Why not :func:`decode_item` and a look-up: a dict of every attribute of every item costs most of a
    projection (the recommender's ~60 product rows a user: 0.12 of 0.24 ms). One msgspec decode of the
    documents as one JSON array, into a struct of the named fields, skips the rest in C."""
    names = tuple(dict.fromkeys(attributes))
    decoder, getters = _projection(names)
    payload = b"[" + b",".join(documents) + b"]"
    rows = decoder.decode(payload)
    columns = {name: list(map(get, rows)) for name, get in zip(names, getters, strict=True)}
    if _BYTES_TAG_JSON in payload:  # tagged bytes somewhere: restored as decode_item restores them
        return {name: [_untag(value) for value in column] for name, column in columns.items()}
    return columns


@functools.lru_cache(maxsize=64)
def _projection(names: tuple[str, ...]) -> tuple[msgspec.json.Decoder[list[Any]], list[Callable[[Any], Any]]]:
    """A decoder of a JSON array of objects into structs of ``names`` (fields ``f0``.. renamed to the
    attribute names, so any attribute name works) and one getter per name, made once per projection."""
    fields = [f"f{i}" for i in range(len(names))]
    struct = msgspec.defstruct("Projection", [(f, Any, None) for f in fields], rename=dict(zip(fields, names,
                                                                                             strict=True)))
    return msgspec.json.Decoder(list[struct]), [operator.attrgetter(f) for f in fields]  # type: ignore[valid-type]
