"""A campaign's ``daily_budget`` holds across a re-plan of a day that has begun.

A re-plan of the day (new embeddings, a campaign changed) rewrites what is still pending but cannot take
back what the worker already sent. The planner used to start every full re-plan with the whole budget,
so a campaign that had spent 5 of its 10 by noon was planned 10 more times (15 in the day); a re-plan of
only some users did not count those users' own sends (12); and every batch of the Lambda's path started
from the whole budget, one after another or at the same time (20). Found by an audit (session 38); each
test fails on the code before. The sends come from a real delivery worker, so the counter the re-plan
reads is the one the worker keeps.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.feedback import campaign_stats
from notify_core.lifecycle import CANCELLED, SENT
from notify_core.scheduling import service
from notify_core.scheduling.service import ledger_of_others, plan_and_store
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import campaigns, candidates, deliver_due, users
from tests.servers import backend_store

EVE = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # the day's plan is made the evening before
DAY = (EVE + timedelta(days=1)).date()
NOON = datetime(DAY.year, DAY.month, DAY.day, 12, 0, tzinfo=UTC)
BUDGET = 10
N_USERS = 40

# Half the users are quiet until 14:00, so the day's sends of ``cb`` fall both before and after noon.
USERS = users([(f"u{i:02d}", "UTC", 5, 0 if i % 2 else None, 14 if i % 2 else None) for i in range(N_USERS)])
# "cb" is everyone's best candidate and has a budget; the others are unlimited fillers.
CAMPS = campaigns([("cb", 5, 0, BUDGET), *((f"c{j}", 1, 0, None) for j in range(6))])
CANDS = candidates([(f"u{i:02d}", "cb", 0.99) for i in range(N_USERS)]
                   + [(f"u{i:02d}", f"c{j}", 0.5 - j * 0.05) for i in range(N_USERS) for j in range(6)])


def _plan(store: SqliteStore, now: datetime, *, user_ids: list[str] | None = None) -> None:
    chosen = USERS if user_ids is None else USERS.filter(pl.col("user_id").is_in(user_ids))
    ledger = None
    if user_ids is not None:
        others = [u for u in USERS["user_id"].to_list() if u not in user_ids]
        ledger = ledger_of_others(store, others, plan_day=DAY, campaigns=CAMPS)
    plan_and_store(store, users=chosen, campaigns=CAMPS, candidates=CANDS, plan_day=DAY, now=now, ledger=ledger,
                   pipeline=False, writer_process=False, chunk_users=7)


def _deliver_until(store: SqliteStore, clock: ManualClock, until: datetime) -> None:
    deliver_due(store, clock, since=datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC), until=until)


def _live(store: Store, campaign_id: str) -> Counter[str]:
    """The day's notifications of ``campaign_id`` that are not cancelled, by status."""
    return Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()
                   if i.get("campaign_id") == campaign_id and i.get("plan_day") == DAY.isoformat()
                   and i["status"] != CANCELLED)


@pytest.fixture
def day_half_sent(tmp_path: Path) -> tuple[SqliteStore, ManualClock, int]:
    clock = ManualClock(EVE)
    store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
    _plan(store, EVE)
    assert sum(_live(store, "cb").values()) == BUDGET
    _deliver_until(store, clock, NOON)
    sent = _live(store, "cb")[SENT]
    assert 0 < sent < BUDGET, f"the test needs some of cb's sends before noon and some after: {sent}"
    return store, clock, sent


def test_a_full_replan_at_noon_plans_only_what_the_budget_has_left(
        day_half_sent: tuple[SqliteStore, ManualClock, int]) -> None:
    store, clock, sent_by_noon = day_half_sent
    _plan(store, NOON + timedelta(minutes=1))
    live = _live(store, "cb")
    assert sum(live.values()) == BUDGET, f"{dict(live)}: {sent_by_noon} sent before the re-plan"
    _deliver_until(store, clock, NOON + timedelta(hours=13))  # the rest of the day (and its UTC spill)
    assert _live(store, "cb") == Counter({SENT: BUDGET})
    counted = sum(int(r.get("budget_spent") or 0) for r in campaign_stats(store, "cb"))
    assert counted == BUDGET  # the counter the next re-plan reads


def test_a_replan_of_some_users_counts_their_own_sends_today(
        day_half_sent: tuple[SqliteStore, ManualClock, int]) -> None:
    store, _, _ = day_half_sent
    got_cb = sorted({str(i["user_id"]) for i in store.table(tables.SCHEDULES).scan()
                     if i.get("campaign_id") == "cb" and i["status"] == SENT})
    _plan(store, NOON + timedelta(minutes=1), user_ids=[*got_cb, "u39", "u38", "u37"])
    live = _live(store, "cb")
    assert sum(live.values()) == BUDGET, dict(live)


def _seed_store(store: Store) -> None:
    """The users' profiles and the campaigns where ``plan_for_users`` reads them."""
    store.table(tables.USERS).batch_put([{"pk": u, "sk": tables.PROFILE_SK, "user_id": u, "timezone": "UTC",
                                          "daily_cap": 5} for u in USERS["user_id"].to_list()])
    store.table(tables.CAMPAIGNS).batch_put([
        {"pk": cid, "sk": tables.CAMPAIGN_SK, "campaign_id": cid, "priority": prio, "cooldown_hours": 0,
         "daily_budget": budget, "status": "active"} for cid, prio, _, budget in CAMPS.iter_rows()])


