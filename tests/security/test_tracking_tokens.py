"""Tracking links cannot be forged: N forged or altered tokens, 0 accepted; rotation keeps old links alive."""

from __future__ import annotations

import base64
import os
import random
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import sign_token, track, verify_token
from notify_core.errors import InvalidTokenError, NotFoundError
from notify_core.scheduling.ids import notification_id
from notify_core.security.key_documents import FileKeyDocuments
from notify_core.security.keyring import KeyRing, ephemeral_keyring, load_ring, rotate_ring
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)


def _forgeries(real: str, rng: random.Random, n: int) -> list[str]:
    """What an attacker tries: ids rebuilt from public data with made-up macs, altered macs and ids,
    known key ids with random macs, the open token used as a click, truncations, junk."""
    nid, kid, mac = real.split(".")
    out: list[str] = []
    for i in range(n):
        rebuilt = notification_id(f"user{i}", f"c{i % 7}", "2031-03-04", i % 5)  # ids are public hashes
        raw_mac = base64.urlsafe_b64encode(rng.randbytes(16)).rstrip(b"=").decode()
        flip = list(mac)
        flip[rng.randrange(len(flip))] = rng.choice([c for c in "ABCDEFabcdef0123456789-_" if c != flip[0]])
        choice = i % 8
        out.append([
            f"{rebuilt}.{kid}.{raw_mac}",  # a real key id, a guessed mac
            f"{nid}.{kid}.{''.join(flip)}" if "".join(flip) != mac else f"{nid}.{kid}.{raw_mac}",  # altered mac
            f"{rebuilt}.{kid}.{mac}",  # someone else's id under this link's mac
            f"{nid}.{rng.randbytes(4).hex()}.{mac}",  # unknown key id
            rebuilt,  # the bare id (what links used to be)
            f"{nid}.{kid}.{mac[:-1]}",  # truncated
            f"{nid}.{kid}.{mac}.x",  # extra part
            f"{nid}..{mac}",  # empty key id
        ][choice])
    return out


def test_forged_tokens_are_all_rejected() -> None:
    keys = ephemeral_keyring("tracking", now=NOW)
    real = sign_token(keys, notification_id("alice", "c1", "2031-03-04", 0), kind="click")
    assert verify_token(keys, real, kind="click", now=NOW)  # the real one verifies
    forged = _forgeries(real, random.Random(14), 2_000)
    forged.append(sign_token(keys, real.split(".")[0], kind="open"))  # an open token is not a click token
    forged.append(sign_token(ephemeral_keyring("tracking", now=NOW), real.split(".")[0], kind="click"))  # other ring
    accepted = 0
    for token in forged:
        try:
            verify_token(keys, token, kind="click", now=NOW)
            accepted += 1
        except InvalidTokenError:
            pass
    assert len(forged) == 2_002 and accepted == 0


