"""Index versions, publishing, the holder's hot swap (under concurrent reads) and the live overlay."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from notify_core.errors import NotFoundError
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.recommend.index import CURRENT, INDEX_FILES, OVERLAY, PREFIX, current_version, publish
from notify_core.recommend.serving import IndexHolder, OverlayEntry, ServingSnapshot
from tests.recommend.conftest import World
from tests.servers import SeaweedS3, s3_client_for


def test_a_build_does_not_move_current_and_publish_does(world: World) -> None:
    first = world.versions[-1]
    second = world.build_version(publish_it=False)
    assert current_version(world.artefacts) == first
    assert publish(world.artefacts, second) is True
    assert publish(world.artefacts, second) is False  # idempotent
    assert current_version(world.artefacts) == second


def test_an_unfinished_build_cannot_be_published(world: World) -> None:
    (world.root / "artefacts" / PREFIX / "20990101T000000000000Z-dead").mkdir(parents=True)
    with pytest.raises(NotFoundError):
        publish(world.artefacts, "20990101T000000000000Z-dead")


def test_swap_under_concurrent_reads_drops_no_request(world: World) -> None:
    holder = IndexHolder(world.artefacts, refresh_seconds=0.0)
    old = holder.snapshot().version
    # the new version holds the same campaigns under a different order: results must stay valid throughout
    shuffled = world.campaigns.sample(fraction=1.0, shuffle=True, seed=1)
    order = [int(c[1:]) for c in shuffled["campaign_id"].to_list()]
    errors: list[BaseException] = []
    seen: set[str | None] = set()
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                snap = holder.snapshot()
                top = snap.search(world.vectors[0], 5)
                assert top[0][0] == "c000", top
                seen.add(snap.version)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    new = world.build_version(shuffled, world.vectors[order])
    deadline = time.monotonic() + 5
    while holder.snapshot().version != new and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert holder.snapshot().version == new and {old, new} <= seen and holder.swaps >= 2


def test_concurrent_first_requests_of_a_cold_process_wait_for_the_first_load(world: World) -> None:
    """The first poll loads the index (~0.1 s at 200k campaigns); requests arriving meanwhile must get
    that index, not the empty snapshot (they used to, and answered with nothing)."""
    from notify_core.recommend.index import load_version

    def slow_loader(artefacts, version):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return load_version(artefacts, version)

    holder = IndexHolder(world.artefacts, refresh_seconds=60.0, loader=slow_loader)
    versions: list[str | None] = []
    threads = [threading.Thread(target=lambda: versions.append(holder.snapshot().version)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [world.versions[-1]] * 4


def test_a_version_that_fails_to_load_keeps_the_last_good_index(world: World) -> None:
    holder = IndexHolder(world.artefacts, refresh_seconds=0.0)
    good = holder.snapshot().version
    bad = world.build_version(publish_it=False)
    (world.root / "artefacts" / PREFIX / bad / INDEX_FILES["ivf"]).write_bytes(b"not an index")
    publish(world.artefacts, bad)
    snap = holder.snapshot()
    assert snap.version == good and snap.search(world.vectors[0], 1)[0][0] == "c000"
    assert holder.last_error is not None and bad in holder.failed_versions
    fixed = world.build_version()  # the next good build is picked up
    assert holder.snapshot().version == fixed


def test_a_corrupt_pointer_target_is_ignored(world: World) -> None:
    holder = IndexHolder(world.artefacts, refresh_seconds=0.0)
    good = holder.snapshot().version
    world.artefacts.write_bytes(CURRENT, b"no-such-version\n")
    assert holder.snapshot().version == good


def test_overlay_adds_and_replaces_campaigns_live_and_across_processes(world: World) -> None:
    holder = world.holder
    vector = world.vectors[0] + 0.01 * np.ones_like(world.vectors[0])
    entry = OverlayEntry(campaign_id="new-1", content_hash="x", updated_at="2099-01-01T00:00:00+00:00",
                         campaign={"campaign_id": "new-1", "product_ids": ["p999"]}, vector=vector)
    snap = holder.upsert([entry])
    assert [c for c, _ in snap.search(world.vectors[0], 3)][:2] == ["c000", "new-1"] or \
        "new-1" in [c for c, _ in snap.search(world.vectors[0], 3)]
    assert [snap.table.ids[r] for r in snap.promoting(["p999"])["p999"]] == ["new-1"]
    # an edit of a campaign the graph holds shadows its graph vector: returned once, with the new vector
    moved = OverlayEntry(campaign_id="c000", content_hash="y", updated_at="2099-01-01T00:00:00+00:00",
                         campaign={"campaign_id": "c000"}, vector=world.vectors[5])
    snap = holder.upsert([moved])
    found = snap.search(world.vectors[5], 60)
    assert [c for c, _ in found].count("c000") == 1 and found[0][0] in {"c000", "c005"}
    # another process sees the persisted overlay on its next refresh
    other = IndexHolder(world.artefacts, refresh_seconds=0.0)
    assert other.snapshot().overlay.ids == {"new-1", "c000"}


def test_overlay_entries_a_newer_build_holds_stop_mattering(world: World) -> None:
    from notify_core.embeddings.delta import text_hashes
    from notify_core.embeddings.texts import campaign_texts

    content = text_hashes(campaign_texts(world.campaigns.head(1)), id_column="campaign_id",
                          model_id=world.embedder.model_id)["content_hash"][0]
    world.holder.upsert([OverlayEntry(campaign_id="c000", content_hash=content, updated_at="2000-01-01T00:00:00",
                                      campaign={"campaign_id": "c000"}, vector=world.vectors[0])])
    assert len(world.holder.snapshot().overlay) == 0  # the current build (newer) holds the same content


def _base_and_overlaid(world: World, products: list[str], *, added_id: str) -> tuple[ServingSnapshot, ServingSnapshot]:
    """The base snapshot, and one whose overlay adds ``added_id`` (promoting ``products[0]`` and a product
    the base does not know) and edits the campaign of ``products[1]`` away from it (shadowing it)."""
    holder = world.holder
    base = holder.snapshot()
    added = OverlayEntry(campaign_id=added_id, content_hash="x", updated_at="2099-01-01T00:00:00+00:00",
                         campaign={"campaign_id": added_id, "product_ids": [products[0], "p-new"]},
                         vector=world.vectors[1])
    edited_id = base.table.ids[int(base.table.products[products[1]][0])]
    edited = OverlayEntry(campaign_id=edited_id, content_hash="y", updated_at="2099-01-01T00:00:00+00:00",
                          campaign={"campaign_id": edited_id, "product_ids": ["p-other"]}, vector=world.vectors[2])
    return base, holder.upsert([added, edited])


def test_promoted_rows_are_promoting_as_arrays_with_shadowed_rows_left_out(world: World) -> None:
    """The per-snapshot spans serving reads repeat candidates from give exactly :meth:`promoting`'s rows,
    in the products' order, for a snapshot whose overlay adds a campaign and shadows an edited one."""
    products = list(world.holder.snapshot().table.products)[:6]
    for snap in _base_and_overlaid(world, products, added_id="new-2"):
        wanted = [*reversed(products), "p-new", "unknown"]
        expected = snap.promoting(wanted)
        bought, rows, lengths = snap.promoted_rows(wanted)
        assert bought == list(expected)
        assert lengths.tolist() == [len(r) for r in expected.values()]
        assert rows.tolist() == [int(r) for r in np.concatenate(list(expected.values()))]
    assert "p-new" in bought and not snap.shadowed[rows].any()


