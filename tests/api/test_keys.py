"""KeyRing persistence and the first-run admin key: files 0600 in a 0700 folder, never rewritten."""

from __future__ import annotations

import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from notify_core.clock import ManualClock
from notify_core.errors import ConfigurationError, UnauthorizedError, ValidationError
from notify_core.security.keys import KeyRing, bootstrap_admin_key, load_or_create_pepper
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore


def _ring(root: Path, clock: ManualClock) -> KeyRing:
    return KeyRing(SqliteStore(root / "store.sqlite"), pepper=load_or_create_pepper(root / "secrets" / "pepper"),
                   clock=clock)


def test_first_run_writes_one_admin_key_0600_and_a_restart_keeps_it(tmp_path: Path) -> None:
    clock = ManualClock(1_900_000_000)
    path = tmp_path / "secrets" / "admin.key"
    assert bootstrap_admin_key(_ring(tmp_path, clock), path) == path
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "secrets" / "pepper").stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    restarted = _ring(tmp_path, clock)  # a new process: same pepper file, same Store
    assert bootstrap_admin_key(restarted, path) is None
    assert restarted.authorize(token, "campaigns:write").name == "local-admin"


def test_a_key_file_without_its_key_in_the_store_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "admin.key"
    path.parent.mkdir(mode=0o700)
    path.write_text("stale\n")
    with pytest.raises(ConfigurationError, match="exists"):
        bootstrap_admin_key(_ring(tmp_path, ManualClock(1_900_000_000)), path)
    assert path.read_text() == "stale\n"


def test_a_new_pepper_invalidates_every_key(tmp_path: Path) -> None:
    clock = ManualClock(1_900_000_000)
    _key, token = _ring(tmp_path, clock).create(name="a", scopes=["admin"], actor="t", source="t")
    (tmp_path / "secrets" / "pepper").unlink()
    with pytest.raises(UnauthorizedError):
        _ring(tmp_path, clock).authenticate(token)


def test_bad_key_requests_are_validation_errors(tmp_path: Path) -> None:
    ring = _ring(tmp_path, ManualClock(1_900_000_000))
    for scopes in ([], ["root"], ["admin", "nope"]):
        with pytest.raises(ValidationError):
            ring.create(name="x", scopes=scopes, actor="t", source="t")
    with pytest.raises(ValidationError):
        ring.create(name="x", scopes=["admin"], ttl_days=0, actor="t", source="t")
    key, _token = ring.create(name="x", scopes=["admin"], actor="t", source="t")
    ring.revoke(key.key_id, actor="t", source="t")
    with pytest.raises(ValidationError, match="revoked"):
        ring.rotate(key.key_id, actor="t", source="t")


def test_a_key_expires_after_90_days_by_default_and_a_rotation_overlaps_24_hours(tmp_path: Path) -> None:
    """The README's "90-day expiry, rotation overlap": the defaults, not a ttl the test passes itself. Also
    "stored as keyed hashes": the Store's row holds no part of the token's secret."""
    clock = ManualClock(1_900_000_000)
    ring = _ring(tmp_path, clock)
    path = tmp_path / "secrets" / "admin.key"
    assert bootstrap_admin_key(ring, path) == path  # the first start's admin key: the same default
    admin = path.read_text().strip()
    _key, token = ring.create(name="crm", scopes=["users:read"], actor="t", source="t")
    secret = token.split("_", 2)[2]
    raw = json.dumps([dict(i) for i in ring._table.scan()], default=str)
    assert secret not in raw and admin.split("_", 2)[2] not in raw
    clock.advance(90 * 86400 - 1)
    assert ring.authorize(token, "users:read").name == "crm" and ring.authorize(admin, "admin")
    clock.advance(2)
    for expired in (token, admin):
        with pytest.raises(UnauthorizedError, match="expired"):
            ring.authenticate(expired)

    old, old_token = ring.create(name="svc", scopes=["users:read"], actor="t", source="t")
    _new, new_token = ring.rotate(old.key_id, actor="t", source="t")
    clock.advance(24 * 3600 - 1)
    assert ring.authorize(old_token, "users:read") and ring.authorize(new_token, "users:read")
    clock.advance(2)
    with pytest.raises(UnauthorizedError, match="expired"):
        ring.authenticate(old_token)
    assert ring.authorize(new_token, "users:read").name == "svc"


def test_a_key_is_expired_at_the_very_second_its_lifetime_ends(tmp_path: Path) -> None:
    """``expires_at`` is the first instant the key no longer works (not the last one it does)."""
    clock = ManualClock(1_900_000_000)
    ring = _ring(tmp_path, clock)
    key, token = ring.create(name="edge", scopes=["users:read"], ttl_days=1, actor="t", source="t")
    clock.set(key.expires_at - 0.001)
    assert ring.authorize(token, "users:read").name == "edge"
    clock.set(key.expires_at)
    with pytest.raises(UnauthorizedError, match="expired"):
        ring.authenticate(token)


def test_a_revocation_by_another_process_is_seen_within_one_second(tmp_path: Path) -> None:
    """A checker reuses a key's row for under a second (``_CACHE_S``), never longer: a key revoked through
    another process's ring is refused here once that second has passed."""
    clock = ManualClock(1_900_000_000)
    admin = _ring(tmp_path, clock)
    key, token = admin.create(name="svc", scopes=["users:read"], actor="t", source="t")
    serving = _ring(tmp_path, clock)  # another process on the same Store and pepper
    assert serving.authorize(token, "users:read").name == "svc"  # its row is now cached there
    admin.revoke(key.key_id, actor="t", source="t")
    clock.advance(1.0)
    with pytest.raises(UnauthorizedError, match="revoked"):
        serving.authenticate(token)


def test_the_stored_hash_is_the_peppered_hmac_and_threads_check_keys_at_once(tmp_path: Path) -> None:
    """A key row holds HMAC-SHA256(pepper, secret) in hex, as every release wrote it (rows already stored must
    keep authenticating), and the checker's one keyed copy of the pepper serves threads checking at once
    (the gateway runs handlers in a thread pool): every right token passes, a wrong one never does."""
    clock = ManualClock(1_900_000_000)
    admin = _ring(tmp_path, clock)
    key, token = admin.create(name="app", scopes=["users:read"], actor="t", source="t")
    secret = token.split("_", 2)[2]
    pepper = load_or_create_pepper(tmp_path / "secrets" / "pepper")
    row = admin.store.table(tables.API_KEYS).get(key.key_id, tables.API_KEY_SK, consistent=True)
    assert row is not None and row["hash"] == hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()
    wrong = token[:-1] + ("B" if token[-1] == "A" else "A")
    serving = _ring(tmp_path, clock)  # another process on the same Store and pepper

    def check(i: int) -> bool:
        if i % 2:
            return serving.authorize(token, "users:read").key_id == key.key_id
        with pytest.raises(UnauthorizedError):
            serving.authorize(wrong, "users:read")
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(check, range(4_000)))