@pytest.fixture(params=["sqlite", "dynamodb"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with backend_store(request.param, request=request, tmp_path=tmp_path, clock=ManualClock(EVE),
                       name="budget") as store:
        yield store


def test_batches_planned_one_after_another_share_the_budget(any_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda's path (``plan_for_users``, a batch of users from the Store): each batch used to start from
    the whole budget, so two batches of 20 planned 20 of a budget of 10. It now starts from the day's
    ``planned`` counters and credits back its own users' pending notifications, so a batch planned again
    keeps the budget whole, not doubled. On SQLite and on DynamoDB Local."""
    store = any_store
    _seed_store(store)
    monkeypatch.setattr(service, "store_cosine", lambda _store: lambda ids, _cids, _k: CANDS.filter(
        pl.col("user_id").is_in(ids)))
    first, second = USERS["user_id"].to_list()[:20], USERS["user_id"].to_list()[20:]
    for batch in (first, second, first, second):
        service.plan_for_users(store, batch, plan_day=DAY, now=EVE)
        assert sum(_live(store, "cb").values()) == BUDGET, (batch[0], dict(_live(store, "cb")))


def test_batches_planned_at_the_same_time_do_not_pass_the_budget_together(
        any_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two batches (a coordinator fanning ``generate_schedule`` out) that both read the counters before
    either writes: each saw the whole budget and planned it, 20 of 10. Now each reserves what it takes
    before writing, conditionally; the second finds the budget taken, plans again from the counters as
    they are then, and the day holds 10."""
    store = any_store
    _seed_store(store)
    both_read = threading.Barrier(2, timeout=30)
    first_call: set[int] = set()

    def candidates_after_both_read(ids: list[str], _cids: list[str], _k: int) -> pl.DataFrame:
        if threading.get_ident() not in first_call:  # only the first plan of each batch waits for the other
            first_call.add(threading.get_ident())
            both_read.wait()
        return CANDS.filter(pl.col("user_id").is_in(ids))

    monkeypatch.setattr(service, "store_cosine", lambda _store: candidates_after_both_read)
    batches = [USERS["user_id"].to_list()[:20], USERS["user_id"].to_list()[20:]]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda batch: service.plan_for_users(store, batch, plan_day=DAY, now=EVE), batches))
    assert sum(_live(store, "cb").values()) == BUDGET, dict(_live(store, "cb"))
    assert sum(r.stats.notifications for r in runs) == sum(_live(store, c).total() for c in CAMPS["campaign_id"])
    planned = store.table(tables.CAMPAIGN_STATS).get("cb", DAY.isoformat(), consistent=True)
    assert planned is not None and planned["planned"] == BUDGET  # every reservation taken back, the count exact


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, and no ``except Exception`` catches it."""


@pytest.mark.parametrize("kill", ["before_a_count", "after_a_count", "after_the_rows"])
def test_a_plan_killed_anywhere_leaves_planned_over_never_short_so_no_batch_passes_a_budget(
        any_store: Store, monkeypatch: pytest.MonkeyPatch, kill: str) -> None:
    """A whole-day plan is killed in its second chunk, then run again; then a Lambda batch plans.

    ``planned`` was added after a chunk's rows: killed between the two, the re-run found the rows written and
    counted nothing for them, so the counter stayed short (8 for the 10 live notifications of a budget of 10)
    and the next batch planned past the budget. Now a run killed anywhere leaves it at or over what is live."""
    store = any_store
    _seed_store(store)
    from notify_core.delivery import feedback

    real_add = feedback.add_campaign_counts
    calls = {"planned": 0, "frames": 0}

    def add(s: Store, counts: Any, **kw: Any) -> None:
        if kw.get("field") == "planned":
            calls["planned"] += 1
            if calls["planned"] == 2 and kill == "before_a_count":
                raise _Killed
            real_add(s, counts, **kw)
            if calls["planned"] == 2 and kill == "after_a_count":
                raise _Killed
            return
        real_add(s, counts, **kw)

    monkeypatch.setattr(feedback, "add_campaign_counts", add)
    schedules = store.table(tables.SCHEDULES)
    if kill == "after_the_rows":  # the second chunk's rows written, then killed before anything else
        real_frame = type(schedules).batch_put_frame

        def put_frame(self: Any, frame: pl.DataFrame) -> int:
            n = real_frame(self, frame)
            if getattr(self, "name", "").endswith(tables.SCHEDULES):
                calls["frames"] += 1
                if calls["frames"] == 2:
                    raise _Killed
            return n

        monkeypatch.setattr(type(schedules), "batch_put_frame", put_frame)
    with pytest.raises(_Killed):
        _plan(store, EVE)
    monkeypatch.undo()
    _plan(store, EVE)
    for cid in CAMPS["campaign_id"]:
        row = store.table(tables.CAMPAIGN_STATS).get(cid, DAY.isoformat(), consistent=True)
        assert int((row or {}).get("planned") or 0) >= _live(store, cid).total(), (cid, row, _live(store, cid))
    assert sum(_live(store, "cb").values()) == BUDGET
    for batch in (USERS["user_id"].to_list()[:20], USERS["user_id"].to_list()[20:]):
        service.plan_for_users(store, batch, plan_day=DAY, now=EVE)
        assert sum(_live(store, "cb").values()) <= BUDGET
