"""Dagster resources: thin wrappers that build core ports from settings.

Assets and sensors ask for ``NotifyResource`` (an interface: store, lake, folders), never for a
backend; which backend it builds is decided by ``env`` in one place, :func:`resources_for`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from notify_core.lake import Lake
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

    _store: Store | None = PrivateAttr(default=None)

    @property
    def settings(self) -> NotifySettings:
        return NotifySettings(
            env=self.env,  # type: ignore[arg-type]
            data_dir=Path(self.data_dir),
            source_data=Path(self.source_data),
            seed=self.seed,
            aws_region=self.aws_region,
            dynamodb_endpoint_url=self.dynamodb_endpoint_url,
            table_prefix=self.table_prefix,
            s3_bucket=self.s3_bucket,
        )

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = build_store(self.settings)
        return self._store

    @property
    def lake(self) -> Lake:
        return Lake(self.settings.lake_root)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def resources_for(settings: NotifySettings) -> dict[str, Any]:
    """The single mapping from the environment to the resources every asset, check and sensor uses."""
    return {
        "notify": NotifyResource(
            env=settings.env,
            data_dir=str(settings.data_dir),
            source_data=str(settings.source_data),
            seed=settings.seed,
            aws_region=settings.aws_region,
            dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
            table_prefix=settings.table_prefix,
            s3_bucket=settings.s3_bucket,
        )
    }
