"""Fixtures of the pipeline tests: a real PostgreSQL (the Helm chart's Dagster storage)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import EmbeddedPostgres, started_or_fail


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    server = started_or_fail(EmbeddedPostgres.start, what="PostgreSQL")
    try:
        yield server
    finally:
        server.stop()
