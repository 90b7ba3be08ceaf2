"""Serving the campaign index: hot swap between versions, and a live overlay of recent campaign upserts.

``IndexHolder`` owns the index a serving process uses. Readers call :meth:`IndexHolder.snapshot` once per
request and keep that (immutable) snapshot for the whole request; a swap replaces the holder's single
reference, so in-flight requests finish on the old version while new ones see the new one, and no lock
is taken on the read path. Every ``refresh_seconds`` at most, one request thread (never all of them)
checks the ``CURRENT`` pointer and the overlay file; a new version is opened (~0.1 s for 200k campaigns)
*before* the swap, so a version that fails to load is logged and skipped and the last good index keeps
serving.

The overlay makes campaign creates/edits live without a rebuild: campaigns upserted since the last
build are kept beside the index (vectors + their campaign rows) and searched exactly (numpy; it is
small). Overlay ids shadow the same ids in the index, so an edited campaign is never returned twice or
with its old vector. The overlay is persisted (``campaign_index/overlay.parquet``) so every serving
process picks it up on its refresh tick; an entry stops mattering once a build newer than it contains
the same content (the graph then has the same vector).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.campaigns.table import CampaignTable
from notify_core.recommend.ann import Matches, Vectors, unit_rows
from notify_core.recommend.artefacts import ArtefactStore
from notify_core.recommend.index import CURRENT, OVERLAY, PREFIX, LoadedIndex, current_version, load_version
from notify_core.recommend.scoring import PromotionMatrix, span_positions

log = logging.getLogger(__name__)

OVERLAY_SCHEMA: dict[str, Any] = {
    "campaign_id": pl.String, "content_hash": pl.String, "updated_at": pl.String, "campaign": pl.String,
    "vector": pl.List(pl.Float32),
}


@dataclass(frozen=True, slots=True)
class OverlayEntry:
    """One upserted campaign: its vector, content hash and full campaign row (JSON-able values)."""

    campaign_id: str
    content_hash: str
    updated_at: str  # ISO UTC
    campaign: Mapping[str, Any]
    vector: Vectors


@dataclass(frozen=True, slots=True)
class Overlay:
    """The effective overlay of a snapshot: entries the graph does not already hold, searched exactly."""

    entries: tuple[OverlayEntry, ...] = ()
    matrix: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    ids: frozenset[str] = frozenset()
    table: CampaignTable = field(default_factory=CampaignTable.empty)

    @classmethod
    def of(cls, entries: Iterable[OverlayEntry]) -> Overlay:
        latest: dict[str, OverlayEntry] = {}
        for entry in entries:
            if entry.campaign_id not in latest or latest[entry.campaign_id].updated_at <= entry.updated_at:
                latest[entry.campaign_id] = entry
        kept = tuple(sorted(latest.values(), key=lambda e: e.campaign_id))
        if not kept:
            return cls()
        matrix = unit_rows(np.stack([e.vector for e in kept]))
        return cls(entries=kept, matrix=matrix, ids=frozenset(latest),
                   table=CampaignTable.from_rows([{**e.campaign, "campaign_id": e.campaign_id} for e in kept]))

    def __len__(self) -> int:
        return len(self.entries)


def overlay_to_bytes(entries: Sequence[OverlayEntry]) -> bytes:
    frame = pl.DataFrame({
        "campaign_id": [e.campaign_id for e in entries],
        "content_hash": [e.content_hash for e in entries],
        "updated_at": [e.updated_at for e in entries],
        "campaign": [json.dumps(dict(e.campaign), default=str, sort_keys=True) for e in entries],
        "vector": [np.asarray(e.vector, dtype=np.float32).tolist() for e in entries],
    }, schema=OVERLAY_SCHEMA)
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def overlay_from_bytes(data: bytes) -> list[OverlayEntry]:
    frame = pl.read_parquet(io.BytesIO(data))
    return [OverlayEntry(campaign_id=row["campaign_id"], content_hash=row["content_hash"], updated_at=row["updated_at"],
                         campaign=json.loads(row["campaign"]), vector=np.asarray(row["vector"], dtype=np.float32))
            for row in frame.iter_rows(named=True)]


def read_overlay(artefacts: ArtefactStore) -> list[OverlayEntry]:
    data = artefacts.read_bytes(OVERLAY)
    return overlay_from_bytes(data) if data else []


def effective_overlay(entries: Iterable[OverlayEntry], base: LoadedIndex | None) -> Overlay:
    """Drop entries a newer build already holds with the same content (their vector is in the graph), and
    entries whose vector has another dimension than the version's (without a version: than the newest
    entry's). Those were embedded by another model (an overlay outlives a model change: no build ever matches
    their content hash, and an upsert process may still run the old model); searched beside the version they
    made every personalised request fail in the matrix product, and mixed in one overlay they failed its stack,
    so no snapshot could be made at all. Left out and logged: the served version cannot compare them."""
    entries = list(entries)
    newest = max(entries, key=lambda e: e.updated_at, default=None)
    dim = base.manifest.dim if base is not None else newest.vector.shape[-1] if newest is not None else None
    searchable = [e for e in entries if e.vector.shape == (dim,)]
    if len(searchable) < len(entries):
        log.error("overlay entries of another dimension left out", extra={
            "dim": dim, "left_out": sorted({e.campaign_id for e in entries if e.vector.shape != (dim,)})})
    if base is None:
        return Overlay.of(searchable)
    built_at = base.manifest.built_at
    hashes = dict(zip(base.campaign_ids, base.content_hashes, strict=True))
    return Overlay.of(e for e in searchable
                      if not (hashes.get(e.campaign_id) == e.content_hash and e.updated_at <= built_at))


def gather_spans(flat: npt.NDArray[np.int64], *, starts: npt.NDArray[np.int64],
                 lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``flat[starts[i] : starts[i] + lengths[i]]`` for every i, concatenated, in one gather."""
    return flat[span_positions(starts, lengths)]


