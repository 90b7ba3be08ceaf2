"""KeyRing persistence and the first-run admin key: files 0600 in a 0700 folder, never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from notify_core.clock import ManualClock
from notify_core.errors import ConfigurationError, UnauthorizedError, ValidationError
from notify_core.security.keys import KeyRing, bootstrap_admin_key, load_or_create_pepper
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
