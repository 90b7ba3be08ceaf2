"""Serving the campaign index: hot swap between versions, and a live overlay of recent campaign upserts.

``IndexHolder`` owns the index a serving process uses. Readers call :meth:`IndexHolder.snapshot` once per
request and keep that (immutable) snapshot for the whole request; a swap replaces the holder's single
reference, so in-flight requests finish on the old version while new ones see the new one, and no lock
is taken on the read path. Every ``refresh_seconds`` at most, one request thread (never all of them)
checks the ``CURRENT`` pointer and the overlay file; a new version is opened with
``Index.restore(view=True)`` (memory-mapped, ~20 ms) *before* the swap, so a version that fails to
load is logged and skipped and the last good index keeps serving.

The overlay makes campaign creates/edits live without a rebuild: campaigns upserted since the last
build are kept beside the graph (vectors + their campaign rows) and searched exactly (numpy; it is
small). Overlay ids shadow the same ids in the graph, so an edited campaign is never returned twice or
with its old vector. The overlay is persisted (``campaign_index/overlay.parquet``) so every serving
process picks it up on its refresh tick; an entry stops mattering once a build newer than it contains
the same content (the graph then has the same vector).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.recommend.artefacts import ArtefactStore
from notify_core.recommend.index import (
    CURRENT,
    OVERLAY,
    LoadedIndex,
    Vectors,
    campaign_keys,
    current_version,
    load_version,
    search,
)

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
    campaigns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    product_campaigns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[OverlayEntry]) -> Overlay:
        latest: dict[str, OverlayEntry] = {}
        for entry in entries:
            if entry.campaign_id not in latest or latest[entry.campaign_id].updated_at <= entry.updated_at:
                latest[entry.campaign_id] = entry
        kept = tuple(sorted(latest.values(), key=lambda e: e.campaign_id))
        if not kept:
            return cls()
        matrix = np.stack([e.vector for e in kept]).astype(np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.ascontiguousarray(matrix / np.where(norms > 0, norms, 1.0), dtype=np.float32)
        products: dict[str, list[str]] = {}
        for e in kept:
            for pid in e.campaign.get("product_ids") or ():
                products.setdefault(str(pid), []).append(e.campaign_id)
        return cls(entries=kept, matrix=matrix, ids=frozenset(latest),
                   campaigns={e.campaign_id: e.campaign for e in kept},
                   product_campaigns={p: tuple(c) for p, c in products.items()})

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
    """Drop entries a newer build already holds with the same content (their vector is in the graph)."""
    if base is None:
        return Overlay.of(entries)
    built_at = base.manifest.built_at
    hashes = dict(zip(base.campaign_ids, base.content_hashes, strict=True))
    return Overlay.of(e for e in entries
                      if not (hashes.get(e.campaign_id) == e.content_hash and e.updated_at <= built_at))


@dataclass(frozen=True, slots=True)
class ServingSnapshot:
    """What one request sees: a graph version (or none yet) plus the overlay, never changing under it."""

    base: LoadedIndex | None
    overlay: Overlay

    @property
    def version(self) -> str | None:
        return self.base.version if self.base is not None else None

    @property
    def dim(self) -> int | None:
        if self.base is not None:
            return self.base.manifest.dim
        return int(self.overlay.matrix.shape[1]) if len(self.overlay) else None

    def search(self, vector: Vectors, k: int) -> list[tuple[str, float]]:
        """Top-k (campaign_id, cosine similarity), best first: ANN over the graph + exact over the overlay."""
        query = np.asarray(vector, dtype=np.float32)
        found: dict[str, float] = {}
        base = self.base
        if base is not None and base.index.size:
            shadowed = len(self.overlay.ids)
            matches = search(base.index, query, min(k + shadowed, base.index.size))
            ids = base.campaign_ids
            for key, distance in zip(matches.keys.tolist(), matches.distances.tolist(), strict=True):
                row = base.key_to_row.get(int(key))
                if row is None:
                    continue
                cid = ids[row]
                if cid not in self.overlay.ids:
                    found[cid] = 1.0 - float(distance)
        if len(self.overlay):
            sims = self.overlay.matrix @ query
            top = np.argsort(-sims)[:k]
            for row in top.tolist():
                found[self.overlay.entries[row].campaign_id] = float(sims[row])
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def similarities(self, campaign_ids: Sequence[str], vector: Vectors) -> dict[str, float]:
        """Exact cosine for named campaigns (those the ANN did not return, e.g. repeat-purchase candidates)."""
        out: dict[str, float] = {}
        query = np.asarray(vector, dtype=np.float32)
        rest: list[str] = []
        for cid in campaign_ids:
            if cid in self.overlay.ids:
                row = next(i for i, e in enumerate(self.overlay.entries) if e.campaign_id == cid)
                out[cid] = float(self.overlay.matrix[row] @ query)
            else:
                rest.append(cid)
        if rest and self.base is not None and self.base.index.size:
            got: Any = self.base.index.get(campaign_keys(rest), dtype="f32")
            rows = got if isinstance(got, tuple) else list(got) if got is not None else [None] * len(rest)
            for cid, stored in zip(rest, rows, strict=True):
                if stored is None:
                    continue
                v = np.asarray(stored, dtype=np.float32)
                norm = float(np.linalg.norm(v))
                out[cid] = float(v @ query) / norm if norm > 0 else 0.0
        return out

    def campaigns_promoting(self, product_ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        base_map = self.base.product_campaigns if self.base is not None else {}
        for pid in product_ids:
            found.update(base_map.get(pid, ()))
            found.update(self.overlay.product_campaigns.get(pid, ()))
        return found

    def popular(self, segment: str) -> tuple[tuple[str, float], ...]:
        return self.base.popular.get(segment, ()) if self.base is not None else ()


Loader = Callable[[ArtefactStore, str], LoadedIndex]


class IndexHolder:
    """The serving process's current index: lock-free reads, polled pointer, atomic swap, last good kept.

    ``refresh_seconds`` bounds how often the pointer and overlay are polled (a stat or a HEAD), so a
    published version or an upsert from another process is live within about that long.
    """

    def __init__(
        self, artefacts: ArtefactStore, *, refresh_seconds: float = 2.0, expansion_search: int | None = None,
        clock: Callable[[], float] = time.monotonic, loader: Loader | None = None,
    ) -> None:
        self.artefacts = artefacts
        self.refresh_seconds = refresh_seconds
        self.expansion_search = expansion_search
        self._clock = clock
        self._loader: Loader = loader or (lambda a, v: load_version(a, v, expansion_search=expansion_search))
        self._snapshot = ServingSnapshot(base=None, overlay=Overlay())
        self._overlay_entries: list[OverlayEntry] = []
        self._pointer_stamp: str | None = None
        self._overlay_stamp: str | None = None
        self._next_check = 0.0
        self._refresh_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.last_error: str | None = None
        self.failed_versions: set[str] = set()
        self.swaps = 0

    def snapshot(self) -> ServingSnapshot:
        """The snapshot to use for one request (refreshing first when a poll is due)."""
        if self._clock() >= self._next_check:
            self.refresh()
        return self._snapshot

    def refresh(self, *, force: bool = False) -> bool:
        """Poll pointer and overlay; swap if either changed. Returns True if the snapshot changed.

        Only one thread refreshes at a time; the others do not wait, they keep the current snapshot.
        """
        if not self._refresh_lock.acquire(blocking=force):
            return False
        try:
            self._next_check = self._clock() + self.refresh_seconds
            base = self._snapshot.base
            changed = False
            pointer = self.artefacts.stamp(CURRENT)
            if force or pointer != self._pointer_stamp:
                version = current_version(self.artefacts)
                if version is not None and (base is None or version != base.version) \
                        and version not in self.failed_versions:
                    try:
                        base = self._loader(self.artefacts, version)
                        changed = True
                        self.last_error = None
                    except Exception as exc:  # a bad build must never take serving down: keep the last good
                        self.failed_versions.add(version)
                        self.last_error = f"version {version} failed to load: {exc}"
                        log.error("index load failed; keeping the last good index",
                                  extra={"version": version, "kept": base.version if base else None,
                                         "error": str(exc)})
                self._pointer_stamp = pointer
            overlay_stamp = self.artefacts.stamp(OVERLAY)
            if force or overlay_stamp != self._overlay_stamp:
                try:
                    self._overlay_entries = read_overlay(self.artefacts)
                    changed = True
                except Exception as exc:  # a torn/foreign overlay file: keep what we had
                    log.error("overlay read failed; keeping the previous overlay", extra={"error": str(exc)})
                self._overlay_stamp = overlay_stamp
            if changed:
                self._swap(base)
            return changed
        finally:
            self._refresh_lock.release()

    def _swap(self, base: LoadedIndex | None) -> None:
        previous = self._snapshot.version
        self._snapshot = ServingSnapshot(base=base, overlay=effective_overlay(self._overlay_entries, base))
        if base is not None and base.version != previous:
            self.swaps += 1
            log.info("campaign index swapped", extra={"version": base.version, "previous": previous,
                                                        "size": base.index.size})

    def upsert(self, entries: Sequence[OverlayEntry]) -> ServingSnapshot:
        """Add/replace campaigns in the overlay: live in this process at once, in others on their next poll.

        Read-modify-write of the persisted overlay under this process's lock; the file write is atomic.
        """
        with self._write_lock, self._refresh_lock:
            current = {e.campaign_id: e for e in read_overlay(self.artefacts)}
            for entry in entries:
                current[entry.campaign_id] = entry
            merged = sorted(current.values(), key=lambda e: e.campaign_id)
            self.artefacts.write_bytes(OVERLAY, overlay_to_bytes(merged))
            self._overlay_entries = merged
            self._overlay_stamp = self.artefacts.stamp(OVERLAY)
            self._swap(self._snapshot.base)
            return self._snapshot


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def as_vector(values: npt.ArrayLike) -> Vectors:
    return np.ascontiguousarray(values, dtype=np.float32)