@dataclass(frozen=True, slots=True)
class ProductCodes:
    """A snapshot's products numbered once (``code``; ``none`` for a product it does not know), with per
    code: the span of its unshadowed campaign rows in ``flat`` (``start``, ``length``; 0 when none) and
    its row in the version's co-purchase neighbour matrix (``neighbour``; -1 when not in the map)."""

    code: dict[str, int]
    none: int
    start: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    neighbour: npt.NDArray[np.int64]
    flat: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class UserProducts:
    """One user's bought products (in their ``orders_by_product`` order) as :class:`ProductCodes` codes and
    their distinct orders: built once a request, read by each per-product step."""

    products: list[str]
    codes: ProductCodes
    code: npt.NDArray[np.int64]
    orders: npt.NDArray[np.float64]

    def promoted_rows(self) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """:meth:`ServingSnapshot.promoted_rows` of these products (the same three values, the same order)
        plus each kept product's orders."""
        length = self.codes.length[self.code]
        kept = np.flatnonzero(length > 0)
        if not len(kept):
            return [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        lengths = length[kept]
        rows = gather_spans(self.codes.flat, starts=self.codes.start[self.code[kept]], lengths=lengths)
        products = self.products
        return [products[i] for i in kept.tolist()], rows, lengths, self.orders[kept]

    def neighbour_rows(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The neighbour-matrix rows and orders of the products the map knows that were ordered (> 0), in
        the products' order: what ``scoring``'s co-purchase sums walk the products for."""
        rows = self.codes.neighbour[self.code]
        keep = (rows >= 0) & (self.orders > 0)
        return rows[keep], self.orders[keep]


class ServingSnapshot:
    """What one request sees: a version (or none yet) plus the overlay, never changing under it.

    Rows: the version's campaigns are rows ``0..n-1`` (the index's own), the overlay's come after them, in
    one :class:`CampaignTable`. A version row whose campaign the overlay replaced is *shadowed*: never a
    candidate, so an edited campaign is never returned twice or with its old vector or row.
    """

    def __init__(self, base: LoadedIndex | None, overlay: Overlay) -> None:
        self.base = base
        self.overlay = overlay
        base_table = base.table if base is not None else CampaignTable.empty()
        self.offset = len(base_table)
        self.table = base_table.concat(overlay.table)
        self.shadowed = np.zeros(len(self.table), dtype=bool)
        if base is not None and overlay.ids:
            rows = base.table.rows_of(sorted(overlay.ids))
            self.shadowed[rows[rows >= 0]] = True
        self._promotion: PromotionMatrix | None = None
        self._spans: tuple[dict[str, tuple[int, int]], npt.NDArray[np.int64]] | None = None
        self._codes: ProductCodes | None = None

    @property
    def version(self) -> str | None:
        return self.base.version if self.base is not None else None

    @functools.cached_property
    def longest_cooldown_hours(self) -> float:
        """How far back a user's sends can still hold one of these campaigns in its cooldown."""
        return float(self.table.cooldown_hours.max(initial=0.0))

    @property
    def dim(self) -> int | None:
        if self.base is not None:
            return self.base.manifest.dim
        return int(self.overlay.matrix.shape[1]) if len(self.overlay) else None

    def search_rows(self, queries: Vectors, k: int, *, threads: int = 1) -> Matches:
        """Top-k rows and cosines per query, best first (-1 pads): the ANN over the version, exact over
        the overlay, shadowed rows dropped."""
        q = unit_rows(queries)
        parts_rows: list[npt.NDArray[np.int64]] = []
        parts_sims: list[npt.NDArray[np.float32]] = []
        base = self.base
        if base is not None and base.index.size:
            found = base.index.search(q, min(k + len(self.overlay.ids), base.index.size), threads=threads)
            if not len(self.overlay):  # nothing shadowed, nothing to merge: the index's answer as is
                return found
            rows, sims = found.rows, found.similarities
            drop = (rows < 0) | self.shadowed[np.maximum(rows, 0)]
            parts_rows.append(np.where(drop, -1, rows))
            parts_sims.append(np.where(drop, -np.inf, sims).astype(np.float32))
        if len(self.overlay):
            sims = q @ self.overlay.matrix.T
            parts_rows.append(np.broadcast_to(np.arange(len(self.overlay)) + self.offset, sims.shape).astype(np.int64))
            parts_sims.append(sims.astype(np.float32))
        if not parts_rows:
            return Matches(np.full((len(q), k), -1, dtype=np.int64), np.full((len(q), k), -np.inf, dtype=np.float32))
        rows = np.concatenate(parts_rows, axis=1)
        sims = np.concatenate(parts_sims, axis=1)
        # best first; equal cosines by campaign row (stable), padding last
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        rows = np.take_along_axis(rows, order, axis=1)
        sims = np.take_along_axis(sims, order, axis=1)
        if rows.shape[1] < k:
            pad = k - rows.shape[1]
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        return Matches(np.where(np.isfinite(sims), rows, -1), sims)

    def search(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """Top-k (campaign_id, cosine similarity), best first."""
        found = self.search_rows(vector, k)
        ids = self.table.ids
        return [(ids[r], float(s)) for r, s in zip(found.rows[0].tolist(), found.similarities[0].tolist(),
                                                     strict=True) if r >= 0]

    def vectors(self, rows: npt.NDArray[np.int64]) -> Vectors:
        """Stored unit vectors of rows (version rows from the index, overlay rows from the overlay)."""
        rows = np.asarray(rows, dtype=np.int64)
        dim = self.dim or 0
        in_base = rows < self.offset
        if self.base is not None and len(rows) and in_base.all():  # no overlay row: the index's answer as is
            return np.asarray(self.base.index.vectors(rows), dtype=np.float32)  # (no second copy)
        out = np.zeros((len(rows), dim), dtype=np.float32)
        if in_base.any() and self.base is not None:
            out[in_base] = self.base.index.vectors(rows[in_base])
        if (~in_base).any():
            out[~in_base] = self.overlay.matrix[rows[~in_base] - self.offset]
        return out

    def promoting(self, product_ids: Iterable[str]) -> dict[str, npt.NDArray[np.int64]]:
        """product -> rows of the (unshadowed) campaigns promoting it, for the products that have any."""
        out: dict[str, npt.NDArray[np.int64]] = {}
        products = self.table.products
        for pid in product_ids:
            rows = products.get(pid)
            if rows is not None:
                rows = rows[~self.shadowed[rows]]
                if len(rows):
                    out[pid] = rows
        return out

    def promoted_rows(self, product_ids: Iterable[str]) -> tuple[list[str], npt.NDArray[np.int64],
                                                                  npt.NDArray[np.int64]]:
        """:meth:`promoting` as arrays: the products (in the given order) that have unshadowed campaigns,
        those campaigns' rows concatenated in that order, and how many rows each product has. One dict
        lookup a product and one gather, over spans built once per snapshot (a heavy buyer of the real
        data has hundreds of products: two numpy calls each cost more than the rest of the request)."""
        spans, flat = self._promoted_spans()
        get = spans.get  # one dict lookup a product
        found = [(pid, span) for pid in product_ids if (span := get(pid)) is not None]
        if not found:
            return [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        starts = np.fromiter((span[0] for _, span in found), dtype=np.int64, count=len(found))
        lengths = np.fromiter((span[1] for _, span in found), dtype=np.int64, count=len(found))
        return [pid for pid, _ in found], gather_spans(flat, starts=starts, lengths=lengths), lengths

    def _promoted_spans(self) -> tuple[dict[str, tuple[int, int]], npt.NDArray[np.int64]]:
        """product -> (start, length) of its unshadowed campaign rows in one flat array (products without
        any left out), built once per snapshot."""
        if self._spans is None:
            spans: dict[str, tuple[int, int]] = {}
            parts: list[npt.NDArray[np.int64]] = []
            at = 0
            for pid, rows in self.table.products.items():
                rows = rows[~self.shadowed[rows]]
                if len(rows):
                    spans[pid] = (at, len(rows))
                    parts.append(rows)
                    at += len(rows)
            self._spans = (spans, np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64))
        return self._spans

    def product_codes(self) -> ProductCodes:
        """:class:`ProductCodes` of this snapshot (its promoted spans and the version's neighbour map),
        built on first use and kept with the snapshot, as :meth:`promotion`."""
        if self._codes is None:
            spans, flat = self._promoted_spans()
            matrix = self.base.copurchase_matrix if self.base is not None else None
            neighbour_index: Mapping[str, int] = matrix.index if matrix is not None else {}
            products = list(dict.fromkeys([*spans, *neighbour_index]))
            none = len(products)  # the sentinel code: no span, not in the map
            start = np.zeros(none + 1, dtype=np.int64)
            length = np.zeros(none + 1, dtype=np.int64)
            neighbour = np.full(none + 1, -1, dtype=np.int64)
            for code, pid in enumerate(products):
                span = spans.get(pid)
                if span is not None:
                    start[code], length[code] = span
                neighbour[code] = neighbour_index.get(pid, -1)
            self._codes = ProductCodes(code={pid: i for i, pid in enumerate(products)}, none=none, start=start,
                                       length=length, neighbour=neighbour, flat=flat)
        return self._codes

    def user_products(self, orders_by_product: Mapping[str, int]) -> UserProducts:
        """The user's bought products coded once (one dict lookup a product) for every per-product step
        of a request: the promoted campaign rows (:meth:`promoted_rows`) and the co-purchase sums'
        neighbour rows (``scoring.copurchase_campaign_rows``) read arrays instead of walking the
        products again (a heavy buyer has hundreds; each walk was ~5 % of a request)."""
        codes = self.product_codes()
        products = list(orders_by_product)
        return UserProducts(
            products=products, codes=codes,  # map over dict.get: no generator frame a product
            code=np.fromiter(map(codes.code.get, products, repeat(codes.none, len(products))), dtype=np.int64,
                             count=len(products)),
            orders=np.fromiter(orders_by_product.values(), dtype=np.float64, count=len(products)))

    def promotion(self) -> PromotionMatrix | None:
        """The version's co-purchase products x this snapshot's unshadowed campaign rows (None without a
        neighbour map), built on first use and kept with the snapshot: a new version or overlay is a new
        snapshot, so it can never describe another table. Two threads racing here build the same value."""
        matrix = self.base.copurchase_matrix if self.base is not None else None
        if matrix is None:
            return None
        if self._promotion is None:
            products, shadowed = self.table.products, self.shadowed

            def rows_promoting(pid: str) -> npt.NDArray[np.int64] | None:
                rows = products.get(pid)
                return rows[~shadowed[rows]] if rows is not None else None

            self._promotion = PromotionMatrix.of(matrix, rows_promoting)
        return self._promotion

    def popular(self, segment: str) -> tuple[tuple[str, float], ...]:
        return self.base.popular.get(segment, ()) if self.base is not None else ()


Loader = Callable[[ArtefactStore, str], LoadedIndex]
# A version that failed to load, or an overlay that failed to read, is tried again after this long, doubling
# up to RETRY_MAX_SECONDS: the error may be a timeout (a cold Lambda's first S3 read), and never trying again
# left a process with no index, or without the upserts, until the next publish or upsert; a bad build is not
# downloaded again at every poll either.
RETRY_SECONDS = 30.0
RETRY_MAX_SECONDS = 900.0


class IndexHolder:
    """The serving process's current index: lock-free reads, polled pointer, atomic swap, last good kept.

    ``refresh_seconds`` bounds how often the pointer and overlay are polled (a stat or a HEAD), so a
    published version or an upsert from another process is live within about that long.
    """

    def __init__(
        self, artefacts: ArtefactStore, *, refresh_seconds: float = 2.0, search_effort: int | None = None,
        clock: Callable[[], float] = time.monotonic, loader: Loader | None = None,
    ) -> None:
        self.artefacts = artefacts
        self.refresh_seconds = refresh_seconds
        self.search_effort = search_effort
        self._clock = clock
        self._loader: Loader = loader or (lambda a, v: load_version(a, v, search_effort=search_effort))
        self._snapshot = ServingSnapshot(base=None, overlay=Overlay())
        self._overlay_entries: list[OverlayEntry] = []
        self._pointer_stamp: str | None = None
        self._overlay_stamp: str | None = None
        self._next_check = 0.0
        self._refresh_lock = threading.Lock()
        self._polled = threading.Event()  # set once the first poll has finished (loaded or not)
        self._write_lock = threading.Lock()
        self.last_error: str | None = None
        self.failed_versions: set[str] = set()
        # what failed to load or read (a version, or OVERLAY) -> (when to try it again, the wait after that)
        self._retry: dict[str, tuple[float, float]] = {}
        self.swaps = 0

    def snapshot(self) -> ServingSnapshot:
        """The snapshot to use for one request (refreshing first when a poll is due).

        Until the first poll has finished, callers wait for it: concurrent first requests of a cold
        process must not be answered from the empty snapshot while one of them loads the index.
        """
        if not self._polled.is_set():
            with self._refresh_lock:
                if not self._polled.is_set():
                    self._poll(force=False)
        elif self._clock() >= self._next_check:
            self.refresh()
        return self._snapshot

    def refresh(self, *, force: bool = False) -> bool:
        """Poll pointer and overlay; swap if either changed. Returns True if the snapshot changed.

        Only one thread refreshes at a time; the others do not wait, they keep the current snapshot.
        """
        if not self._refresh_lock.acquire(blocking=force):
            return False
        try:
            return self._poll(force=force)
        finally:
            self._refresh_lock.release()

    def _poll(self, *, force: bool) -> bool:
        """One poll (the caller holds the refresh lock)."""
        try:
            now = self._clock()
            self._next_check = now + self.refresh_seconds
            base = self._snapshot.base
            changed = False
            pointer = self.artefacts.stamp(CURRENT)
            failed_version = any(name != OVERLAY for name in self._retry)
            if force or pointer != self._pointer_stamp or (failed_version and self._due(now)):
                version = current_version(self.artefacts)
                for name in [n for n in self._retry if n not in (OVERLAY, version)]:
                    del self._retry[name]  # the pointer moved on from a failed version: no more retries of it
                if version is not None and (base is None or version != base.version) and self._may_try(version, now):
                    # room first: the cache holds at most the version served and the one loaded
                    self._drop_copies(keep={version} if base is None else {version, base.version})
                    try:
                        base = self._loader(self.artefacts, version)
                        changed = True
                        self.last_error = None
                        self.failed_versions.discard(version)
                        self._retry.pop(version, None)
                    except Exception as exc:  # a bad build must never take serving down: keep the last good
                        self.failed_versions.add(version)
                        self._failed(version, now)
                        self.last_error = f"version {version} failed to load: {exc}"
                        log.error("index load failed; keeping the last good index",
                                  extra={"version": version, "kept": base.version if base else None,
                                         "error": str(exc)})
                    else:
                        self._drop_copies(keep={version})
                self._pointer_stamp = pointer
            overlay_stamp = self.artefacts.stamp(OVERLAY)
            if force or (overlay_stamp != self._overlay_stamp and self._may_try(OVERLAY, now)):
                try:
                    self._overlay_entries = read_overlay(self.artefacts)
                    changed = True
                    self._overlay_stamp = overlay_stamp  # taken as read only once read: else tried again
                    self._retry.pop(OVERLAY, None)
                except Exception as exc:  # a torn/foreign overlay file, a timeout: keep what we had
                    self._failed(OVERLAY, now)
                    log.error("overlay read failed; keeping the previous overlay", extra={"error": str(exc)})
            if changed:
                self._swap(base)
            return changed
        finally:
            self._polled.set()

    def _drop_copies(self, *, keep: set[str]) -> None:
        """Only the versions ``keep`` stay in the local cache: before a load, the one served and the one to
        load (a cache full of an earlier process's versions made every load fail for want of room); after
        it, the one loaded. The snapshot still served maps its own file, which stays readable until it is
        dropped. A cache that cannot be cleaned is logged, never raised: it costs disk, not answers."""
        try:
            dropped = self.artefacts.drop_local_copies(PREFIX, keep=keep)
        except OSError as exc:
            log.warning("old index copies not removed", extra={"kept": sorted(keep), "error": str(exc)})
            return
        if dropped:
            log.info("old index copies removed", extra={"kept": sorted(keep), "removed": dropped})

    def _due(self, now: float) -> bool:
        """Whether something that failed is due to be tried again."""
        return any(at <= now for at, _ in self._retry.values())

    def _may_try(self, name: str, now: float) -> bool:
        """Whether ``name`` (a version, or OVERLAY) may be loaded now: it has not failed, or its wait is over."""
        found = self._retry.get(name)
        return found is None or found[0] <= now

    def _failed(self, name: str, now: float) -> None:
        """``name`` failed to load: tried again after a wait that doubles each time (RETRY_SECONDS)."""
        wait = self._retry.get(name, (0.0, RETRY_SECONDS))[1]
        self._retry[name] = (now + wait, min(2 * wait, RETRY_MAX_SECONDS))

    def _swap(self, base: LoadedIndex | None) -> None:
        previous = self._snapshot.version
        self._snapshot = ServingSnapshot(base=base, overlay=effective_overlay(self._overlay_entries, base))
        if base is not None and base.version != previous:
            self.swaps += 1
            log.info("campaign index swapped", extra={"version": base.version, "previous": previous,
                                                        "size": base.index.size})

    def upsert(self, entries: Sequence[OverlayEntry]) -> ServingSnapshot:
        """Add/replace campaigns in the overlay: live in this process at once, in others on their next poll.

        Read-modify-write of the persisted overlay as one :meth:`ArtefactStore.update_bytes` (no other
        process's upsert in between: a plain read then write lost one of two upserts made at once), under
        this process's lock; the file write is atomic.
        """
        with self._write_lock, self._refresh_lock:
            merged: list[OverlayEntry] = []

            def add(data: bytes | None) -> bytes:
                current = {e.campaign_id: e for e in (overlay_from_bytes(data) if data else [])}
                for entry in entries:
                    current[entry.campaign_id] = entry
                merged[:] = sorted(current.values(), key=lambda e: e.campaign_id)
                return overlay_to_bytes(merged)

            self.artefacts.update_bytes(OVERLAY, add)
            self._overlay_entries = merged
            # Not the file's stamp now: another process may have upserted since this write (its file, holding
            # this entry and its own), and taking its stamp as read would hide its entry from every poll. The
            # next poll reads the file again instead (one small read an upsert).
            self._overlay_stamp = None
            self._retry.pop(OVERLAY, None)  # read just now: a failed poll's wait is over
            self._swap(self._snapshot.base)
            return self._snapshot


def as_vector(values: npt.ArrayLike) -> Vectors:
    return np.ascontiguousarray(values, dtype=np.float32)
