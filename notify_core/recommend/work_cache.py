"""A per-process cache of the time-independent part of a user's ranking (issue 21).

A recommendation request does two kinds of work. One depends only on the served snapshot and on what
the Store says about the user right now: the ANN candidates of their vector, and the co-purchase weights
and promoted rows of their bought products. The other moves with ``now`` (cooldowns, campaign dates,
recency) and is recomputed on every request. This cache keeps the first kind for users seen recently.

Exactness comes from the key, not from expiry: an entry is found only for the *same* snapshot object
(a snapshot never changes; a new index version or overlay upsert is a new snapshot, which empties the
cache) and the *same* inputs read from the Store on this request (the user's vector bytes and their
products with order counts, in order). A new purchase changes the order counts, a new embedding the
vector: the key no longer matches and the work is redone. Nothing is served that a cold request would
not compute; the Store stays the source of truth and is read on every request.

Bounded (least recently used out first) so a scan of every user cannot grow a worker without limit; the
cached arrays are made read-only so no later step can change a cached answer in place.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

V = TypeVar("V")


def work_key(user_id: str, vector: npt.NDArray[np.float32] | None, orders_by_product: Mapping[str, int]) -> Hashable:
    """The exact inputs of the time-independent work: the user, their unit vector's bytes (None without
    one) and their products with order counts in the order the Store returned them."""
    return (user_id, None if vector is None else vector.tobytes(), tuple(orders_by_product.items()))


class WorkCache(Generic[V]):
    """``capacity`` entries of one snapshot's work; :meth:`get` of another snapshot empties it first."""

    def __init__(self, *, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._snapshot: object | None = None  # held, not its id(): an id can be reused once it is freed
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, snapshot: object, key: Hashable) -> V | None:
        with self._lock:
            if snapshot is not self._snapshot:
                self._entries.clear()
                self._snapshot = snapshot
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, snapshot: object, key: Hashable, value: V) -> None:
        with self._lock:
            if snapshot is not self._snapshot:  # the snapshot moved on while this request ranked: keep nothing
                return
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._snapshot = None

    def __len__(self) -> int:
        return len(self._entries)


def frozen(*arrays: npt.NDArray[np.generic]) -> None:
    """Make cached arrays read-only (an in-place change of one would change later answers)."""
    for array in arrays:
        array.setflags(write=False)