def test_rotation_keeps_old_links_for_the_overlap_then_drops_them(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    secrets_dir = tmp_path / "secrets"
    first = load_ring(FileKeyDocuments(secrets_dir), "tracking", clock=clock)
    path = secrets_dir / "tracking.keys.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(secrets_dir).st_mode) == 0o700
    old_link = sign_token(first, "n1", kind="click")
    second = rotate_ring(FileKeyDocuments(secrets_dir), "tracking", clock=clock, overlap=timedelta(days=2))
    assert second.active_kid != first.active_kid and len(second.keys) == 2
    new_link = sign_token(second, "n1", kind="click")
    assert verify_token(second, old_link, kind="click", now=NOW) == "n1"  # inside the overlap
    assert verify_token(second, new_link, kind="click", now=NOW) == "n1"
    later = NOW + timedelta(days=3)
    with pytest.raises(InvalidTokenError):
        verify_token(second, old_link, kind="click", now=later)  # the old key expired
    clock.set(later)
    third = rotate_ring(FileKeyDocuments(secrets_dir), "tracking", clock=clock)
    assert first.active_kid not in {k.kid for k in third.keys}  # expired keys leave the file
    assert load_ring(FileKeyDocuments(secrets_dir), "tracking", clock=clock).active_kid == third.active_kid


def test_an_old_key_stops_verifying_at_the_exact_end_of_its_overlap(tmp_path: Path) -> None:
    """A rotated key verifies while ``now < expires_at``: at the overlap's last second yes, at its end no."""
    clock = ManualClock(NOW)
    secrets_dir = tmp_path / "secrets"
    first = load_ring(FileKeyDocuments(secrets_dir), "tracking", clock=clock)
    old_link = sign_token(first, "n1", kind="click")
    second = rotate_ring(FileKeyDocuments(secrets_dir), "tracking", clock=clock, overlap=timedelta(days=2))
    end = NOW + timedelta(days=2)
    assert verify_token(second, old_link, kind="click", now=end - timedelta(seconds=1)) == "n1"
    with pytest.raises(InvalidTokenError):
        verify_token(second, old_link, kind="click", now=end)


def test_a_signed_token_for_an_over_long_id_is_refused_as_an_invalid_link() -> None:
    """No notification id is longer than 128 characters: a correctly signed token for one (the whole token
    still under the length limit) is an invalid link (a 404), not an id handed on to the lookup."""
    keys = ephemeral_keyring("tracking", now=NOW)
    assert verify_token(keys, sign_token(keys, "n" * 128, kind="click"), kind="click", now=NOW) == "n" * 128
    long_token = sign_token(keys, "n" * 129, kind="click")
    assert len(long_token) <= 128 + 64
    with pytest.raises(InvalidTokenError):
        verify_token(keys, long_token, kind="click", now=NOW)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    from notify_core.errors import ConfigurationError

    clock = ManualClock(NOW)
    load_ring(FileKeyDocuments(tmp_path), "tracking", clock=clock)
    os.chmod(tmp_path / "tracking.keys.json", 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_ring(FileKeyDocuments(tmp_path), "tracking", clock=clock)


def _sent_click(store: SqliteStore) -> tuple[KeyRing, dict[str, Any], str, str]:
    """One notification that went out (its 24 h dedupe record) and the signed click token of its link."""
    keys = ephemeral_keyring("tracking", now=NOW)
    [item] = seed_due(store, n=1, start=NOW)
    nid = str(item["notification_id"])
    store.table(tables.DEDUPE).put({"pk": nid, "sk": tables.DEDUPE_SK, "user_id": item["user_id"],
                                    "campaign_id": item["campaign_id"], "delivered_at": NOW.isoformat()})
    return keys, item, nid, sign_token(keys, nid, kind="click")


def test_track_counts_once_and_redirects_only_to_the_campaign_url(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    log = LocalLog(tmp_path / "log.sqlite")
    try:
        clock = ManualClock(NOW)
        keys, item, nid, token = _sent_click(store)
        results = [track(store, log, token=token, kind="click", keys=keys, clock=clock) for _ in range(5)]
        assert [r.first for r in results] == [True, False, False, False, False]
        assert sum(r.event_id is not None for r in results) == 1
        assert {r.redirect_url for r in results} == {f"https://shop.example.com/c/{item['campaign_id']}"}
        marker = store.table(tables.NOTIFICATION_INTERACTIONS).get(nid, "click")
        assert marker is not None and marker["repeats"] == 4
        with pytest.raises(NotFoundError):  # a valid signature for an id that was never sent
            track(store, log, token=sign_token(keys, "never-sent", kind="click"), kind="click", keys=keys,
                  clock=clock)
    finally:
        log.close()
        store.close()


class _DownStream:
    """A stream whose broker is down: every produce fails like a real backend failure."""

    def produce_batch(self, messages: object) -> None:
        from notify_core.errors import BackendError

        raise BackendError("broker down")

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.produce_batch([])


def test_a_click_the_stream_could_not_take_is_not_counted_and_the_next_click_is_the_first(tmp_path: Path) -> None:
    from notify_core.delivery.feedback import campaign_stats
    from notify_core.errors import BackendError

    store = SqliteStore(tmp_path / "store.sqlite")
    log = LocalLog(tmp_path / "log.sqlite")
    try:
        clock = ManualClock(NOW)
        keys, item, nid, token = _sent_click(store)
        with pytest.raises(BackendError):
            track(store, _DownStream(), token=token, kind="click", keys=keys, clock=clock)  # type: ignore[arg-type]
        assert store.table(tables.NOTIFICATION_INTERACTIONS).get(nid, "click") is None  # claim released
        assert campaign_stats(store, str(item["campaign_id"])) == []  # nothing counted
        again = track(store, log, token=token, kind="click", keys=keys, clock=clock)
        assert again.first and again.event_id is not None
        [row] = campaign_stats(store, str(item["campaign_id"]))
        assert row["clicked"] == 1
    finally:
        log.close()
        store.close()
