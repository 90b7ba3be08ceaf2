"""The campaign ANN index (cosine, :mod:`notify_core.recommend.ann`) as an immutable, versioned artefact.

Layout under the artefact store (files under ``<data_dir>/artefacts`` by default, S3 in aws)::

    campaign_index/<version>/index.faiss      the IVF lists + fp16 vectors (or index.usearch: HNSW)
    campaign_index/<version>/keys.parquet     row -> key (u64), campaign_id, content_hash, product_ids,
                                              and the eligibility columns (status, dates, targeting...)
    campaign_index/<version>/popular.parquet  segment ("*" or a country) -> ranked campaign ids
    campaign_index/<version>/copurchase.parquet product -> its co-purchase neighbours (optional)
    campaign_index/<version>/manifest.json    size, dim, kind, dtype, search effort, model, recall@10
    campaign_index/CURRENT                    the version serving uses (one line, written atomically)
    campaign_index/overlay.parquet            campaigns upserted since the last build (see serving)

Serving works in row numbers of keys.parquet. Keys are a 63-bit hash of the campaign id, never a row
counter: the same campaign has the same key in every build (usearch stores them; faiss stores rows).
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
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.campaigns import ELIGIBILITY_COLUMNS
from notify_core.campaigns import schema as campaign_schema
from notify_core.campaigns.table import CampaignTable
from notify_core.errors import NotFoundError, ValidationError
from notify_core.recommend.ann import (
    DEFAULT_EFFORT,
    EFFORT_LADDER,
    KINDS,
    AnnIndex,
    HnswIndex,
    IvfIndex,
    Kind,
    Vectors,
    unit_rows,
)
from notify_core.recommend.artefacts import ArtefactStore
from notify_core.recommend.scoring import NeighbourMatrix

PREFIX = "campaign_index"
CURRENT = f"{PREFIX}/CURRENT"
OVERLAY = f"{PREFIX}/overlay.parquet"
INDEX_FILES: dict[str, str] = {"ivf": "index.faiss", "hnsw": "index.usearch"}
KEYS_FILE = "keys.parquet"
POPULAR_FILE = "popular.parquet"
COPURCHASE_FILE = "copurchase.parquet"
MANIFEST_FILE = "manifest.json"
GLOBAL_SEGMENT = "*"
KEY_MASK = (1 << 63) - 1



def campaign_key(campaign_id: str) -> int:
    """The stable 63-bit usearch key of a campaign (blake2b of the id; same in every build and process)."""
    digest = hashlib.blake2b(campaign_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & KEY_MASK


def campaign_keys(campaign_ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    return np.fromiter((campaign_key(c) for c in campaign_ids), dtype=np.uint64, count=len(campaign_ids))


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexOptions:
    """How a version is built. ``kind``: "ivf" (faiss, the default) or "hnsw" (usearch); see
    :mod:`notify_core.recommend.ann` for why. ``search_effort`` (lists probed / expansion_search): None lets
    the build pick the cheapest setting of ``ann.EFFORT_LADDER`` that reaches the recall target on sampled
    user vectors, and records it in the manifest. ``lists`` (ivf): None = ~2 sqrt(n).
    ``connectivity``/``expansion_add``: hnsw graph settings."""

    kind: Kind = "ivf"
    dtype: str = "f16"
    search_effort: int | None = None
    lists: int | None = None
    connectivity: int = 16
    expansion_add: int = 128
    threads: int = 0  # 0 = all cores, for the build only


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    size: int
    dim: int
    dtype: str
    model: str
    built_at: str
    build_seconds: float
    kind: Kind = "ivf"
    search_effort: int = DEFAULT_EFFORT["ivf"]
    params: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float | None = None
    recall_queries: int = 0
    recall_passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Reads this format and the first one (usearch only: connectivity/expansion_* at the top level),
        so versions already on disk or S3 stay loadable and publishable after an upgrade."""
        raw = json.loads(data)
        if "kind" not in raw and "connectivity" in raw:
            raw["kind"] = "hnsw"
            raw["params"] = {"connectivity": raw.pop("connectivity"), "expansion_add": raw.pop("expansion_add", None)}
            raw["search_effort"] = raw.pop("expansion_search", DEFAULT_EFFORT["hnsw"])
        known = {f.name for f in fields(cls)}
        unknown = {k: raw.pop(k) for k in list(raw) if k not in known}
        if unknown:  # written by a newer Notify: keep what we do not understand instead of failing
            raw["extra"] = {**raw.get("extra", {}), "unknown": unknown}
        return cls(**raw)


