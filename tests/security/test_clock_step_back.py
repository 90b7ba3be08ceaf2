"""The wall clock stepped back (an NTP step, a VM restored from a snapshot) under a running server: what waited
on "N seconds since" waited for the step's whole length. Measured before the fix, a step back of an hour:
every API key answered 429 for that hour (its bucket lost an hour of tokens), a revoked key stayed accepted
from the check's 1-second cache for the hour, and a key ring rotated elsewhere was not read again for the hour
(:func:`notify_core.clock.since`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.tracking import TRACKING_PURPOSE
from notify_core.errors import RateLimitedError, UnauthorizedError
from notify_core.security.keys import KeyRing
from notify_core.security.vault import build_vault
from notify_core.settings import load_settings
from notify_core.store.sqlite import SqliteStore

NOW = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)
HOUR = 3600.0


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[KeyRing, ManualClock]]:
    clock = ManualClock(NOW)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    yield KeyRing(store, pepper=b"p" * 32, clock=clock), clock
    store.close()


def test_a_key_at_its_rate_limit_is_not_refused_for_the_length_of_a_step_back(
        keys: tuple[KeyRing, ManualClock]) -> None:
    ring, clock = keys
    _key, token = ring.create(name="app", scopes=["events:write"], actor="t", source="t", rate_per_minute=60)
    for _ in range(60):
        ring.authorize(token, "events:write")
    with pytest.raises(RateLimitedError):
        ring.authorize(token, "events:write")
    clock.set(NOW.timestamp() - HOUR)  # stepped back an hour
    for _ in range(60):  # a fresh minute's worth, as after any pause
        ring.authorize(token, "events:write")
    with pytest.raises(RateLimitedError):  # and the limit still holds
        ring.authorize(token, "events:write")
    clock.advance(1.0)
    ring.authorize(token, "events:write")  # refilled at 1 a second from the new time


def test_a_revoked_key_is_refused_at_once_after_a_step_back(keys: tuple[KeyRing, ManualClock]) -> None:
    ring, clock = keys
    key, token = ring.create(name="app", scopes=["events:write"], actor="t", source="t")
    checker = KeyRing(ring.store, pepper=b"p" * 32, clock=clock)  # another process: its own cache
    checker.authorize(token, "events:write")  # cached
    clock.set(NOW.timestamp() - HOUR)
    ring.revoke(key.key_id, actor="t", source="t")
    with pytest.raises(UnauthorizedError):
        checker.authenticate(token)


def test_a_ring_rotated_elsewhere_is_read_again_after_a_step_back(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    clock = ManualClock(NOW)
    warm = build_vault(settings).live_ring(TRACKING_PURPOSE, clock=clock, check_s=5.0)
    before = warm.active.kid
    clock.set(NOW.timestamp() - HOUR)
    rotated = build_vault(settings).rotate_ring(TRACKING_PURPOSE, clock=clock, overlap=timedelta(days=2))
    assert rotated.active_kid != before
    assert warm.active.kid == rotated.active_kid
