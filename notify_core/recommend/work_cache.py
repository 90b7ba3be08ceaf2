"""A per-process cache of the time-independent part of a user's ranking (issue 21).

A recommendation request does two kinds of work. One depends only on the served snapshot and on what
the Store says about the user right now: the ANN candidates of their vector, and the co-purchase weights
and promoted rows of their bought products. The other moves with ``now`` (cooldowns, campaign dates,
recency) and is recomputed on every request. This cache keeps the first kind for users seen recently.

Exactness comes from the inputs, not from expiry: an entry is used only for the *same* snapshot object
(a snapshot never changes; a new index version or overlay upsert is a new snapshot, which empties the
cache) and the *same* inputs read from the Store on this request (the user's vector bytes and their
products with order counts, in order), compared in full. A new purchase changes the order counts, a new embedding the
vector: the key no longer matches and the work is redone. Nothing is served that a cold request would
not compute; the Store stays the source of truth and is read on every request.

Bounded (least recently used out first) so a scan of every user cannot grow a worker without limit; the
cached arrays are made read-only so no later step can change a cached answer in place. A user's work is
kept from their *second* request on, if that comes while they are still among the last ``capacity`` users
seen (a doorkeeper of user ids, as many as the cache holds): a rotation over more users than the cache holds
(a benchmark's cold path, a batch of one-off users) would otherwise evict on every request, and keeping
each request's arrays instead of reusing their memory cost ~4-8 % of CPU on such a miss (measured on the
demo data); now such a user costs one dict lookup, and a working set the cache can hold is kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class WorkInputs:
    """The exact inputs of a user's time-independent work, as read from the Store on this request: their
    unit vector's bytes (None without one) and their products with order counts. Compared in full on a
    hit (a hash could collide); nothing is hashed but the user id, so a heavy buyer's ~1,800 products
    cost a C-level map comparison on a hit and nothing on a miss."""

    vector: bytes | None
    orders_by_product: Mapping[str, int]

    @classmethod
    def of(cls, vector: npt.NDArray[np.float32] | None, orders_by_product: Mapping[str, int]) -> WorkInputs:
        return cls(None if vector is None else vector.tobytes(), orders_by_product)

    def same(self, other: WorkInputs) -> bool:
        """Equal vectors and equal products with equal counts *in the same order* (the order the sums run in)."""
        if self.vector != other.vector or self.orders_by_product != other.orders_by_product:
            return False
        return len(self.orders_by_product) < 2 or list(self.orders_by_product) == list(other.orders_by_product)


class WorkCache(Generic[V]):
    """``capacity`` users' work on one snapshot; :meth:`get` of another snapshot empties it first."""

    def __init__(self, *, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._snapshot: object | None = None  # held, not its id(): an id can be reused once it is freed
        self._entries: OrderedDict[str, tuple[WorkInputs, V]] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()  # the doorkeeper: ids asked for once, not yet kept
        self.seen_capacity = capacity  # a larger window would admit users the cache cannot keep until they return
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, snapshot: object, user_id: str, inputs: WorkInputs) -> V | None:
        """The user's cached work if it was computed on ``snapshot`` from the same ``inputs``."""
        with self._lock:
            if snapshot is not self._snapshot:
                self._entries.clear()
                self._snapshot = snapshot
            entry = self._entries.get(user_id)
            if entry is None or not entry[0].same(inputs):
                self.misses += 1
                return None
            self._entries.move_to_end(user_id)
            self.hits += 1
            return entry[1]

    def admits(self, user_id: str) -> bool:
        """Whether to keep this user's work: yes if they were asked for recently (or are cached, with
        stale inputs); a first sighting is only noted."""
        with self._lock:
            if user_id in self._entries or user_id in self._seen:
                return True
            self._seen[user_id] = None
            while len(self._seen) > self.seen_capacity:
                self._seen.popitem(last=False)
            return False

    def put(self, snapshot: object, user_id: str, inputs: WorkInputs, value: V) -> None:
        """Keep ``value`` (replacing the user's older entry); the least recently used user goes past capacity."""
        with self._lock:
            if snapshot is not self._snapshot:  # the snapshot moved on while this request ranked: keep nothing
                return
            self._seen.pop(user_id, None)
            self._entries[user_id] = (inputs, value)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seen.clear()
            self._snapshot = None

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[V]:
        with self._lock:
            return [value for _, value in self._entries.values()]


def frozen(*arrays: npt.NDArray[np.generic]) -> None:
    """Make cached arrays read-only (an in-place change of one would change later answers)."""
    for array in arrays:
        array.setflags(write=False)
