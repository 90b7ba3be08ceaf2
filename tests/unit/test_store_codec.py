"""The Store codec's projection (:func:`decode_columns`) against the whole-item decode it replaces on hot reads.

Both adapters that keep an item as one document (SQLite) answer ``query_columns`` with it, so any value an
item can hold must come out of the projection exactly as :func:`decode_item` gives it: same type, same
float bits, bytes restored, a missing attribute None.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.store.codec import decode_columns, decode_item, encode_item

_NAMES = st.sampled_from(["sk", "order_count", "last_purchase_ts", "é", "a.b", "__b64__", "f0", "x y", "blob"])
_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text() | st.binary(max_size=20))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
# Every stored item has its keys: a map whose one key is the bytes tag is read as bytes, by both decodes.
_ITEMS = st.lists(st.dictionaries(_NAMES, _VALUES, max_size=6).map(lambda d: {"pk": "p", "sk": "s", **d}),
                  max_size=8)


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 == 1.0 == True would hide a changed number type)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(items=_ITEMS, attributes=st.lists(_NAMES, min_size=1, max_size=4))
def test_a_projection_gives_each_attribute_as_the_whole_item_decode_does(
        items: list[dict[str, Any]], attributes: list[str]) -> None:
    documents = [encode_item(item) for item in items]
    whole = [decode_item(document) for document in documents]
    got = decode_columns([document.encode() for document in documents], attributes)
    assert list(got) == list(dict.fromkeys(attributes))
    for name, column in got.items():
        assert _same(column, [item.get(name) for item in whole]), name


def test_tagged_bytes_are_restored_and_a_look_alike_string_is_not() -> None:
    documents = [encode_item({"v": b"\x00\xff", "s": '{"__b64__": "AA=="}', "n": {"__b64__": "AA==", "x": 1}}).encode()]
    got = decode_columns(documents, ["v", "s", "n"])
    assert got == {"v": [b"\x00\xff"], "s": ['{"__b64__": "AA=="}'], "n": [{"__b64__": "AA==", "x": 1}]}
    assert decode_columns([], ["v"]) == {"v": []}