def test_user_products_coded_once_give_promoted_rows_and_neighbour_rows_exactly(world: World) -> None:
    """A request codes the user's products once (:meth:`ServingSnapshot.user_products`); the promoted rows
    read from the codes are :meth:`promoted_rows`' answer (products, rows, lengths, in order) plus each kept
    product's orders, on the base snapshot and on one whose overlay adds and shadows campaigns; products
    the snapshot does not know get the sentinel code and nothing else."""
    products = list(world.holder.snapshot().table.products)[:6]
    for snap in _base_and_overlaid(world, products, added_id="new-3"):
        orders = {p: i + 1 for i, p in enumerate([*reversed(products), "p-new", "unknown"])}
        coded = snap.user_products(orders)
        bought, rows, lengths, bought_orders = coded.promoted_rows()
        expected = snap.promoted_rows(orders)
        assert bought == expected[0]
        assert rows.tolist() == expected[1].tolist() and lengths.tolist() == expected[2].tolist()
        assert bought_orders.tolist() == [float(orders[p]) for p in bought]
        assert coded.code[list(orders).index("unknown")] == coded.codes.none
        matrix = snap.base.copurchase_matrix if snap.base is not None else None
        index = matrix.index if matrix is not None else {}
        neighbour, neighbour_orders = coded.neighbour_rows()
        walked = [(index[p], float(o)) for p, o in orders.items() if o > 0 and p in index]
        assert neighbour.tolist() == [r for r, _ in walked] and neighbour_orders.tolist() == [o for _, o in walked]
    assert snap.user_products({}).promoted_rows()[0] == []


