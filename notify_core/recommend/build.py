"""Build one campaign index version from the lake: vectors, side tables, recall against exact search.

What the ``campaign_index`` asset runs. It reads the campaign embeddings the embedding pipeline saved
(``embeddings_campaign``), the campaigns (what each promotes) and recent purchases (popularity for the
fallback), builds the ANN index, measures recall@10 against exact numpy search on a deterministic
sample of *user* vectors (the queries serving actually runs) and keeps the cheapest search effort that
reaches ``min_recall`` (unless one is configured), writes the version folder, and records effort and
recall in its manifest, plus each product's top co-purchase neighbours (``scoring.item_similarity`` on
the lake's user x product purchases, ``copurchase.parquet``: serving's co-purchase term and candidates).
It never moves ``CURRENT``: publishing is the caller's decision, and a
version whose recall is below ``min_recall`` is never publishable.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from notify_core.embeddings.store import CAMPAIGN, USER, read_lake_table, state_table, vectors_of
from notify_core.errors import NotFoundError
from notify_core.lake import Lake
from notify_core.recommend import scoring
from notify_core.recommend.ann import Vectors
from notify_core.recommend.artefacts import ArtefactStore
from notify_core.recommend.index import (
    COPURCHASE_SCHEMA,
    INFO_SCHEMA,
    IndexOptions,
    Manifest,
    RecallReference,
    SavedIndex,
    build_index,
    current_version,
    new_version,
    normalise_rows,
    popularity,
    read_manifest,
    save_version,
    tune_effort,
)


@dataclass(frozen=True, slots=True)
class IndexBuild:
    saved: SavedIndex
    recall_at_10: float
    recall_queries: int
    passed: bool
    build_seconds: float
    reused: bool = False  # the current version was built from identical inputs: nothing was rebuilt

    def metadata(self) -> dict[str, Any]:
        """Materialisation metadata ("rows" = campaigns indexed, what the CLI summary shows)."""
        m = self.saved.manifest
        return {"rows": m.size, "version": m.version, "recall_at_10": round(self.recall_at_10, 4),
                "recall_queries": self.recall_queries, "recall_passed": self.passed, "dim": m.dim,
                "kind": m.kind, "dtype": m.dtype, "search_effort": m.search_effort, **m.params,
                "build_seconds": round(self.build_seconds, 3), "model": m.model, "reused": self.reused,
                **({} if self.reused else {"index_bytes": self.saved.size_bytes})}


def inputs_digest(*frames: pl.DataFrame, settings: Mapping[str, object]) -> str:
    """What a version is a function of: the campaign vectors' content hashes, the side tables and the
    build settings. Equal digests = an identical version, so a re-run reuses it instead of rebuilding."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for frame in frames:
        digest.update(json.dumps(frame.schema.names() if frame.width else []).encode())
        digest.update(frame.hash_rows(seed=7).to_numpy().tobytes() if frame.height else b"-")
    return digest.hexdigest()[:32]


def reuse_current(artefacts: ArtefactStore, digest: str) -> IndexBuild | None:
    """The published version, when it passed its check and was built from inputs with this digest."""
    version = current_version(artefacts)
    manifest = read_manifest(artefacts, version) if version else None
    if manifest is None or manifest.extra.get("inputs_digest") != digest or not manifest.recall_passed:
        return None
    return IndexBuild(saved=SavedIndex(version=manifest.version, manifest=manifest, size_bytes=0),
                      recall_at_10=float(manifest.recall_at_10 or 0.0), recall_queries=manifest.recall_queries,
                      passed=True, build_seconds=0.0, reused=True)


def sample_rows(vectors: Vectors, *, sample: int, seed: int) -> Vectors:
    if len(vectors) <= sample:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=sample, replace=False))
    return vectors[rows]


