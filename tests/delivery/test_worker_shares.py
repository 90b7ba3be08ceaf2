"""Workers beating on one Store split each minute between them instead of racing for every item
(:mod:`notify_core.delivery.claims`, "Shares"): a worker claims its own share, and takes another live
worker's only once it is overdue and that worker has not got to it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery.claims import HEARTBEAT_PK
from notify_core.delivery.synthetic import seed_due
from notify_core.store import tables
from notify_core.store.port import Condition, Store
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start


def _worker(store: Store, clock: ManualClock, worker_id: str, channel: ScriptedChannel) -> DeliveryWorker:
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, lookback_minutes=3, prefetch_s=0.0,
                                                  worker_id=worker_id))
    worker.claims.start_heartbeat()  # what `notify worker`'s loop does first: it is live from now
    return worker


def _peer_beats(store: SqliteStore, clock: ManualClock, worker_id: str) -> None:
    """Another worker that says it is alive for the next 10 minutes (and does nothing else)."""
    store.table(tables.DELIVERY_CURSOR).put({"pk": HEARTBEAT_PK, "sk": worker_id, "alive_until": clock.now() + 600})


def test_two_live_workers_each_claim_their_own_share_and_lose_no_claim(tmp_path: Path, clock: ManualClock) -> None:
    """One after the other, so the split is seen whole: before shares, the first worker sent all 1,000 and
    the second lost nothing only because nothing was left; run together they lost ~one claim an item."""
    path = tmp_path / "store.sqlite"
    setup = SqliteStore(path, clock=clock)
    items = seed_due(setup, n=1000, start=minute_start(clock.now()))
    channels = [ScriptedChannel(), ScriptedChannel()]
    workers = [_worker(SqliteStore(path, clock=clock), clock, name, channel)
               for name, channel in zip(("worker-a", "worker-b"), channels, strict=True)]
    first = workers[0].run_until_idle()
    second = workers[1].run_until_idle()
    for w in workers:
        w.close()
    assert 350 <= first.delivered <= 650  # its share: half, give or take the hash
    assert first.delivered + second.delivered == 1000
    assert first.lost_claims == second.lost_claims == 0
    sent = Counter(c[0] for channel in channels for c in channel.calls)
    assert set(sent) == {i["notification_id"] for i in items} and max(sent.values()) == 1
    assert Counter(str(i["status"]) for i in setup.table(tables.SCHEDULES).scan()) == {"sent": 1000}


def test_a_live_worker_that_sends_nothing_has_its_share_taken_once_overdue(
        store: SqliteStore, clock: ManualClock) -> None:
    """A peer that beats but is stuck: its share waits ``steal_after_s``, then goes one item first and twice
    as many each pass while the steals win; nothing is lost and nothing sent twice."""
    items = seed_due(store, n=400, start=minute_start(clock.now()))
    _peer_beats(store, clock, "stuck")
    channel = ScriptedChannel()
    worker = _worker(store, clock, "worker-a", channel)
    own = worker.run_until_idle()
    assert own.stolen == 0 and 100 <= own.delivered <= 300
    clock.advance(worker.options.steal_after_s)
    taken = [worker.run_pass() for _ in range(12)]
    worker.close()
    assert [s.stolen for s in taken[:4]] == [1, 2, 4, 8]
    assert sum(s.stolen for s in taken) == 400 - own.delivered and sum(s.lost_claims for s in taken) == 0
    sent = Counter(c[0] for c in channel.calls)
    assert set(sent) == {i["notification_id"] for i in items} and max(sent.values()) == 1


def test_a_steal_the_owner_won_leaves_the_rest_of_its_share_to_it(store: SqliteStore, clock: ManualClock) -> None:
    """The peer is alive and has claimed its whole share by the time it is overdue here: one probing claim is
    lost, and the share's items due no later are left to it (before shares: a lost claim for every one)."""
    seed_due(store, n=400, start=minute_start(clock.now()))
    _peer_beats(store, clock, "peer")
    worker = _worker(store, clock, "worker-a", ScriptedChannel())
    own = worker.run_until_idle()
    table = store.table(tables.SCHEDULES)
    peers = [i for i in table.scan() if i["status"] == "pending"]
    assert len(peers) == 400 - own.delivered
    for it in peers:  # the peer claims its share
        table.update(it["pk"], it["sk"], set={"status": "claimed", "claim_token": "p", "attempt": 1,
                                              "lease_until": clock.now() + 300, "worker": "peer"},
                     condition=Condition.matches(status="pending"))
    clock.advance(worker.options.steal_after_s)
    later = [worker.run_pass() for _ in range(3)]
    clock.advance(worker.options.steal_after_s)
    later += [worker.run_pass() for _ in range(3)]
    worker.close()
    assert sum(s.lost_claims for s in later) == 1 and sum(s.stolen for s in later) == 0
    assert sum(s.delivered for s in later) == 0


def test_a_worker_alone_or_without_a_heartbeat_claims_everything(store: SqliteStore, clock: ManualClock) -> None:
    """A one-shot pass (the Lambda, the Dagster asset) does not beat, so it takes every item due, as does a
    looping worker that is the only one alive."""
    seed_due(store, n=100, start=minute_start(clock.now()))
    _peer_beats(store, clock, "peer")
    lone = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock,
                          options=WorkerOptions(concurrency=2, lookback_minutes=3, prefetch_s=0.0))
    assert lone.run_until_idle().delivered == 100
    lone.close()


def test_two_looping_workers_split_the_minute_on_either_backend(either: tuple[Store, ManualClock]) -> None:
    """`notify worker` twice on one Store (two pods on one set of DynamoDB tables): every notification sent
    once, and no claim lost. Before shares each item was claimed by both, one of the two a failed
    conditional write (on DynamoDB, a write unit spent for nothing, more with every worker added)."""
    store, clock = either
    items = seed_due(store, n=300, start=minute_start(clock.now()))
    channels = [ScriptedChannel(), ScriptedChannel()]
    workers = [_worker(store, clock, name, channel) for name, channel in zip(("w1", "w2"), channels, strict=True)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while sum(w.totals.delivered for w in workers) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    for w in workers:
        w.close()
    sent = Counter(c[0] for channel in channels for c in channel.calls)
    assert set(sent) == {i["notification_id"] for i in items} and max(sent.values()) == 1
    assert [w.totals.lost_claims for w in workers] == [0, 0]
    assert all(w.totals.delivered >= 90 for w in workers)  # each its share (~150), none stolen: nothing overdue