def test_snapshot_vectors_of_version_rows_are_the_index_answer_and_overlay_rows_still_merge(world: World) -> None:
    """:meth:`ServingSnapshot.vectors` returns the index's answer as is when every row is a version row (no
    second copy), and still merges overlay rows from the overlay when some are not."""
    base = world.holder.snapshot()
    rows = np.array([3, 0, 3, len(base.table) - 1], dtype=np.int64)
    assert base.base is not None
    assert base.vectors(rows).tobytes() == np.asarray(base.base.index.vectors(rows), dtype=np.float32).tobytes()
    added = OverlayEntry(campaign_id="new-4", content_hash="x", updated_at="2099-01-01T00:00:00+00:00",
                         campaign={"campaign_id": "new-4"}, vector=world.vectors[4])
    snap = world.holder.upsert([added])
    mixed = np.array([1, snap.offset, 2], dtype=np.int64)
    got = snap.vectors(mixed)
    assert got[[0, 2]].tobytes() == np.asarray(snap.base.index.vectors(mixed[[0, 2]])).tobytes()  # type: ignore[union-attr]
    assert got[1].tobytes() == snap.overlay.matrix[0].tobytes()
    assert snap.vectors(np.zeros(0, dtype=np.int64)).shape == (0, snap.dim)


def test_overlay_vectors_of_another_dimension_are_left_out_not_a_500(world: World) -> None:
    """An overlay entry embedded by another model (another dimension) than the served version's: after a
    model change the old entries stay in the overlay file (their content hash names the old model, so no
    build ever matches them), and an upsert process still on the old model adds more. Before, every
    personalised request raised in the overlay's matrix product (a 500 for every user with a vector), an
    upsert of the new model's dimension raised stacking the mixed overlay, and a process polling that overlay
    never swapped a snapshot in (its first request raised, the next ones were served from no index at all).
    Entries the served version cannot search are now left out of the effective overlay (logged)."""
    import polars as pl

    from notify_core.embeddings.store import USER, persist, state_schema, vector_series
    from tests.recommend.conftest import T0

    old_model = OverlayEntry(campaign_id="c003", content_hash="old-model", updated_at="2099-01-01T00:00:00+00:00",
                             campaign={"campaign_id": "c003", "product_ids": ["p003"]}, vector=world.vectors[3])
    world.holder.upsert([old_model])
    dim = 16  # the new model's vectors: campaigns rebuilt, a user re-embedded
    vectors = np.random.default_rng(0).normal(size=(len(world.campaigns), dim)).astype(np.float32)
    version = world.build_version(vectors=vectors)
    world.holder.refresh(force=True)
    schema = state_schema(USER, dim)
    persist(world.store, USER, pl.DataFrame({"id": ["u2"], "content_hash": ["h"], "model": ["new"],
                                             "updated_at": [T0]}).with_columns(
        vector_series(vectors[:1])).select(list(schema)).cast(schema))
    for ranker in ("default", None):  # searched in the new model's space: c000 is u2's vector
        result = world.recommender_with(ranker=ranker).recommend("u2", limit=20)
        assert result.strategy == "personalised"
        assert [i.similarity for i in result.items if i.campaign_id == "c000"] == [pytest.approx(1.0)]
    new_model = OverlayEntry(campaign_id="new-1", content_hash="new-model", updated_at="2099-01-02T00:00:00+00:00",
                             campaign={"campaign_id": "new-1", "product_ids": ["p-new"]}, vector=-vectors[5])
    assert world.holder.upsert([new_model]).overlay.ids == {"new-1"}
    other = IndexHolder(world.artefacts, refresh_seconds=0.0)  # another serving process, cold
    snapshot = other.snapshot()
    assert snapshot.version == version and snapshot.overlay.ids == {"new-1"}
    assert [c for c, _ in snapshot.search(-vectors[5], 1)] == ["new-1"]


def _two_upserts_at_once(world: World, mine_store: object, *, race: Callable[[], None]) -> set[str]:
    """This process upserts c000 (a pause) through ``mine_store`` while ``race`` lets another process upsert
    new-2 inside its read-modify-write; the campaigns the persisted overlay holds afterwards."""
    mine = IndexHolder(mine_store, refresh_seconds=0.0)  # type: ignore[arg-type]
    mine.snapshot()
    race()
    paused = OverlayEntry(campaign_id="c000", content_hash="paused", updated_at="2099-01-01T00:00:00+00:00",
                          campaign={"campaign_id": "c000", "status": "paused"}, vector=world.vectors[0])
    mine.upsert([paused])
    return set(IndexHolder(world.artefacts, refresh_seconds=0.0).snapshot().overlay.ids)