def copurchase_neighbours(purchases: pl.LazyFrame | pl.DataFrame, *,
                          neighbours: int = scoring.BM25_NEIGHBOURS) -> pl.DataFrame:
    """``COPURCHASE_SCHEMA`` rows: each product's top ``neighbours`` by BM25 item-kNN over who ordered what
    (:func:`scoring.bm25_similarity` on the buyers x products matrix of distinct non-return orders: the
    signal the learned ranker was fitted on, the same function the evaluation calls)."""
    lazy = purchases.lazy() if isinstance(purchases, pl.DataFrame) else purchases
    pairs = (lazy.filter(pl.col("user_id").is_not_null() & ~pl.col("is_return"))
             .group_by("user_id", "product_id").agg(pl.col("order_id").n_unique().alias("orders")).collect())
    if pairs.is_empty():
        return pl.DataFrame(schema=COPURCHASE_SCHEMA)
    users = pairs["user_id"].unique().sort().to_list()
    products = pairs["product_id"].unique().sort().to_list()
    u = {x: i for i, x in enumerate(users)}
    p = {x: i for i, x in enumerate(products)}
    matrix = sparse.csr_matrix(
        (pairs["orders"].to_numpy().astype(np.float64),
         ([u[x] for x in pairs["user_id"].to_list()], [p[x] for x in pairs["product_id"].to_list()])),
        shape=(len(users), len(products)))
    sim = scoring.bm25_similarity(matrix, neighbours=neighbours).tocoo()
    frame = pl.DataFrame({"product_id": np.asarray(products, dtype=object)[sim.row].tolist(),
                          "neighbour": np.asarray(products, dtype=object)[sim.col].tolist(),
                          "similarity": sim.data.astype(np.float64)}, schema=COPURCHASE_SCHEMA)
    return (frame.filter(pl.col("similarity") > 0)
            .sort(["product_id", "similarity", "neighbour"], descending=[False, True, False]))


def build_campaign_index(
    lake: Lake, artefacts: ArtefactStore, *, now: datetime, options: IndexOptions | None = None,
    recall_sample: int = 500, min_recall: float = 0.99, seed: int = 7, reuse: bool = True,
) -> IndexBuild:
    """Build, evaluate and save a version from the lake's campaign embeddings (see the module doc).

    ``now`` (the caller's clock) names and stamps the version. ``reuse``: when the published version was
    built from identical inputs (:func:`inputs_digest`), return it instead of building the same index
    again (a re-run of an unchanged pipeline).
    """
    options = options or IndexOptions()
    state = read_lake_table(lake, state_table(CAMPAIGN))
    if state is None or state.is_empty():
        raise NotFoundError("no campaign embeddings in the lake: run campaign_embeddings first")
    state = state.sort("id")
    ids = state["id"].to_list()
    vectors = normalise_rows(vectors_of(state))
    campaigns = lake.read("campaigns").select("campaign_id", "product_ids", *INFO_SCHEMA)
    side = (pl.DataFrame({"campaign_id": ids, "content_hash": state["content_hash"].to_list()})
            .join(campaigns, on="campaign_id", how="left", maintain_order="left"))
    popular = popularity(campaigns.filter(pl.col("campaign_id").is_in(ids)), lake.scan("purchases"))
    copurchase = copurchase_neighbours(lake.scan("purchases"))
    models = sorted(set(state["model"].to_list()))
    digest = inputs_digest(side, popular, copurchase, settings={
        "options": asdict(options), "min_recall": min_recall, "recall_sample": recall_sample, "seed": seed,
        "models": models})
    if reuse and (reused := reuse_current(artefacts, digest)) is not None:
        return reused

    started = time.perf_counter()
    index = build_index(ids, vectors, options=options)
    build_seconds = time.perf_counter() - started

    users = read_lake_table(lake, state_table(USER))
    queries = sample_rows(normalise_rows(vectors_of(users)), sample=recall_sample, seed=seed) \
        if users is not None and not users.is_empty() and users.schema["vector"] == state.schema["vector"] \
        else sample_rows(vectors, sample=recall_sample, seed=seed)  # no users yet: campaigns query themselves
    reference = RecallReference.of(vectors, queries, k=10)
    efforts = [options.search_effort] if options.search_effort else None
    effort, recall = tune_effort(index, reference, target=min_recall, efforts=efforts)
    passed = recall >= min_recall
    manifest = Manifest(
        version=new_version(state["content_hash"].to_list(), now=now), size=len(ids), dim=int(vectors.shape[1]),
        kind=options.kind, dtype=options.dtype, search_effort=effort, params=index.params,
        model=",".join(models),
        built_at=now.astimezone(UTC).isoformat(timespec="microseconds"), build_seconds=round(build_seconds, 3),
        recall_at_10=round(recall, 6), recall_queries=len(queries), recall_passed=passed,
        extra={"min_recall": min_recall, "copurchase_pairs": copurchase.height, "inputs_digest": digest},
    )
    saved = save_version(artefacts, index, campaigns=side, popular=popular, manifest=manifest,
                         copurchase=copurchase)
    return IndexBuild(saved=saved, recall_at_10=recall, recall_queries=len(queries), passed=passed,
                      build_seconds=build_seconds)
