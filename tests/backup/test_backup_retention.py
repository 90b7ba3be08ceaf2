"""File snapshots past their retention leave the backup target; what a restore can still ask for stays.

``notify backup`` snapshots the lake, landing, artefact and quarantine folders by content. Before session 40
nothing was ever removed from the target: every manifest and every version of every lake partition stayed,
so the target grew with each change for as long as the backup ran (the Store's own replica, Litestream's,
keeps 24 h). The clock is the test's own: a month passes in seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from notify_core.backup.files import BLOBS, MANIFESTS, SNAPSHOTS_KEPT_FOR, FileBackup
from notify_core.backup.service import BackupService, plan_backup
from notify_core.backup.target import BackupTarget, FolderBlobs
from notify_core.clock import ManualClock
from notify_core.settings import NotifySettings

NOW = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)
DAYS = 30


def test_a_month_of_snapshots_keeps_a_week_and_every_blob_a_kept_snapshot_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "lake" / "purchases").mkdir(parents=True)
    clock = ManualClock(NOW)
    target = tmp_path / "backup"
    service = BackupService(plan_backup(NotifySettings(data_dir=data), BackupTarget.parse(str(target))), clock=clock)
    for day in range(DAYS):
        for version in range(4):  # today's partition rewritten four times a day, a snapshot after each
            clock.advance(6 * 3600)
            (data / "lake" / "purchases" / f"day-{day:02d}.parquet").write_bytes(f"day {day} v{version}".encode())
            assert service._snapshot_files().manifest is not None
    blobs = FolderBlobs(target)
    reader = FileBackup(blobs, root=tmp_path / "unused", folders=[], clock=clock)
    manifests = reader.manifests()
    taken = [when for when, _name in manifests]
    cutoff = datetime.fromtimestamp(clock.now(), UTC) - SNAPSHOTS_KEPT_FOR
    # a week of manifests and the newest one before it, not all 120
    assert len(taken) == 4 * 7 + 2 and taken[0] < cutoff <= taken[1]  # the window holds both its ends
    # the blobs the kept manifests name, and no other: every day's last version, this week's earlier ones
    named = {digest for _when, name in manifests
             for digest in json.loads(blobs.get_bytes(name) or b"")["files"].values()}
    stored = {name.removeprefix(BLOBS) for name in blobs.list(BLOBS)}
    assert stored == named and len(stored) == DAYS + 3 * 7 + 1
    # a restore as of the cutoff, or any kept time, finds every file its snapshot names
    for at, last_day in ((cutoff, DAYS - 8), (cutoff + timedelta(days=3), DAYS - 5)):
        restored = tmp_path / f"restored-{last_day}"
        reader.restore(restored, at=at)
        assert sorted(p.name for p in (restored / "lake" / "purchases").iterdir())[-1] == f"day-{last_day:02d}.parquet"
    latest = tmp_path / "latest"
    reader.restore(latest)
    assert sorted(p.name for p in (latest / "lake" / "purchases").iterdir()) == [
        f"day-{d:02d}.parquet" for d in range(DAYS)]  # old days' files too: the newest snapshot names them
    assert (latest / "lake" / "purchases" / "day-00.parquet").read_bytes() == b"day 0 v3"


def test_prune_removes_manifests_before_blobs_and_keeps_the_newest_old_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "lake").mkdir(parents=True)
    clock = ManualClock(NOW)
    backup = FileBackup(FolderBlobs(tmp_path / "backup"), root=data, folders=["lake"], clock=clock)
    for version in range(3):
        (data / "lake" / "a.parquet").write_bytes(f"v{version}".encode())
        backup.snapshot()
        clock.advance(3600)
    clock.advance(30 * 86400)
    assert backup.prune() == (2, 2)  # v0 and v1 go, manifests and blobs; v2 (the newest) stays
    assert [name.startswith(MANIFESTS) for name in FolderBlobs(tmp_path / "backup").list("files/")].count(True) == 1
    (data / "lake" / "a.parquet").write_bytes(b"v0")  # content seen before and pruned: uploaded again
    assert backup.snapshot().uploaded == 1


def test_old_snapshots_are_pruned_hourly_and_at_once_after_the_clock_steps_back(tmp_path: Path) -> None:
    """Before, a step back of an hour put the next prune off by two (``now >= next_prune``)."""
    settings = NotifySettings(data_dir=tmp_path / "data")
    clock = ManualClock(NOW)
    service = BackupService(plan_backup(settings, BackupTarget.parse(str(tmp_path / "b"))), clock=clock)
    pruned: list[float] = []

    def prune() -> tuple[int, int]:
        pruned.append(clock.now())
        return 0, 0

    service.files.prune = prune  # type: ignore[method-assign]
    for step in (0.0, 10.0, 3590.0, 10.0, -2 * 3600.0, 10.0):
        clock.advance(step)
        service._snapshot_files()
    start = NOW.timestamp()
    assert pruned == [start, start + 3600.0, start + 3610.0 - 2 * 3600.0]