def _new_2(world: World) -> OverlayEntry:
    return OverlayEntry(campaign_id="new-2", content_hash="x", updated_at="2099-01-01T00:00:00+00:00",
                        campaign={"campaign_id": "new-2"}, vector=world.vectors[1])


def test_two_processes_upserting_at_once_keep_both_campaigns_in_the_overlay(world: World) -> None:
    """Two serving processes of one host (the gateway's workers) each upsert a campaign at the same moment.
    :meth:`IndexHolder.upsert` read the persisted overlay, added its entry and wrote the whole file back under
    a lock of its own process only, so the second write dropped the first process's entry: that edit (a pause
    through the API included) was lost from every process's overlay until the next build folded the lake in,
    while the API had answered it as live. The read-modify-write is now one ``update_bytes`` under a lock
    file every process takes."""
    other = IndexHolder(world.artefacts, refresh_seconds=0.0)  # the second process
    done = threading.Event()

    class Racing(LocalArtefactStore):
        """This process's artefact store: the other process upserts while this one has read the overlay."""

        armed = False

        def read_bytes(self, name: str) -> bytes | None:
            data = super().read_bytes(name)
            if name == OVERLAY and self.armed:
                self.armed = False
                threading.Thread(target=lambda: (other.upsert([_new_2(world)]), done.set())).start()
                done.wait(0.5)  # before: it wrote at once; now: it waits for this update to end
            return data

    store = Racing(world.artefacts.root)

    def arm() -> None:
        store.armed = True

    _two_upserts_at_once(world, store, race=arm)
    assert done.wait(10)  # the other process's upsert ended too
    assert set(IndexHolder(world.artefacts, refresh_seconds=0.0).snapshot().overlay.ids) == {"c000", "new-2"}


def test_two_processes_upserting_at_once_on_s3_keep_both_campaigns(world: World, s3_server: SeaweedS3) -> None:
    """The same race on S3 (upsert Lambdas in two containers), on a real SeaweedFS server: the overlay is
    written with If-Match on the ETag it was read with, and a write another came before is read and made
    again."""
    from notify_core.recommend.artefacts import S3ArtefactStore
    from notify_core.s3_objects import S3Bucket

    s3_server.create_bucket("notify-artefacts-race")
    client = s3_client_for(s3_server.endpoint)
    bucket = S3Bucket(bucket="notify-artefacts-race", prefix="artefacts/", client=client)
    world.artefacts = S3ArtefactStore(bucket=bucket, cache_dir=world.root / "cache")  # type: ignore[assignment]
    other = IndexHolder(world.artefacts, refresh_seconds=0.0)

    class Racing(S3Bucket):
        """This process's bucket: the other process upserts between this one's read and its write."""

        armed = False

        def get_bytes_tagged(self, name: str) -> tuple[bytes | None, str | None]:
            found = super().get_bytes_tagged(name)
            if self.armed:
                self.armed = False
                other.upsert([_new_2(world)])
            return found

    racing = Racing(bucket="notify-artefacts-race", prefix="artefacts/", client=client)

    def arm() -> None:
        racing.armed = True

    mine = S3ArtefactStore(bucket=racing, cache_dir=world.root / "cache-2")
    assert _two_upserts_at_once(world, mine, race=arm) == {"c000", "new-2"}


