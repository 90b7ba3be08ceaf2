"""The ANN port and its two adapters: faiss IVF (the default) and usearch HNSW.

Both answer the same questions with the same types, in *row numbers* of the version's campaign table
(not keys, not ids): ``search`` returns the top-k rows and their cosine similarities per query (-1 pads
a short answer), ``vectors`` returns stored vectors by row. The rest of Notify never sees which library
is underneath.

Why IVF is the default (bench/results/recommend.json, 200k campaigns x 384, 2 cores): serving queries
with *user* vectors, and a user's vector is a purchase-weighted mean, so it sits between the topics the
user buys from and its true top-10 spans ~2 clusters. HNSW's greedy walk settles in one of them:
usearch f16 M16 reaches recall@10 0.88 at ef=128 and 0.93 at ef=512 (p99 1.7 ms); M32/ef_add 256 0.98
at ef=512 (p99 2.0 ms). An inverted file ranks *every* list centroid against the query, so both
topics' lists get probed: faiss IVF (fp16 vectors, ~2 sqrt(n) lists) reaches 0.997 probing 16 lists at
p99 0.18 ms, and builds in ~6 s instead of ~35-70 s. HNSW stays available (``kind="hnsw"``) for
catalogues whose queries look like their items, where it needs no training.

Small indexes (``EXACT_BELOW`` vectors or fewer) are searched exhaustively by both adapters: a scan of
20k x 384 costs about what a graph walk does, and it is exact.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from notify_core.errors import ValidationError

Vectors = npt.NDArray[np.float32]
Rows = npt.NDArray[np.int64]
Kind = Literal["ivf", "hnsw"]
KINDS: tuple[Kind, ...] = ("ivf", "hnsw")

EXACT_BELOW = 20_000
DEFAULT_EFFORT: dict[Kind, int] = {"ivf": 16, "hnsw": 128}
# What the build tries, cheapest first, when no effort is configured: the first reaching the recall
# target is kept (in the manifest); ivf = lists probed, hnsw = expansion_search.
EFFORT_LADDER: dict[Kind, tuple[int, ...]] = {"ivf": (4, 8, 12, 16, 24, 32, 48, 64, 96, 128),
                                              "hnsw": (32, 64, 128, 256, 512, 1024)}


@dataclass(frozen=True, slots=True)
class Matches:
    """Top-k per query, best first: ``rows`` (queries x k, -1 where fewer than k) and cosine ``similarities``."""

    rows: Rows
    similarities: npt.NDArray[np.float32]


class AnnIndex(Protocol):
    """What serving and the build need of an ANN index over unit vectors (cosine = inner product)."""

    kind: Kind

    @property
    def size(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def exact(self) -> bool: ...

    @property
    def params(self) -> dict[str, Any]:
        """The structure's own settings (recorded in the manifest)."""

    def set_effort(self, effort: int) -> None:
        """Search effort: lists probed (ivf) or expansion_search (hnsw); higher = better recall, slower."""

    def search(self, queries: Vectors, k: int, *, threads: int = 1) -> Matches: ...

    def vectors(self, rows: Rows) -> Vectors: ...

    def save(self, path: Path) -> None: ...


