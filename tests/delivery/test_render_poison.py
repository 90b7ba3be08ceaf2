"""A user's attribute must not make rendering raise: one bad profile would stop the worker for everyone."""

from __future__ import annotations

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.templates import render_template
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start

OPTS = WorkerOptions(concurrency=2, lookback_minutes=3, prefetch_s=0.0)


def test_an_infinite_number_in_a_user_attribute_renders_instead_of_raising(
        store: SqliteStore, clock: ManualClock) -> None:
    """The restricted formatter turns a string into a number for a ``:d`` spec (``int(float(value))``) and
    caught ValueError and TypeError only: a user attribute "inf" or "1e999" under ``{points:d}`` raised
    OverflowError out of render, outside the channel's guard, so the whole worker pass raised (``run_forever``
    stops), the claim was taken again after its lease and raised again: one profile stopped delivery for
    every user. Now the value renders as its text, like any other value the spec does not fit."""
    items = seed_due(store, n=3, start=minute_start(clock.now()), campaigns=1)
    store.table(tables.CAMPAIGNS).update("c000", tables.CAMPAIGN_SK, set={"template": "{points:d} points: {url}"})
    for item, points in zip(items, ("inf", "1e999", "12"), strict=True):
        store.table(tables.USERS).update(item["user_id"], tables.PROFILE_SK, set={"points": points})
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    summary = worker.run_pass()
    worker.close()
    assert summary.delivered == 3
    assert render_template("{p:d}|{q:.2f}|{r:%}", {"p": "-inf", "q": "1e999", "r": "nan"}) == "-inf|inf|nan%"
