"""Fixtures of the recommendation tests: a small, fully known world (no model, no real data).

60 campaigns (``c000``..``c059``) over 6 topics, embedded with the deterministic HashingEmbedder (32-dim,
so the update path embeds new campaigns in the same space); users ``u1`` (UK, bought p001 once,
opted out of "toys"), ``u2`` (France) and ``u_new`` (no vector). Popularity: UK -> c010, c011; overall
-> c020, c021. The index is built, saved and published through the real code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.embeddings.delta import text_hashes
from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.embeddings.store import CAMPAIGN, USER, persist, state_schema, vector_series
from notify_core.embeddings.texts import campaign_texts
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.recommend.index import IndexOptions, Manifest, build_index, new_version, publish, save_version
from notify_core.recommend.recommender import Recommender
from notify_core.recommend.serving import IndexHolder
from notify_core.repositories import save_frame
from notify_core.schemas import CAMPAIGNS
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore

DIM = 32
T0 = datetime(2024, 1, 1, tzinfo=UTC)
# The recommendation tests' own "now" (requests, cooldowns, campaign dates, version stamps): never the calendar's.
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
TOPICS = ("garden lanterns", "kitchen mugs", "christmas lights", "toy cars", "party bags", "vintage clocks")
CATEGORIES = ("home decor", "kitchen", "christmas", "toys", "party", "home decor")


def campaign_rows(n: int = 60) -> pl.DataFrame:
    rows = []
    for i in range(n):
        topic = i % len(TOPICS)
        rows.append({
            "campaign_id": f"c{i:03d}", "name": f"{TOPICS[topic]} offer {i}",
            "text": f"great {TOPICS[topic]} deals number {i}", "category": CATEGORIES[topic],
            "product_ids": [f"p{i:03d}"], "priority": 1 + i % 5, "start_date": date(2020, 1, 1),
            "end_date": date(2099, 12, 31), "target_countries": [], "cooldown_hours": 72, "daily_budget": 1000,
            "url": "", "template": "", "status": "active",
        })
    return pl.DataFrame(rows, schema=CAMPAIGNS)


def popular_frame() -> pl.DataFrame:
    return pl.DataFrame({"segment": ["United Kingdom", "United Kingdom", "*", "*"], "rank": [0, 1, 0, 1],
                         "campaign_id": ["c010", "c011", "c020", "c021"], "score": [10.0, 5.0, 30.0, 20.0]},
                        schema={"segment": pl.String, "rank": pl.Int32, "campaign_id": pl.String, "score": pl.Float64})


@dataclass
class World:
    root: Path
    store: SqliteStore
    artefacts: LocalArtefactStore
    embedder: HashingEmbedder
    campaigns: pl.DataFrame
    vectors: np.ndarray[Any, Any]
    holder: IndexHolder
    recommender: Recommender
    clock: ManualClock
    versions: list[str] = field(default_factory=list)

    def recommender_with(self, **options: Any) -> Recommender:
        """Another recommender over the same Store, index and clock (other weights, candidate counts)."""
        return Recommender(store=self.store, holder=self.holder, clock=self.clock, **options)

    def user_vector(self, text: str) -> np.ndarray[Any, Any]:
        return self.embedder.embed([text])[0]

    def set_user_vector(self, user_id: str, vector: np.ndarray[Any, Any]) -> None:
        schema = state_schema(USER, DIM)
        frame = pl.DataFrame({"id": [user_id], "content_hash": ["h"], "model": [self.embedder.model_id],
                              "updated_at": [T0]}).with_columns(
            vector_series(np.asarray(vector, dtype=np.float32)[None, :])).select(list(schema)).cast(schema)
        persist(self.store, USER, frame)

    def update_campaign(self, campaign_id: str, **changes: Any) -> None:
        """A batch edit, as the pipeline applies it: Store row, then a new index version published."""
        row = self.campaigns.filter(pl.col("campaign_id") == campaign_id).to_dicts()[0] | changes
        save_frame(self.store, tables.CAMPAIGNS, pl.DataFrame([row], schema=CAMPAIGNS))
        self.campaigns = self.campaigns.update(pl.DataFrame([row], schema=CAMPAIGNS), on="campaign_id")
        self.build_version()
        self.holder.refresh(force=True)

    def build_version(self, campaigns: pl.DataFrame | None = None, vectors: np.ndarray[Any, Any] | None = None,
                      *, publish_it: bool = True, copurchase: pl.DataFrame | None = None) -> str:
        campaigns = self.campaigns if campaigns is None else campaigns
        vectors = self.vectors if vectors is None else vectors
        hashes = text_hashes(campaign_texts(campaigns), id_column="campaign_id", model_id=self.embedder.model_id)
        options = IndexOptions()
        index = build_index(campaigns["campaign_id"].to_list(), vectors, options=options)
        self.clock.advance(1.0)  # versions sort by build time
        built = datetime.fromtimestamp(self.clock.now(), UTC)
        version = new_version([str(len(self.versions))], now=built)
        manifest = Manifest(version=version, size=len(campaigns), dim=int(vectors.shape[1]), kind=options.kind,
                            dtype=options.dtype,
                            params=index.params, model=self.embedder.model_id,
                            built_at=built.isoformat(timespec="microseconds"), build_seconds=0.0,
                            recall_at_10=1.0, recall_queries=1, recall_passed=True)
        side = campaigns.with_columns(hashes["content_hash"])
        save_version(self.artefacts, index, campaigns=side, popular=popular_frame(), manifest=manifest,
                     copurchase=copurchase)
        self.versions.append(version)
        if publish_it:
            publish(self.artefacts, version)
        return version


def make_world(root: Path) -> World:
    clock = ManualClock(NOW)
    store = SqliteStore(root / "store.sqlite", clock=clock)
    artefacts = LocalArtefactStore(root / "artefacts")
    embedder = HashingEmbedder(dim=DIM)
    campaigns = campaign_rows()
    texts = campaign_texts(campaigns)["text"].to_list()
    vectors = embedder.embed(texts)
    save_frame(store, tables.CAMPAIGNS, campaigns)
    hashes = text_hashes(campaign_texts(campaigns), id_column="campaign_id", model_id=embedder.model_id)
    schema = state_schema(CAMPAIGN, DIM)
    state = hashes.select("id", "content_hash").with_columns(
        pl.lit(embedder.model_id).alias("model"), pl.lit(T0).alias("updated_at"),
        vector_series(vectors)).select(list(schema)).cast(schema)
    persist(store, CAMPAIGN, state)
    users = pl.DataFrame([
        {"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "country": "United Kingdom",
         "opted_out_categories": ["toys"]},
        {"pk": "u2", "sk": tables.PROFILE_SK, "user_id": "u2", "country": "France", "opted_out_categories": []},
        {"pk": "u_new", "sk": tables.PROFILE_SK, "user_id": "u_new", "country": "United Kingdom",
         "opted_out_categories": []},
    ])
    store.table(tables.USERS).batch_put(users.to_dicts())
    store.table(tables.USER_PRODUCT).batch_put([
        {"pk": "u1", "sk": "p001", "user_id": "u1", "product_id": "p001", "order_count": 1},
        {"pk": "u2", "sk": "p002", "user_id": "u2", "product_id": "p002", "order_count": 1},
    ])
    holder = IndexHolder(artefacts, refresh_seconds=0.0)
    world = World(root=root, store=store, artefacts=artefacts, embedder=embedder, campaigns=campaigns,
                  vectors=vectors, holder=holder,
                  recommender=Recommender(store=store, holder=holder, clock=clock, ranker=None), clock=clock)
    world.set_user_vector("u1", world.vectors[0])  # u1 looks exactly like c000 (garden lanterns)
    world.set_user_vector("u2", world.vectors[1])
    world.build_version()
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    w.store.close()
