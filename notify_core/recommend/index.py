"""The campaign ANN index: a usearch HNSW (cosine) index saved as an immutable, versioned artefact.

Layout under the artefact store (files under ``<data_dir>/artefacts`` by default, S3 in aws)::

    campaign_index/<version>/index.usearch    the HNSW graph + vectors (f16 by default)
    campaign_index/<version>/keys.parquet     key (u64) -> campaign_id, content_hash, product_ids
    campaign_index/<version>/popular.parquet  segment ("*" or a country) -> ranked campaign ids
    campaign_index/<version>/copurchase.parquet product -> its co-purchase neighbours (optional)
    campaign_index/<version>/manifest.json    size, dim, dtype, graph options, model, recall@10, built_at
    campaign_index/CURRENT                    the version serving uses (one line, written atomically)
    campaign_index/overlay.parquet            campaigns upserted since the last build (see serving)

Keys are a 63-bit hash of the campaign id, never a row counter: the same campaign has the same key
in every build, so a key in a log, an overlay or an older version always means the same campaign.
Versions sort by time (``YYYYmmddTHHMMSSffffffZ-<content digest>``), so "newest" is a string compare.
A build never touches ``CURRENT``; publishing is a separate, explicit step (the sensor, or the asset
in the one-machine default), which is what lets a failed or low-recall build leave serving alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from usearch.index import Index

from notify_core.errors import NotFoundError, ValidationError
from notify_core.recommend.artefacts import ArtefactStore

PREFIX = "campaign_index"
CURRENT = f"{PREFIX}/CURRENT"
OVERLAY = f"{PREFIX}/overlay.parquet"
INDEX_FILE = "index.usearch"
KEYS_FILE = "keys.parquet"
POPULAR_FILE = "popular.parquet"
COPURCHASE_FILE = "copurchase.parquet"
MANIFEST_FILE = "manifest.json"
GLOBAL_SEGMENT = "*"
KEY_MASK = (1 << 63) - 1

Vectors = npt.NDArray[np.float32]


def campaign_key(campaign_id: str) -> int:
    """The stable 63-bit usearch key of a campaign (blake2b of the id; same in every build and process)."""
    digest = hashlib.blake2b(campaign_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & KEY_MASK


def campaign_keys(campaign_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    return np.fromiter((campaign_key(c) for c in campaign_ids), dtype=np.uint64, count=len(campaign_ids))


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """HNSW settings. Defaults are PLATFORM.md's measured sweet spot: f16, M=16, ef_add=128, ef=128
    (recall@10 ~0.997 at 200k x 384, p50 ~0.5 ms on 2 cores); raise ``expansion_search`` for bigger
    graphs, where recall at a fixed ef drops."""

    dtype: str = "f16"
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 128
    threads: int = 0  # 0 = all cores, for the build only


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    size: int
    dim: int
    dtype: str
    connectivity: int
    expansion_add: int
    expansion_search: int
    model: str
    built_at: str
    build_seconds: float
    recall_at_10: float | None = None
    recall_queries: int = 0
    recall_passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls(**json.loads(data))


def normalise_rows(vectors: npt.NDArray[Any]) -> Vectors:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def new_index(dim: int, options: IndexOptions) -> Index:
    return Index(ndim=dim, metric="cos", dtype=options.dtype, connectivity=options.connectivity,
                 expansion_add=options.expansion_add, expansion_search=options.expansion_search)


def set_expansion_search(index: Index, ef: int) -> None:
    """Search-time ef (usearch exposes it as a settable property its type stubs call read-only)."""
    index.expansion_search = ef  # type: ignore[misc]


def build_hnsw(campaign_ids: Sequence[str], vectors: Vectors, *, options: IndexOptions | None = None) -> Index:
    """An in-memory HNSW index over unit vectors, keyed by :func:`campaign_key`."""
    options = options or IndexOptions()
    if len(campaign_ids) != len(vectors):
        raise ValidationError(f"{len(campaign_ids)} ids for {len(vectors)} vectors")
    if len(set(campaign_ids)) != len(campaign_ids):
        raise ValidationError("duplicate campaign ids")
    keys = campaign_keys(campaign_ids)
    if len(np.unique(keys)) != len(keys):  # 63-bit collision: vanishingly rare, but never silent
        raise ValidationError("campaign key collision; rename one of the campaigns")
    index = new_index(vectors.shape[1] if vectors.ndim == 2 else 0, options)
    if len(keys):
        index.add(keys, normalise_rows(vectors), threads=options.threads)
    return index


def exact_top_k(base: Vectors, queries: Vectors, k: int) -> npt.NDArray[np.int64]:
    """Row numbers of the exact top-k by cosine (vectors unit-norm), best first; the recall reference."""
    k = min(k, len(base))
    scores = queries @ base.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


# Below this many campaigns a brute-force scan (~0.1 ms for 2k x 384) beats the graph and is exact; HNSW
# pays off at scale. (A tiny graph searched with random-looking queries also misses a few percent.)
EXACT_BELOW = 20_000


def search(index: Index, queries: Vectors, k: int) -> Any:
    """Top-k matches: exhaustive for small indexes, the HNSW graph above ``EXACT_BELOW``."""
    return index.search(queries, k, exact=index.size <= EXACT_BELOW)


TIE_TOLERANCE = 1e-3  # f16 vectors cannot order cosines closer than this (~1e-3 resolution near 1.0)


def recall_at_k(index: Index, base_ids: Sequence[str], base: Vectors, queries: Vectors, *, k: int = 10,
                chunk: int = 256, tie_tolerance: float = TIE_TOLERANCE) -> float:
    """Mean share of the ANN top-k that belongs in the exact top-k (1.0 for an empty query set).

    A returned campaign whose exact cosine is within ``tie_tolerance`` of the exact k-th best counts:
    it is a tie the index's f16 storage cannot break, not a miss (catalogues hold near-identical
    campaigns; without this a 60-campaign index "misses" by picking one twin over another).
    """
    if len(queries) == 0 or len(base) == 0:
        return 1.0
    k = min(k, len(base))
    keys = campaign_keys(base_ids)
    row_of = {int(key): row for row, key in enumerate(keys.tolist())}
    hits = 0
    for start in range(0, len(queries), chunk):
        q = normalise_rows(queries[start : start + chunk])
        exact = exact_top_k(base, q, k)
        found = search(index, q, k).keys.reshape(len(q), -1)
        for i in range(len(q)):
            kth = float(base[exact[i, -1]] @ q[i])
            rows = [row_of[int(key)] for key in found[i].tolist() if int(key) in row_of]
            truth = set(exact[i].tolist())
            hits += min(k, sum(1 for r in rows if r in truth or float(base[r] @ q[i]) >= kth - tie_tolerance))
    return hits / (len(queries) * k)


def new_version(digest_of: Sequence[str] = ()) -> str:
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.blake2b("\x1f".join(digest_of).encode(), digest_size=4).hexdigest()
    return f"{now}-{digest}"


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class SavedIndex:
    version: str
    manifest: Manifest
    size_bytes: int


KEYS_SCHEMA: dict[str, Any] = {"key": pl.UInt64, "campaign_id": pl.String, "content_hash": pl.String,
                               "product_ids": pl.List(pl.String)}
# What eligibility needs of a campaign, shipped with the version so serving never reads campaign rows per
# request (at 200k campaigns a random user's ~150 candidates mostly miss any cache: 3-40 ms of Store reads).
INFO_SCHEMA: dict[str, Any] = {"status": pl.String, "start_date": pl.Date, "end_date": pl.Date,
                               "target_countries": pl.List(pl.String), "category": pl.String,
                               "cooldown_hours": pl.Int32, "priority": pl.Int32}
POPULAR_SCHEMA: dict[str, Any] = {"segment": pl.String, "rank": pl.Int32, "campaign_id": pl.String,
                                  "score": pl.Float64}
# scoring.item_similarity's top neighbours per product (long format, best first per product). Versions
# written before it existed have no file and load with an empty map (no co-purchase term).
COPURCHASE_SCHEMA: dict[str, Any] = {"product_id": pl.String, "neighbour": pl.String, "similarity": pl.Float64}


def save_version(
    artefacts: ArtefactStore, index: Index, *, campaigns: pl.DataFrame, popular: pl.DataFrame, manifest: Manifest,
    copurchase: pl.DataFrame | None = None,
) -> SavedIndex:
    """Write one immutable version folder (index, side tables, manifest last). Never moves CURRENT.

    ``campaigns``: campaign_id, content_hash, product_ids in the index's order, plus the eligibility
    columns of ``INFO_SCHEMA`` where known. ``copurchase``: ``COPURCHASE_SCHEMA`` rows (none: no file).
    The manifest goes last, so a folder without one is an
    unfinished build that nothing will publish or load.
    """
    folder = f"{PREFIX}/{manifest.version}"
    info = [c for c in INFO_SCHEMA if c in campaigns.columns]
    keys = campaigns.select(
        pl.Series("key", campaign_keys(campaigns["campaign_id"].to_list()), dtype=pl.UInt64),
        "campaign_id", "content_hash", "product_ids", *info,
    ).cast({**KEYS_SCHEMA, **{c: INFO_SCHEMA[c] for c in info}})  # type: ignore[dict-item]
    with tempfile.TemporaryDirectory(prefix="notify-index-") as tmp:
        path = Path(tmp) / INDEX_FILE
        index.save(str(path))
        size = path.stat().st_size
        artefacts.upload(f"{folder}/{INDEX_FILE}", path)
    artefacts.write_bytes(f"{folder}/{KEYS_FILE}", _parquet_bytes(keys))
    artefacts.write_bytes(f"{folder}/{POPULAR_FILE}", _parquet_bytes(popular.cast(POPULAR_SCHEMA)))  # type: ignore[arg-type]
    if copurchase is not None:
        artefacts.write_bytes(f"{folder}/{COPURCHASE_FILE}",
                              _parquet_bytes(copurchase.select(list(COPURCHASE_SCHEMA)).cast(COPURCHASE_SCHEMA)))  # type: ignore[arg-type]
    artefacts.write_bytes(f"{folder}/{MANIFEST_FILE}", manifest.to_json())
    return SavedIndex(version=manifest.version, manifest=manifest, size_bytes=size)


def read_manifest(artefacts: ArtefactStore, version: str) -> Manifest | None:
    data = artefacts.read_bytes(f"{PREFIX}/{version}/{MANIFEST_FILE}")
    return Manifest.from_json(data) if data is not None else None


def update_manifest(artefacts: ArtefactStore, manifest: Manifest) -> None:
    artefacts.write_bytes(f"{PREFIX}/{manifest.version}/{MANIFEST_FILE}", manifest.to_json())


def current_version(artefacts: ArtefactStore) -> str | None:
    data = artefacts.read_bytes(CURRENT)
    text = data.decode().strip() if data else ""
    return text or None


def publish(artefacts: ArtefactStore, version: str) -> bool:
    """Point CURRENT at ``version`` (atomically); False if it already did. Refuses unfinished builds."""
    if read_manifest(artefacts, version) is None:
        raise NotFoundError(f"index version {version} has no manifest (unfinished or missing build)")
    if current_version(artefacts) == version:
        return False
    artefacts.write_bytes(CURRENT, f"{version}\n".encode())
    return True


def publishable_versions(artefacts: ArtefactStore) -> list[str]:
    """Finished builds whose recall check passed, oldest first."""
    out = []
    for version in artefacts.list_dirs(PREFIX):
        manifest = read_manifest(artefacts, version)
        if manifest is not None and manifest.recall_passed:
            out.append(version)
    return out


@dataclass(frozen=True, slots=True)
class LoadedIndex:
    """One version, opened for serving: the memory-mapped graph and its side tables."""

    version: str
    manifest: Manifest
    index: Index
    keys: npt.NDArray[np.uint64]
    campaign_ids: tuple[str, ...]
    content_hashes: tuple[str, ...]
    key_to_row: dict[int, int]
    product_campaigns: dict[str, tuple[str, ...]]
    popular: dict[str, tuple[tuple[str, float], ...]]
    campaign_rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # eligibility columns by id
    parsed: dict[str, Any] = field(default_factory=dict, compare=False)  # the recommender's parse cache
    copurchase: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # product -> neighbours


def load_version(artefacts: ArtefactStore, version: str, *, view: bool = True,
                 expansion_search: int | None = None) -> LoadedIndex:
    """Open a version: ``Index.restore(view=True)`` maps the file (~20 ms, pages load on demand)."""
    manifest = read_manifest(artefacts, version)
    if manifest is None:
        raise NotFoundError(f"index version {version} has no manifest")
    path = artefacts.local_file(f"{PREFIX}/{version}/{INDEX_FILE}")
    index = Index.restore(str(path), view=view)
    if index is None:
        raise NotFoundError(f"index file of version {version} could not be opened")
    set_expansion_search(index, expansion_search or manifest.expansion_search)
    keys_data = artefacts.read_bytes(f"{PREFIX}/{version}/{KEYS_FILE}")
    popular_data = artefacts.read_bytes(f"{PREFIX}/{version}/{POPULAR_FILE}")
    if keys_data is None or popular_data is None:
        raise NotFoundError(f"index version {version} is missing its side tables")
    keys_frame = pl.read_parquet(io.BytesIO(keys_data))
    if keys_frame.height != index.size:
        raise ValidationError(f"version {version}: {keys_frame.height} keys for {index.size} vectors")
    campaign_ids = tuple(keys_frame["campaign_id"].to_list())
    product_campaigns: dict[str, list[str]] = {}
    for cid, pids in zip(campaign_ids, keys_frame["product_ids"].to_list(), strict=True):
        for pid in pids or ():
            product_campaigns.setdefault(pid, []).append(cid)
    popular: dict[str, list[tuple[str, float]]] = {}
    for segment, cid, score in pl.read_parquet(io.BytesIO(popular_data)).sort("segment", "rank").select(
            "segment", "campaign_id", "score").iter_rows():
        popular.setdefault(segment, []).append((cid, float(score)))
    keys = keys_frame["key"].to_numpy().astype(np.uint64)
    copurchase: dict[str, list[tuple[str, float]]] = {}
    copurchase_data = artefacts.read_bytes(f"{PREFIX}/{version}/{COPURCHASE_FILE}")
    if copurchase_data is not None:
        for pid, other, sim in pl.read_parquet(io.BytesIO(copurchase_data)).select(
                list(COPURCHASE_SCHEMA)).iter_rows():
            copurchase.setdefault(pid, []).append((other, float(sim)))
    loaded = LoadedIndex(
        version=version, manifest=manifest, index=index, keys=keys, campaign_ids=campaign_ids,
        content_hashes=tuple(keys_frame["content_hash"].to_list()),
        key_to_row={int(k): i for i, k in enumerate(keys.tolist())},
        product_campaigns={p: tuple(c) for p, c in product_campaigns.items()},
        popular={s: tuple(v) for s, v in popular.items()},
        campaign_rows=({str(r["campaign_id"]): r for r in keys_frame.drop("key", "content_hash").iter_rows(named=True)}
                       if "status" in keys_frame.columns else {}),
        copurchase={p: tuple(n) for p, n in copurchase.items()},
    )
    return loaded


def popularity(
    campaigns: pl.DataFrame, purchases: pl.LazyFrame | pl.DataFrame, *, window_days: int = 90, top: int = 200,
) -> pl.DataFrame:
    """Campaign popularity per country and overall ("*"): distinct recent buyers of what it promotes.

    RELEVANCE.md's popularity baseline (distinct buyers, last 90 days) at campaign level: a campaign
    scores the distinct buyers, in the window before the newest purchase, of any product it promotes.
    This is the fallback ranking for users without an embedding; keeping ``top`` per segment bounds it.
    """
    lazy = purchases.lazy() if isinstance(purchases, pl.DataFrame) else purchases
    sales = lazy.filter(pl.col("user_id").is_not_null() & ~pl.col("is_return"))
    newest = sales.select(pl.col("ts").max()).collect().item()
    if newest is None or campaigns.is_empty():
        return pl.DataFrame(schema=POPULAR_SCHEMA)
    recent = sales.filter(pl.col("ts") >= newest - pl.duration(days=window_days)).select(
        "user_id", "product_id", pl.col("country").fill_null("")).collect()
    promoted = campaigns.select("campaign_id", pl.col("product_ids").fill_null([])).explode("product_ids").rename(
        {"product_ids": "product_id"}).drop_nulls()
    joined = recent.join(promoted, on="product_id")
    per_country = joined.group_by("country", "campaign_id").agg(pl.col("user_id").n_unique().alias("score"))
    overall = joined.group_by("campaign_id").agg(pl.col("user_id").n_unique().alias("score")).with_columns(
        pl.lit(GLOBAL_SEGMENT).alias("country"))
    ranked = pl.concat([per_country, overall.select(per_country.columns)]).rename({"country": "segment"})
    return (ranked.sort(["segment", "score", "campaign_id"], descending=[False, True, False])
            .group_by("segment", maintain_order=True).head(top)
            .with_columns((pl.col("campaign_id").cum_count().over("segment") - 1).cast(pl.Int32).alias("rank"),
                          pl.col("score").cast(pl.Float64))
            .select(list(POPULAR_SCHEMA)))
