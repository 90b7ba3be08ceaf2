"""Old campaign index versions are removed once superseded for a week (beyond the last few); nothing served,
newer, or not a version ever is. The world's clock is the test's own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from notify_core.recommend.artefacts import LocalArtefactStore, S3ArtefactStore
from notify_core.recommend.index import PREFIX, current_version, prune_versions, version_built_at
from notify_core.recommend.serving import IndexHolder
from notify_core.s3_objects import S3Bucket
from tests.recommend.conftest import World
from tests.servers import SeaweedS3, s3_client_for
from tests.small_disk import fill, small_disk

DAY = 86400.0


def _now(world: World) -> datetime:
    return datetime.fromtimestamp(world.clock.now(), UTC)


def test_superseded_versions_go_after_a_week_beyond_the_last_three(world: World) -> None:
    for _ in range(10):  # a version a day, each published
        world.clock.advance(DAY)
        world.build_version()
    newer = world.build_version(publish_it=False)  # built, not (yet) published
    (world.artefacts.root / PREFIX / "notes").mkdir()  # not a version: never touched
    served = current_version(world.artefacts)
    assert served == world.versions[-2]
    removed = prune_versions(world.artefacts, now=_now(world))
    left = world.artefacts.list_dirs(PREFIX)
    # the served one, the newer one, the folder that is no version, and the older ones built in the last week
    assert left == [*world.versions[-8:], "notes"]
    assert removed == world.versions[:-8]
    assert served in left and newer in left
    assert IndexHolder(world.artefacts, refresh_seconds=0.0).snapshot().version == served
    # with few versions, the last three stay whatever their age
    world.clock.advance(365 * DAY)
    prune_versions(world.artefacts, now=_now(world))
    assert world.artefacts.list_dirs(PREFIX) == [*world.versions[-5:], "notes"]


def test_nothing_is_removed_while_no_version_is_served(tmp_path: object, world: World) -> None:
    empty = LocalArtefactStore(world.root / "other")
    assert prune_versions(empty, now=_now(world)) == []
    assert version_built_at("notes") is None
    assert version_built_at(world.versions[0]) is not None


def test_a_version_folder_is_removed_from_s3_and_the_local_cache(world: World, s3_server: SeaweedS3) -> None:
    s3_server.create_bucket("notify-artefacts-prune")
    bucket = S3Bucket(bucket="notify-artefacts-prune", prefix="artefacts/", client=s3_client_for(s3_server.endpoint))
    store = S3ArtefactStore(bucket=bucket, cache_dir=world.root / "cache")
    for name in ("campaign_index/v1/index.faiss", "campaign_index/v1/keys.parquet", "campaign_index/v2/keys.parquet"):
        store.write_bytes(name, b"x")
    assert store.local_file("campaign_index/v1/keys.parquet").exists()
    store.remove_dir("campaign_index/v1")
    assert store.list_dirs("campaign_index") == ["v2"]
    assert store.read_bytes("campaign_index/v1/index.faiss") is None
    assert not (world.root / "cache" / "campaign_index" / "v1").exists()
    assert store.read_bytes("campaign_index/v2/keys.parquet") == b"x"


def test_a_serving_process_keeps_only_the_version_it_serves_in_its_cache(world: World,
                                                                         s3_server: SeaweedS3) -> None:
    """Each version a serving process loaded stayed in its S3 cache (a function's /tmp) until the process
    was recycled; now a loaded version drops the others' copies, and the snapshot still in use (a request
    that took it before the swap) keeps answering from its mapped file."""
    s3_server.create_bucket("notify-artefacts-cache")
    bucket = S3Bucket(bucket="notify-artefacts-cache", prefix="artefacts/", client=s3_client_for(s3_server.endpoint))
    cache = world.root / "serving-cache"
    store = S3ArtefactStore(bucket=bucket, cache_dir=cache)

    def build_and_mirror() -> str:
        version = world.build_version()
        for path in sorted(world.artefacts.root.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                store.upload(path.relative_to(world.artefacts.root).as_posix(), path)
        return version

    first = build_and_mirror()
    holder = IndexHolder(store, refresh_seconds=0.0)
    old = holder.snapshot()
    assert old.version == first and [p.name for p in (cache / PREFIX).iterdir()] == [first]
    query = world.vectors[:3]
    before = old.base.index.search(query, 5) if old.base is not None else None

    (cache / PREFIX / "left-by-an-earlier-process").mkdir()
    second = build_and_mirror()
    assert holder.snapshot().version == second
    assert [p.name for p in (cache / PREFIX).iterdir()] == [second]
    assert old.base is not None and before is not None
    after = old.base.index.search(query, 5)  # the dropped version's file, still mapped
    assert after.rows.tolist() == before.rows.tolist() and (after.rows >= 0).all()

    # the embedded default's files are the store itself: nothing is dropped there
    assert world.artefacts.drop_local_copies(PREFIX, keep={second}) == []
    assert first in world.artefacts.list_dirs(PREFIX)


def test_a_cache_full_of_an_earlier_processs_versions_still_takes_the_current_one(
        world: World, s3_server: SeaweedS3, tmp_path: Path) -> None:
    """A real full disk (a small tmpfs as the cache's volume) taken up by versions an earlier process left:
    the first load used to fail for want of room, and the process served no index at all, retrying forever.
    The holder now makes room first: it keeps only what it serves (nothing yet) and what it loads."""
    s3_server.create_bucket("notify-artefacts-full")
    bucket = S3Bucket(bucket="notify-artefacts-full", prefix="artefacts/", client=s3_client_for(s3_server.endpoint))
    cache = tmp_path / "cache"
    with small_disk(cache, size_kib=1024):
        store = S3ArtefactStore(bucket=bucket, cache_dir=cache)
        version = current_version(world.artefacts)
        assert version is not None
        for path in sorted(world.artefacts.root.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                store.upload(path.relative_to(world.artefacts.root).as_posix(), path)
        leftover = cache / PREFIX / "20240101T000000000000Z-0ld"
        leftover.mkdir(parents=True)
        fill(leftover, leave_kib=4)  # the index file (~8 kB) no longer fits
        holder = IndexHolder(store, refresh_seconds=0.0)
        assert holder.snapshot().version == version, holder.last_error
        assert [p.name for p in (cache / PREFIX).iterdir()] == [version]
