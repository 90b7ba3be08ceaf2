"""Build one campaign index version from the lake: vectors, side tables, recall against exact search.

What the ``campaign_index`` asset runs. It reads the campaign embeddings the embedding pipeline saved
(``embeddings_campaign``), the campaigns (what each promotes) and recent purchases (popularity for the
fallback), builds the HNSW graph, measures recall@10 against exact numpy search on a deterministic
sample of *user* vectors (the queries serving actually runs), writes the version folder, and records
the recall in its manifest, plus each product's top co-purchase neighbours (``scoring.item_similarity`` on
the lake's user x product purchases, ``copurchase.parquet``: serving's co-purchase term and candidates).
It never moves ``CURRENT``: publishing is the caller's decision, and a
version whose recall is below ``min_recall`` is never publishable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
from scipy import sparse

from notify_core.embeddings.store import CAMPAIGN, USER, read_lake_table, state_table, vectors_of
from notify_core.errors import NotFoundError
from notify_core.lake import Lake
from notify_core.recommend import scoring
from notify_core.recommend.artefacts import ArtefactStore
from notify_core.recommend.index import (
    COPURCHASE_SCHEMA,
    INFO_SCHEMA,
    IndexOptions,
    Manifest,
    SavedIndex,
    Vectors,
    build_hnsw,
    new_version,
    normalise_rows,
    popularity,
    recall_at_k,
    save_version,
)


@dataclass(frozen=True, slots=True)
class IndexBuild:
    saved: SavedIndex
    recall_at_10: float
    recall_queries: int
    passed: bool
    build_seconds: float

    def metadata(self) -> dict[str, object]:
        """Materialisation metadata ("rows" = campaigns indexed, what the CLI summary shows)."""
        m = self.saved.manifest
        return {"rows": m.size, "version": m.version, "recall_at_10": round(self.recall_at_10, 4),
                "recall_queries": self.recall_queries, "recall_passed": self.passed, "dim": m.dim,
                "dtype": m.dtype, "connectivity": m.connectivity, "expansion_search": m.expansion_search,
                "build_seconds": round(self.build_seconds, 3), "index_bytes": self.saved.size_bytes,
                "model": m.model}


def sample_rows(vectors: Vectors, *, sample: int, seed: int) -> Vectors:
    if len(vectors) <= sample:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=sample, replace=False))
    return vectors[rows]


def copurchase_neighbours(purchases: pl.LazyFrame | pl.DataFrame, *,
                          neighbours: int = scoring.COPURCHASE_NEIGHBOURS) -> pl.DataFrame:
    """``COPURCHASE_SCHEMA`` rows: each product's top ``neighbours`` by item-item cosine of who bought what
    (:func:`scoring.item_similarity` on the distinct buyers x products of non-return lines)."""
    lazy = purchases.lazy() if isinstance(purchases, pl.DataFrame) else purchases
    pairs = (lazy.filter(pl.col("user_id").is_not_null() & ~pl.col("is_return"))
             .select("user_id", "product_id").unique().collect())
    if pairs.is_empty():
        return pl.DataFrame(schema=COPURCHASE_SCHEMA)
    users = pairs["user_id"].unique().sort().to_list()
    products = pairs["product_id"].unique().sort().to_list()
    u = {x: i for i, x in enumerate(users)}
    p = {x: i for i, x in enumerate(products)}
    matrix = sparse.csr_matrix(
        (np.ones(pairs.height),
         ([u[x] for x in pairs["user_id"].to_list()], [p[x] for x in pairs["product_id"].to_list()])),
        shape=(len(users), len(products)))
    sim = scoring.item_similarity(matrix, neighbours=neighbours).tocoo()
    frame = pl.DataFrame({"product_id": np.asarray(products, dtype=object)[sim.row].tolist(),
                          "neighbour": np.asarray(products, dtype=object)[sim.col].tolist(),
                          "similarity": sim.data.astype(np.float64)}, schema=COPURCHASE_SCHEMA)
    return (frame.filter(pl.col("similarity") > 0)
            .sort(["product_id", "similarity", "neighbour"], descending=[False, True, False]))


def build_campaign_index(
    lake: Lake, artefacts: ArtefactStore, *, options: IndexOptions | None = None, recall_sample: int = 500,
    min_recall: float = 0.99, seed: int = 7,
) -> IndexBuild:
    """Build, evaluate and save a version from the lake's campaign embeddings (see the module doc)."""
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

    started = time.perf_counter()
    index = build_hnsw(ids, vectors, options=options)
    build_seconds = time.perf_counter() - started

    users = read_lake_table(lake, state_table(USER))
    queries = sample_rows(normalise_rows(vectors_of(users)), sample=recall_sample, seed=seed) \
        if users is not None and not users.is_empty() and users.schema["vector"] == state.schema["vector"] \
        else sample_rows(vectors, sample=recall_sample, seed=seed)  # no users yet: campaigns query themselves
    recall = recall_at_k(index, ids, vectors, queries, k=10)
    passed = recall >= min_recall
    models = sorted(set(state["model"].to_list()))
    manifest = Manifest(
        version=new_version(state["content_hash"].to_list()), size=len(ids), dim=int(vectors.shape[1]),
        dtype=options.dtype, connectivity=options.connectivity, expansion_add=options.expansion_add,
        expansion_search=options.expansion_search, model=",".join(models),
        built_at=datetime.now(UTC).isoformat(timespec="microseconds"), build_seconds=round(build_seconds, 3),
        recall_at_10=round(recall, 6), recall_queries=len(queries), recall_passed=passed,
        extra={"min_recall": min_recall, "copurchase_pairs": copurchase.height},
    )
    saved = save_version(artefacts, index, campaigns=side, popular=popular, manifest=manifest,
                         copurchase=copurchase)
    return IndexBuild(saved=saved, recall_at_10=recall, recall_queries=len(queries), passed=passed,
                      build_seconds=build_seconds)