def test_an_upsert_by_another_process_right_after_this_ones_write_is_still_polled(world: World) -> None:
    """:meth:`IndexHolder.upsert` wrote the overlay, then took the file's stamp as the one it had read. When
    another process upserted in between (reading this write, adding its campaign), that stamp was already
    the other process's file: this process's polls saw no change and never read the other campaign, so that
    edit (a pause included) stayed invisible here until some later overlay write, however long that took."""

    other = IndexHolder(world.artefacts, refresh_seconds=0.0)  # the second process
    first = OverlayEntry(campaign_id="new-1", content_hash="x", updated_at="2099-01-01T00:00:00+00:00",
                         campaign={"campaign_id": "new-1"}, vector=world.vectors[1])
    second = OverlayEntry(campaign_id="c000", content_hash="paused", updated_at="2099-01-01T00:00:01+00:00",
                          campaign={"campaign_id": "c000", "status": "paused"}, vector=world.vectors[0])

    class Interleaved(LocalArtefactStore):
        """This process's artefact store: the other process upserts just after its update of the overlay."""

        armed = False

        def update_bytes(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
            data = super().update_bytes(name, change)
            if name == OVERLAY and self.armed:
                self.armed = False
                time.sleep(0.01)  # a later mtime for the local store's stamp
                other.upsert([second])
            return data

    store = Interleaved(world.artefacts.root)
    mine = IndexHolder(store, refresh_seconds=0.0)
    mine.snapshot()
    store.armed = True
    mine.upsert([first])
    assert IndexHolder(world.artefacts, refresh_seconds=0.0).snapshot().overlay.ids == {"new-1", "c000"}  # the file
    assert mine.snapshot().overlay.ids == {"new-1", "c000"}


def test_a_version_that_failed_to_load_on_a_transient_error_is_tried_again(world: World) -> None:
    """A load that failed put the version in ``failed_versions`` and the pointer's stamp was taken as read, so
    the version was never tried again in that process, whatever the error: a cold Lambda whose first load hit
    an S3 timeout served with no index at all (popular fallback for everyone, nothing personalised) until
    the next build was published, and a warm one stayed on the previous version meanwhile (its campaign rows,
    a batch pause not included). Now a failed version is tried again after a backoff (30 s, doubling)."""
    from notify_core.errors import BackendError
    from notify_core.recommend.index import load_version

    calls: list[str] = []

    def flaky(artefacts: object, version: str) -> object:
        calls.append(version)
        if len(calls) == 1:
            raise BackendError("S3 get campaign_index/.../index.faiss failed: read timeout")
        return load_version(world.artefacts, version)

    now = [0.0]
    holder = IndexHolder(world.artefacts, refresh_seconds=2.0, clock=lambda: now[0], loader=flaky)  # type: ignore[arg-type]
    assert holder.snapshot().version is None and holder.last_error is not None  # the cold start's load failed
    now[0] += 10.0
    assert holder.snapshot().version is None and len(calls) == 1  # not at every poll: after a backoff
    now[0] += 60.0
    assert holder.snapshot().version == world.versions[-1] and holder.last_error is None
    assert world.versions[-1] not in holder.failed_versions


def test_an_overlay_read_that_failed_on_a_transient_error_is_tried_again(world: World) -> None:
    """A failed overlay read (an S3 timeout) still took the file's new stamp as read: the upserts it held (a
    pause through the API included) were never served by that process until another upsert changed the file
    again. Now the stamp is taken only when the read succeeded, and a failed read is tried again after a
    backoff."""
    from notify_core.errors import BackendError

    class Flaky:
        """The artefact store, failing the next overlay read."""

        def __init__(self) -> None:
            self.fail = False

        def __getattr__(self, name: str) -> object:
            return getattr(world.artefacts, name)

        def read_bytes(self, name: str) -> bytes | None:
            if name == OVERLAY and self.fail:
                self.fail = False
                raise BackendError("S3 get campaign_index/overlay.parquet failed: read timeout")
            return world.artefacts.read_bytes(name)

    now = [0.0]
    store = Flaky()
    holder = IndexHolder(store, refresh_seconds=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert holder.snapshot().version == world.versions[-1]
    paused = OverlayEntry(campaign_id="c000", content_hash="paused", updated_at="2099-01-01T00:00:00+00:00",
                          campaign={"campaign_id": "c000", "status": "paused"}, vector=world.vectors[0])
    IndexHolder(world.artefacts, refresh_seconds=0.0).upsert([paused])  # another process
    store.fail = True
    now[0] += 3.0
    assert holder.snapshot().overlay.ids == frozenset()  # the read failed: the previous overlay kept
    now[0] += 120.0
    assert holder.snapshot().overlay.ids == {"c000"}


def test_a_version_that_keeps_failing_is_tried_again_after_30_s_doubling_to_15_min(world: World) -> None:
    """The README: "tried again after a backoff (30 s, doubling to 15 min)". A load that always fails, the
    holder polled every second for two hours of its clock: the gaps between tries."""
    from notify_core.errors import BackendError

    tries: list[float] = []
    now = [0.0]

    def failing(artefacts: object, version: str) -> object:
        tries.append(now[0])
        raise BackendError("S3 get campaign_index/.../index.faiss failed: read timeout")

    holder = IndexHolder(world.artefacts, refresh_seconds=2.0, clock=lambda: now[0], loader=failing)  # type: ignore[arg-type]
    for second in range(2 * 3600):
        now[0] = float(second)
        holder.snapshot()
    gaps = [round(b - a) for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[:7] == [30, 60, 120, 240, 480, 900, 900], gaps
    assert set(gaps[5:]) == {900}
