"""One served API for the security and contract tests: the real gateway app (in-process, Starlette's
TestClient), every handler installed on a small recommendation world, and a KeyRing on the world's Store
under a ManualClock, so keys can be expired by moving time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from lambdas import capture_events, erase_user, generate_schedule, runtime, track, upsert_campaign
from lambdas import get_recommended_campaigns as recs
from lambdas.gateway import build_app
from notify_core.clock import ManualClock
from notify_core.security.keyring import ephemeral_keyring
from notify_core.security.keys import KeyRing, load_or_create_pepper
from notify_core.stream.local_log import LocalLog
from tests.recommend.conftest import World, make_world


@dataclass
class Served:
    world: World
    client: TestClient
    keyring: KeyRing
    clock: ManualClock
    log: LocalLog
    tracking: Any  # the tracking links' signing keys (notify_core.security.keyring)

    def key(self, *scopes: str, name: str = "test", **options: object) -> str:
        _key, token = self.keyring.create(name=name, scopes=scopes, actor="tests", source="pytest",
                                          **options)  # type: ignore[arg-type]
        return token


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    world = make_world(tmp_path / "world")
    clock = ManualClock(world.clock.now())  # the world's fixed "now", never the calendar's
    tracking = ephemeral_keyring("tracking", now=datetime.fromtimestamp(clock.now(), UTC))
    keyring = KeyRing(world.store, pepper=load_or_create_pepper(tmp_path / "secrets" / "pepper"), clock=clock)
    log = LocalLog(tmp_path / "log.sqlite")
    recs.use_recommender(world.recommender)
    upsert_campaign.use_state(upsert_campaign.UpsertState(store=world.store, embedder=world.embedder,
                                                          holder=world.holder, lake=None, clock=clock))
    generate_schedule.use_store(world.store, clock=clock)
    capture_events.use_stream(log)
    track.use(store=world.store, stream=log, keys=tracking, clock=clock)
    erase_user.use(store=world.store, stream=log, roots=(tmp_path / "world",), clock=clock)
    runtime.use_auth(keyring)
    with TestClient(build_app(), raise_server_exceptions=False) as client:
        yield Served(world=world, client=client, keyring=keyring, clock=clock, log=log, tracking=tracking)
    recs.use_recommender(None)
    upsert_campaign.use_state(None)
    generate_schedule.use_store(None)
    capture_events.use_stream(None)
    track.use(store=None, stream=None)
    erase_user.use(store=None)
    log.close()
    world.store.close()