def normalise_rows(vectors: npt.NDArray[Any]) -> Vectors:
    return unit_rows(vectors) if len(vectors) else np.ascontiguousarray(vectors, dtype=np.float32)


def index_kind(value: str) -> Kind:
    """``value`` as an index kind (settings and resource config are plain strings); ValidationError if unknown."""
    for kind in KINDS:
        if value == kind:
            return kind
    raise ValidationError(f"unknown index kind {value!r}; expected one of {KINDS}")


def build_index(campaign_ids: Sequence[str], vectors: Vectors, *, options: IndexOptions | None = None) -> AnnIndex:
    """An ANN index over the campaigns' unit vectors, rows in ``campaign_ids`` order."""
    options = options or IndexOptions()
    if len(campaign_ids) != len(vectors):
        raise ValidationError(f"{len(campaign_ids)} ids for {len(vectors)} vectors")
    if len(set(campaign_ids)) != len(campaign_ids):
        raise ValidationError("duplicate campaign ids")
    keys = campaign_keys(campaign_ids)
    if len(np.unique(keys)) != len(keys):  # 63-bit collision: vanishingly rare, but never silent
        raise ValidationError("campaign key collision; rename one of the campaigns")
    data = normalise_rows(vectors)
    index: AnnIndex
    if options.kind == "ivf":
        index = IvfIndex.build(data, dtype=options.dtype, lists=options.lists, threads=options.threads)
    elif options.kind == "hnsw":
        index = HnswIndex.build(data, keys=keys, dtype=options.dtype, connectivity=options.connectivity,
                                expansion_add=options.expansion_add, threads=options.threads)
    else:
        raise ValidationError(f"unknown index kind {options.kind!r}; expected one of {KINDS}")
    index.set_effort(options.search_effort or DEFAULT_EFFORT[options.kind])
    return index


def exact_top_k(base: Vectors, queries: Vectors, k: int) -> npt.NDArray[np.int64]:
    """Row numbers of the exact top-k by cosine (vectors unit-norm), best first; the recall reference."""
    k = min(k, len(base))
    scores = queries @ base.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


TIE_TOLERANCE = 1e-3  # f16 vectors cannot order cosines closer than this (~1e-3 resolution near 1.0)


@dataclass(frozen=True, slots=True)
class RecallReference:
    """Exact answers for a query sample, computed once and reused for every effort the build tries."""

    queries: Vectors
    top: npt.NDArray[np.int64]  # queries x k exact rows, best first
    kth: npt.NDArray[np.float32]  # the exact k-th best cosine per query
    base: Vectors

    @classmethod
    def of(cls, base: Vectors, queries: Vectors, *, k: int = 10, chunk: int = 256) -> RecallReference:
        q = normalise_rows(queries)
        k = min(k, len(base))
        tops = [exact_top_k(base, q[s : s + chunk], k) for s in range(0, len(q), chunk)]
        top = np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)
        kth = np.einsum("nd,nd->n", base[top[:, -1]], q) if len(q) else np.zeros(0, dtype=np.float32)
        return cls(queries=q, top=top, kth=kth.astype(np.float32), base=base)


def recall_at_k(index: AnnIndex, reference: RecallReference, *, tie_tolerance: float = TIE_TOLERANCE) -> float:
    """Mean share of the ANN top-k that belongs in the exact top-k (1.0 for an empty query set).

    A returned campaign whose exact cosine is within ``tie_tolerance`` of the exact k-th best counts:
    it is a tie the index's f16 storage cannot break, not a miss (catalogues hold near-identical
    campaigns; without this a 60-campaign index "misses" by picking one twin over another).
    """
    q, top = reference.queries, reference.top
    if len(q) == 0 or len(reference.base) == 0:
        return 1.0
    k = top.shape[1]
    found = index.search(q, k, threads=0).rows
    hits = 0
    for i in range(len(q)):
        rows = found[i][found[i] >= 0]
        truth = set(top[i].tolist())
        close = reference.base[rows] @ q[i] >= reference.kth[i] - tie_tolerance
        hits += min(k, sum(1 for r, ok in zip(rows.tolist(), close.tolist(), strict=True) if r in truth or ok))
    return float(hits / (len(q) * k))