def unit_rows(vectors: npt.ArrayLike) -> Vectors:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def default_lists(size: int) -> int:
    """IVF list count: ~2 sqrt(n) (894 at 200k), and at least 39 vectors per list for k-means to train."""
    return max(1, min(size // 39, round(2 * math.sqrt(size))))


# -- faiss IVF ---------------------------------------------------------------------------------------
def _faiss() -> Any:
    import faiss  # imported on first use: `import notify_core` stays light

    return faiss


def set_faiss_threads(threads: int) -> None:
    """faiss parallelises with OpenMP, process-wide. Serving answers one query per call and must not keep
    idle OpenMP threads spinning beside its request threads, so it runs with 1; batch callers pass more."""
    faiss = _faiss()
    if faiss.omp_get_max_threads() != threads:
        faiss.omp_set_num_threads(threads)


class IvfIndex:
    """faiss ``IndexIVFScalarQuantizer`` (fp16) or ``IndexIVFFlat`` (f32); ``IndexFlatIP`` when small.

    Vector ids are row numbers, so a search answers rows with no lookup, and a direct map (built on
    load) gives ``vectors`` by row.
    """

    kind: Kind = "ivf"

    def __init__(self, index: Any) -> None:
        self._index = index
        self._ivf = hasattr(index, "nprobe")
        self._flat_view: tuple[int, Vectors] | None = None
        if self._ivf:
            index.make_direct_map()

    @classmethod
    def build(cls, vectors: Vectors, *, dtype: str = "f16", lists: int | None = None, seed: int = 7,
              threads: int = 0) -> IvfIndex:
        faiss = _faiss()
        data = unit_rows(vectors) if len(vectors) else np.zeros((0, vectors.shape[1]), dtype=np.float32)
        dim = int(data.shape[1])
        set_faiss_threads(threads or _cpus())
        try:
            if len(data) <= EXACT_BELOW:
                index = faiss.IndexFlatIP(dim)
                index.add(data)
                return cls(index)
            nlist = lists or default_lists(len(data))
            quantizer = faiss.IndexFlatIP(dim)
            if dtype == "f32":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            elif dtype == "f16":
                index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                      faiss.METRIC_INNER_PRODUCT)
            else:
                raise ValidationError(f"ivf vectors are f16 or f32, not {dtype!r}")
            index.cp.seed = seed
            sample = data
            if len(data) > nlist * 64:  # k-means needs ~40-256 points per centroid; more only costs time
                rows = np.random.default_rng(seed).choice(len(data), size=nlist * 64, replace=False)
                sample = data[np.sort(rows)]
            index.train(sample)
            index.add_with_ids(data, np.arange(len(data), dtype=np.int64))
            index.quantizer_trains_alone = 0
            return cls(index)
        finally:
            set_faiss_threads(1)

    @classmethod
    def load(cls, path: Path, *, view: bool = False) -> IvfIndex:
        """Read into memory (~0.1 s for 200k fp16 vectors, 157 MB). ``view=True`` memory-maps instead, but
        faiss 1.15 searches a mapped IVF 4-5x slower here (p50 0.65 vs 0.14 ms), so serving reads."""
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if view else 0
        return cls(faiss.read_index(str(path), flags))

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def exact(self) -> bool:
        return not self._ivf

    @property
    def lists(self) -> int:
        return int(self._index.nlist) if self._ivf else 0

    @property
    def params(self) -> dict[str, Any]:
        return {"lists": self.lists, "exact": self.exact}

    def set_effort(self, effort: int) -> None:
        if self._ivf:
            self._index.nprobe = max(1, min(int(effort), self.lists))

    def search(self, queries: Vectors, k: int, *, threads: int = 1) -> Matches:
        q = unit_rows(queries)
        k = max(1, min(k, self.size)) if self.size else 1
        if not self.size:
            return Matches(np.full((len(q), k), -1, dtype=np.int64), np.zeros((len(q), k), dtype=np.float32))
        set_faiss_threads(max(1, threads))
        try:
            sims, rows = self._index.search(q, k)
        finally:
            if threads > 1:
                set_faiss_threads(1)
        return Matches(rows.astype(np.int64, copy=False), sims.astype(np.float32, copy=False))

    def vectors(self, rows: Rows) -> Vectors:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = self._flat_vectors()
        if flat is not None:  # the exact index's own floats, gathered (reconstruct_batch copies them one by one)
            return flat[rows]
        return np.asarray(self._index.reconstruct_batch(rows), dtype=np.float32)

    def _flat_vectors(self) -> Vectors | None:
        """The exact (``IndexFlatIP``) index's stored vectors as a zero-copy, read-only numpy view (None for
        IVF): serving scores every candidate the ANN did not return (repeat, co-purchase, popular rows)
        by its stored vector, and ``reconstruct_batch`` cost ~20 us a request where a gather costs ~2.
        The same floats, so the same cosines bit for bit. Re-made if the index grew (``ntotal`` changed:
        ``add`` may move the storage); a serving index never grows."""
        if self._ivf or not hasattr(self._index, "get_xb"):  # only a flat index stores its floats as they are
            return None
        total = int(self._index.ntotal)
        cached = self._flat_view
        if cached is None or cached[0] != total:
            if not total:
                return None
            view = _faiss().rev_swig_ptr(self._index.get_xb(), total * int(self._index.d))
            view = np.asarray(view, dtype=np.float32).reshape(total, int(self._index.d))
            view.flags.writeable = False
            self._flat_view = cached = (total, view)
        return cached[1]

    def save(self, path: Path) -> None:
        _faiss().write_index(self._index, str(path))


# -- usearch HNSW ------------------------------------------------------------------------------------
class HnswIndex:
    """usearch HNSW (cosine). Keys are the campaigns' stable 63-bit keys (the same campaign has the same
    key in every build); ``keys`` (row order) maps them back to rows."""

    kind: Kind = "hnsw"

    def __init__(self, index: Any, keys: npt.NDArray[np.uint64]) -> None:
        if int(index.size) != len(keys):
            raise ValidationError(f"{len(keys)} keys for {index.size} vectors")
        self._index = index
        self._keys = np.asarray(keys, dtype=np.uint64)
        self._order = np.argsort(self._keys, kind="stable")
        self._sorted = self._keys[self._order]

    @classmethod
    def build(cls, vectors: Vectors, *, keys: npt.NDArray[np.uint64], dtype: str = "f16", connectivity: int = 16,
              expansion_add: int = 128, threads: int = 0) -> HnswIndex:
        from usearch.index import Index

        dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=connectivity, expansion_add=expansion_add)
        if len(keys):
            index.add(np.asarray(keys, dtype=np.uint64), unit_rows(vectors), threads=threads)
        return cls(index, keys)

    @classmethod
    def load(cls, path: Path, *, keys: npt.NDArray[np.uint64], view: bool = True) -> HnswIndex:
        from usearch.index import Index

        index = Index.restore(str(path), view=view)
        if index is None:
            raise ValidationError(f"{path} is not a usearch index")
        return cls(index, keys)

    @property
    def size(self) -> int:
        return int(self._index.size)

    @property
    def dim(self) -> int:
        return int(self._index.ndim)

    @property
    def exact(self) -> bool:
        return self.size <= EXACT_BELOW

    @property
    def params(self) -> dict[str, Any]:
        return {"connectivity": int(self._index.connectivity), "expansion_add": int(self._index.expansion_add),
                "exact": self.exact}

    def set_effort(self, effort: int) -> None:
        self._index.expansion_search = int(effort)

    def rows_of(self, keys: npt.NDArray[np.uint64]) -> Rows:
        """Rows of usearch keys; -1 for a key this index does not hold."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(self._sorted):
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted, keys), 0, len(self._sorted) - 1)
        return np.where(self._sorted[pos] == keys, self._order[pos], -1).astype(np.int64)

    def search(self, queries: Vectors, k: int, *, threads: int = 1) -> Matches:
        q = unit_rows(queries)
        k = max(1, min(k, self.size)) if self.size else 1
        if not self.size:
            return Matches(np.full((len(q), k), -1, dtype=np.int64), np.zeros((len(q), k), dtype=np.float32))
        found = self._index.search(q, k, exact=self.exact, threads=threads)
        keys = np.zeros((len(q), k), dtype=np.uint64)
        distances = np.ones((len(q), k), dtype=np.float32)
        if len(q) == 1:  # usearch answers one query with a trimmed 1-D Matches, a batch with BatchMatches
            counts = np.array([len(found.keys)])
            keys[0, : counts[0]] = found.keys
            distances[0, : counts[0]] = found.distances
        else:
            counts = np.asarray(found.counts)
            keys[:], distances[:] = found.keys, found.distances
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        rows = np.where(valid, self.rows_of(keys), -1)
        return Matches(rows, np.where(valid, 1.0 - distances, 0.0).astype(np.float32))

    def vectors(self, rows: Rows) -> Vectors:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.dim), dtype=np.float32)
        got = self._index.get(self._keys[rows], dtype="f32")
        return unit_rows(np.asarray(got, dtype=np.float32).reshape(len(rows), self.dim))

    def save(self, path: Path) -> None:
        self._index.save(str(path))


def _cpus() -> int:
    return os.cpu_count() or 1
