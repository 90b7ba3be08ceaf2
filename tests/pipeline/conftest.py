"""Fixtures of the pipeline tests: a real PostgreSQL (the Helm chart's Dagster storage)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import EmbeddedPostgres, ServerUnavailable


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    problem = ""
    try:
        server = EmbeddedPostgres.start()
    except ServerUnavailable as exc:
        problem = str(exc)
    if problem:
        pytest.fail(f"PostgreSQL is required for this test and could not start: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