def tune_effort(index: AnnIndex, reference: RecallReference, *, target: float,
                efforts: Sequence[int] | None = None) -> tuple[int, float]:
    """The cheapest effort reaching ``target`` recall@k, and its recall (the last tried if none does).

    Exhaustive indexes have nothing to tune: their default effort, recall measured once.
    """
    ladder = list(efforts or EFFORT_LADDER[index.kind])
    if index.exact:
        ladder = ladder[:1] if efforts else [DEFAULT_EFFORT[index.kind]]
    effort, recall = ladder[0], 0.0
    for effort in ladder:
        index.set_effort(effort)
        recall = recall_at_k(index, reference)
        if recall >= target:
            break
    return effort, recall


def new_version(digest_of: Sequence[str] = (), *, now: datetime) -> str:
    """A version name that sorts by build time (``now``, the caller's clock) and names its inputs."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.blake2b("\x1f".join(digest_of).encode(), digest_size=4).hexdigest()
    return f"{stamp}-{digest}"


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
INFO_SCHEMA: dict[str, Any] = campaign_schema(*ELIGIBILITY_COLUMNS)
POPULAR_SCHEMA: dict[str, Any] = {"segment": pl.String, "rank": pl.Int32, "campaign_id": pl.String,
                                  "score": pl.Float64}
# scoring.item_similarity's top neighbours per product (long format, best first per product). Versions
# written before it existed have no file and load with an empty map (no co-purchase term).
COPURCHASE_SCHEMA: dict[str, Any] = {"product_id": pl.String, "neighbour": pl.String, "similarity": pl.Float64}


def save_version(
    artefacts: ArtefactStore, index: AnnIndex, *, campaigns: pl.DataFrame, popular: pl.DataFrame, manifest: Manifest,
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
        path = Path(tmp) / INDEX_FILES[index.kind]
        index.save(path)
        size = path.stat().st_size
        artefacts.upload(f"{folder}/{INDEX_FILES[index.kind]}", path)
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


KEEP_SUPERSEDED = 3
"""Versions older than the served one kept whatever their age (a rollback: point ``CURRENT`` back)."""

SUPERSEDED_FOR = timedelta(days=7)
"""A version older than the served one is kept while it was built less than this long ago: a plan run, its
candidate workers or a warm process may still open the version they started with."""


def version_built_at(version: str) -> datetime | None:
    """When a version was built, from its name (:func:`new_version`); None for a name that is not one."""
    try:
        return datetime.strptime(version.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def prune_versions(artefacts: ArtefactStore, *, now: datetime, keep: int = KEEP_SUPERSEDED,
                   kept_for: timedelta = SUPERSEDED_FOR) -> list[str]:
    """Remove the version folders older than the served one (``CURRENT``), beyond the ``keep`` newest of
    them, built more than ``kept_for`` before ``now`` (the caller's clock); returns the versions removed.
    Never the served version, one newer than it (a build waiting to be published, or failed and kept for
    its report), or a folder whose name is not a version. Without it every build stayed for good: a new
    version a day (purchases change the side tables) grew the artefacts by one index a day."""
    current = current_version(artefacts)
    if current is None:
        return []
    older = [v for v in artefacts.list_dirs(PREFIX) if v < current]
    removed = []
    for version in older[: max(len(older) - keep, 0)]:
        built = version_built_at(version)
        if built is not None and built <= now - kept_for:
            artefacts.remove_dir(f"{PREFIX}/{version}")
            removed.append(version)
    return removed


def publishable_versions(artefacts: ArtefactStore) -> list[str]:
    """Finished builds whose recall check passed, oldest first."""
    out = []
    for version in artefacts.list_dirs(PREFIX):
        manifest = read_manifest(artefacts, version)
        if manifest is not None and manifest.recall_passed:
            out.append(version)
    return out


def publish_newest(artefacts: ArtefactStore) -> tuple[str | None, str | None]:
    """Point CURRENT at the newest build that passed its recall check, if newer than what is served.

    The one publishing rule, shared by the ``campaign_index_publisher`` sensor (under dagster-daemon)
    and ``notify run`` in aws (no daemon there). Returns ``(published or None, previously current)``.
    """
    versions = publishable_versions(artefacts)
    current = current_version(artefacts)
    if not versions or (current is not None and current >= versions[-1]):
        return None, current
    publish(artefacts, versions[-1])
    return versions[-1], current


@dataclass(frozen=True, eq=False)
class LoadedIndex:
    """One version, opened for serving: the ANN index and its side tables, by row."""

    version: str
    manifest: Manifest
    index: AnnIndex
    campaign_ids: tuple[str, ...]
    content_hashes: tuple[str, ...]
    table: CampaignTable
    popular: dict[str, tuple[tuple[str, float], ...]]
    copurchase: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # product -> neighbours
    # the same map as a sparse matrix, built with the version (not on the first request that needs it)
    copurchase_matrix: NeighbourMatrix | None = None


def open_index(path: Path, manifest: Manifest, *, keys: npt.NDArray[np.uint64], view: bool = True) -> AnnIndex:
    """The version's index file: usearch memory-maps it (``view``, opens in ~20 ms); faiss reads it
    (~0.1 s at 200k; its mapped IVF searches 4-5x slower)."""
    if manifest.kind == "ivf":
        return IvfIndex.load(path)
    if manifest.kind == "hnsw":
        return HnswIndex.load(path, keys=keys, view=view)
    raise ValidationError(f"version {manifest.version}: unknown index kind {manifest.kind!r}")


def load_version(artefacts: ArtefactStore, version: str, *, view: bool = True,
                 search_effort: int | None = None) -> LoadedIndex:
    """Open a version for serving; ``search_effort`` overrides the one the build tuned (the manifest's)."""
    manifest = read_manifest(artefacts, version)
    if manifest is None:
        raise NotFoundError(f"index version {version} has no manifest")
    keys_data = artefacts.read_bytes(f"{PREFIX}/{version}/{KEYS_FILE}")
    popular_data = artefacts.read_bytes(f"{PREFIX}/{version}/{POPULAR_FILE}")
    if keys_data is None or popular_data is None:
        raise NotFoundError(f"index version {version} is missing its side tables")
    keys_frame = pl.read_parquet(io.BytesIO(keys_data))
    path = artefacts.local_file(f"{PREFIX}/{version}/{INDEX_FILES.get(manifest.kind, 'index')}")
    index = open_index(path, manifest, keys=keys_frame["key"].to_numpy().astype(np.uint64), view=view)
    if keys_frame.height != index.size:
        raise ValidationError(f"version {version}: {keys_frame.height} keys for {index.size} vectors")
    index.set_effort(search_effort or manifest.search_effort)
    popular: dict[str, list[tuple[str, float]]] = {}
    for segment, cid, score in pl.read_parquet(io.BytesIO(popular_data)).sort("segment", "rank").select(
            "segment", "campaign_id", "score").iter_rows():
        popular.setdefault(segment, []).append((cid, float(score)))
    copurchase: dict[str, list[tuple[str, float]]] = {}
    copurchase_data = artefacts.read_bytes(f"{PREFIX}/{version}/{COPURCHASE_FILE}")
    if copurchase_data is not None:
        for pid, other, sim in pl.read_parquet(io.BytesIO(copurchase_data)).select(
                list(COPURCHASE_SCHEMA)).iter_rows():
            copurchase.setdefault(pid, []).append((other, float(sim)))
    return LoadedIndex(
        version=version, manifest=manifest, index=index, campaign_ids=tuple(keys_frame["campaign_id"].to_list()),
        content_hashes=tuple(keys_frame["content_hash"].to_list()),
        table=CampaignTable.from_frame(keys_frame.drop("key", "content_hash")),
        popular={s: tuple(v) for s, v in popular.items()},
        copurchase={p: tuple(n) for p, n in copurchase.items()},
        copurchase_matrix=NeighbourMatrix.of(copurchase) if copurchase else None,
    )


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
