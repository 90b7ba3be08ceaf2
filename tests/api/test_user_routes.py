"""Issue 19's routes through the real gateway: preferences, history, campaign statistics, preview, unsubscribe.

The flow tests run the real pieces end to end on the small recommendation world: ``POST /v1/schedules``
plans a user's next day, the real delivery worker sends it (one notification dead-lettered by the
channel), a tracking click is recorded, the message's own unsubscribe link is POSTed, and the history
and statistics routes are read back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.channels import Message, Outcome, SendResult
from notify_core.delivery.tracking import track
from notify_core.errors import BackendError
from notify_core.scheduling.fatigue import fatigue_of
from notify_core.scheduling.models import FatigueOptions
from notify_core.scheduling.store import load_state
from notify_core.security import audit
from notify_core.store import tables
from tests.api.conftest import Served

OPTS = WorkerOptions(concurrency=2, lookback_minutes=3, prefetch_s=0.0)


def _h(served: Served, *scopes: str) -> dict[str, str]:
    return {"x-api-key": served.key(*scopes)}


# -- preferences ---------------------------------------------------------------------------------------
def test_preferences_read_write_and_audit(served: Served) -> None:
    reply = served.client.get("/v1/users/u1/preferences", headers=_h(served, "users:read"))
    assert reply.status_code == 200
    assert reply.json() == {"user_id": "u1", "channels": ["push"], "opted_out_categories": ["toys"],
                            "quiet_start_hour": None, "quiet_end_hour": None, "daily_cap": None,
                            "timezone": "UTC", "unsubscribed": False}
    body = {"channels": ["email", "push"], "opted_out_categories": ["toys", "party"], "quiet_start_hour": 22,
            "quiet_end_hour": 7, "daily_cap": 2, "timezone": "Europe/London"}
    reply = served.client.put("/v1/users/u1/preferences", json=body, headers=_h(served, "users:write"))
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"user_id": "u1", **body, "unsubscribed": False}
    profile = served.world.store.table(tables.USERS).get("u1", tables.PROFILE_SK)
    assert profile["daily_cap"] == 2 and profile["timezone"] == "Europe/London"
    assert profile["country"] == "United Kingdom"  # the rest of the profile stays
    assert served.client.get("/v1/users/u1/preferences", headers=_h(served, "users:read")).json()["quiet_end_hour"] == 7
    entry = [e for e in audit.entries(served.world.store) if e.action == "preferences.update"][-1]
    assert entry.target == "u1"
    assert entry.before["opted_out_categories"] == ["toys"] and entry.after["daily_cap"] == 2


@pytest.mark.parametrize("body, fragment", [
    ({"daily_cap": 6}, "daily_cap"),
    ({"daily_cap": -1}, "daily_cap"),
    ({"quiet_start_hour": 22}, "together"),
    ({"quiet_start_hour": 24, "quiet_end_hour": 7}, "quiet_start_hour"),
    ({"timezone": "Mars/Olympus"}, "time zone"),
    ({"timezone": "Factory"}, "time zone"),  # listed by zoneinfo, refused by polars: it failed whole plans
    ({"timezone": "localtime"}, "time zone"),
    ({"channels": ["pigeon"]}, "channels"),
    ({"opted_out_categories": [""]}, "opted_out_categories"),
    ({"opted_out_categories": ["x"] * 51}, "opted_out_categories"),
    ({"opted_out_categories": ["x" * 65]}, "opted_out_categories"),  # docs/user-api.md: names 1-64 chars
    ({"unknown": 1}, "unknown"),
    ([], "request"),
])
def test_bad_preferences_are_a_400_and_change_nothing(served: Served, body: Any, fragment: str) -> None:
    before = served.world.store.table(tables.USERS).get("u2", tables.PROFILE_SK)
    reply = served.client.put("/v1/users/u2/preferences", json=body, headers=_h(served, "users:write"))
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "ValidationError" and fragment in reply.json()["error"]["message"]
    assert served.world.store.table(tables.USERS).get("u2", tables.PROFILE_SK) == before


def test_an_unknown_user_is_a_404_and_no_profile_is_created(served: Served) -> None:
    assert served.client.get("/v1/users/nobody/preferences", headers=_h(served, "users:read")).status_code == 404
    reply = served.client.put("/v1/users/nobody/preferences", json={"daily_cap": 1}, headers=_h(served, "users:write"))
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "NotFoundError"
    assert served.world.store.table(tables.USERS).get("nobody", tables.PROFILE_SK) is None


def test_the_planner_honours_preferences_set_through_the_api(served: Served) -> None:
    tomorrow = (datetime.fromtimestamp(served.clock.now(), UTC).date() + timedelta(days=1)).isoformat()
    plan = {"user_ids": ["u2"], "plan_day": tomorrow}
    admin = _h(served, "admin")
    served.client.put("/v1/users/u2/preferences", json={"daily_cap": 2, "quiet_start_hour": 0, "quiet_end_hour": 12},
                      headers=admin)
    assert served.client.post("/v1/schedules", json=plan, headers=admin).json()["notifications_planned"] == 2
    items = [i for i in served.world.store.table(tables.PLANS).query("u2") if i["status"] == "pending"]
    assert len(items) == 2 and all(int(str(i["send_at"])[11:13]) >= 12 for i in items)  # quiet until noon UTC
    served.client.put("/v1/users/u2/preferences", json={"daily_cap": 0}, headers=admin)
    reply = served.client.post("/v1/schedules", json=plan, headers=admin).json()
    assert reply["notifications_planned"] == 0 and reply["cancelled"] == 2
    day = served.client.get(f"/v1/campaigns/{items[0]['campaign_id']}/stats?since={tomorrow}&until={tomorrow}",
                            headers=admin).json()
    assert day["total"]["planned"] == 0  # planned, then cancelled by the re-plan: net zero


# -- the flow: plan, deliver, click, unsubscribe, read back -----------------------------------------------
class RecordingChannel:
    name = "recording"

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        with self._lock:
            self.messages.append(message)
        if message.campaign_id in self.fail:
            return SendResult(Outcome.PERMANENT, status=410, detail="gone")
        return SendResult(Outcome.DELIVERED, status=200)

    def close(self) -> None:
        return None


@dataclass
class Flow:
    day: str
    plans: list[dict[str, Any]]
    messages: dict[str, Message]  # by campaign id
    failed: str
    clicked: str
    opted: str


@pytest.fixture
def flow(served: Served) -> Flow:
    admin = _h(served, "admin")
    tomorrow = datetime.fromtimestamp(served.clock.now(), UTC).date() + timedelta(days=1)
    reply = served.client.post("/v1/schedules", json={"user_ids": ["u2"], "plan_day": tomorrow.isoformat()},
                               headers=admin)
    assert reply.json()["notifications_planned"] == 5, reply.text
    plans = sorted(served.world.store.table(tables.PLANS).query("u2"), key=lambda i: str(i["send_at"]))
    failed, clicked, opted = plans[1]["campaign_id"], plans[2]["campaign_id"], plans[3]["campaign_id"]
    channel = RecordingChannel({failed})
    clock = ManualClock(datetime.fromisoformat(str(plans[0]["send_at"]).replace("Z", "+00:00")))
    worker = DeliveryWorker(served.world.store, channel, public_base_url="https://n.example", clock=clock,
                            options=OPTS, tracking_keys=served.tracking_keys)
    for item in plans:  # each send time in turn
        at = datetime.fromisoformat(str(item["send_at"]).replace("Z", "+00:00")).timestamp()
        clock.advance(max(0.0, at - clock.now()))
        worker.run_until_idle()
    worker.close()
    messages = {m.campaign_id: m for m in channel.messages}
    assert len(messages) == 5
    # the API's clock moves to the evening of that day: clicks and the opt-out happen then
    served.clock.advance(datetime.fromisoformat(f"{tomorrow.isoformat()}T20:00:00+00:00").timestamp()
                         - served.clock.now())
    token = messages[clicked].link.rsplit("/", 1)[1]
    track(served.world.store, served.log, token=token, kind="click", keys=served.tracking_keys, clock=served.clock)
    unsubscribe = messages[opted].unsubscribe.removeprefix("https://n.example")
    reply = served.client.post(unsubscribe, content=b"List-Unsubscribe=One-Click",
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 200, reply.text
    return Flow(tomorrow.isoformat(), plans, messages, failed, clicked, opted)


def test_history_newest_first_with_every_status_and_a_cursor(served: Served, flow: Flow) -> None:
    read = _h(served, "users:read")
    reply = served.client.get("/v1/users/u2/notifications", headers=read)
    assert reply.status_code == 200, reply.text
    items = reply.json()["items"]
    assert [i["send_at"] for i in items] == sorted((str(p["send_at"]) for p in flow.plans), reverse=True)
    status = {i["campaign_id"]: i for i in items}
    assert status[flow.failed]["status"] == "failed" and status[flow.failed]["detail"] == "gone"
    assert status[flow.clicked]["status"] == "clicked" and {"planned", "sent", "delivered", "clicked"} <= set(
        status[flow.clicked]["events"])
    assert status[flow.opted]["status"] == "opted_out" and "opted_out" in status[flow.opted]["events"]
    assert sum(1 for i in items if i["status"] == "delivered") == 2
    # one at a time through the cursor: the same entries, in the same order, no repeats
    seen, cursor = [], None
    for _ in range(10):
        url = "/v1/users/u2/notifications?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = served.client.get(url, headers=read).json()
        seen += [i["notification_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["notification_id"] for i in items]
    assert served.client.get("/v1/users/u2/notifications?cursor=not-a-cursor", headers=read).status_code == 400
    assert served.client.get("/v1/users/u2/notifications?limit=0", headers=read).status_code == 400
    assert served.client.get("/v1/users/nobody/notifications", headers=read).json()["items"] == []


def test_campaign_stats_per_day(served: Served, flow: Flow) -> None:
    read = _h(served, "campaigns:read")
    rows = {}
    for cid in (flow.failed, flow.clicked, flow.opted):
        reply = served.client.get(f"/v1/campaigns/{cid}/stats?since={flow.day}&until={flow.day}", headers=read)
        assert reply.status_code == 200, reply.text
        (rows[cid],) = reply.json()["days"]
        assert rows[cid]["day"] == flow.day and rows[cid]["planned"] == 1 and rows[cid]["sent"] == 1
    assert rows[flow.failed]["failures"] == 1 and rows[flow.failed]["delivered"] == 0
    clicked = rows[flow.clicked]
    assert clicked["clicks"] == 1 and clicked["ctr"] == 1.0 and clicked["delivered"] == 1
    assert rows[flow.opted]["opt_outs"] == 1 and rows[flow.opted]["clicks"] == 0
    assert served.client.get("/v1/campaigns/nope/stats", headers=read).status_code == 404
    assert served.client.get(f"/v1/campaigns/{flow.failed}/stats?since=2026-02-02&until=2026-02-01",
                             headers=read).status_code == 400
    assert served.client.get(f"/v1/campaigns/{flow.failed}/stats?since=garbage", headers=read).status_code == 400


def test_the_unsubscribe_link_is_an_opt_out_event_that_feeds_fatigue(served: Served, flow: Flow) -> None:
    store = served.world.store
    category = store.table(tables.CAMPAIGNS).get(flow.opted, tables.CAMPAIGN_SK)["category"]
    prefs = served.client.get("/v1/users/u2/preferences", headers=_h(served, "users:read")).json()
    assert category in prefs["opted_out_categories"] and prefs["unsubscribed"] is False
    events = [e for e in store.table(tables.USER_EVENTS).query("u2") if e["type"] == "opt_out"]
    assert len(events) == 1 and events[0]["campaign_id"] == flow.opted
    # the same link again (a mail client retrying): nothing new
    again = served.client.post(flow.messages[flow.opted].unsubscribe.removeprefix("https://n.example"))
    assert again.status_code == 200
    assert len([e for e in store.table(tables.USER_EVENTS).query("u2") if e["type"] == "opt_out"]) == 1
    assert store.table(tables.CAMPAIGN_STATS).get(flow.opted, flow.day)["opted_out"] == 1
    entry = [e for e in audit.entries(store) if e.action == "preferences.unsubscribe"][-1]
    assert entry.actor == "unsubscribe-link" and entry.target == "u2"
    # fatigue: the opt-out puts the user at the maximum reduction and penalty
    now = datetime.fromtimestamp(served.clock.now(), UTC) + timedelta(hours=1)
    state = load_state(store, ["u2"], plan_day=now.date() + timedelta(days=1))
    import polars as pl

    options = FatigueOptions()
    fat = fatigue_of(pl.DataFrame({"user_id": ["u2"]}), state.history, state.interactions, as_of=now,
                     options=options)
    assert int(fat.cap_reduction[0]) == options.max_cap_reduction
    assert float(fat.penalty[0]) == pytest.approx(options.max_penalty)


def test_unsubscribe_page_links_scope_and_forgeries(served: Served) -> None:
    token = served.unsubscribe_token("n-page", campaign_id="c003")  # c003 is in "toys"
    page = served.client.get(f"/u/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "toys" in page.text and 'method="post"' in page.text
    assert served.world.store.table(tables.USER_EVENTS).query("u2") == []  # a GET changes nothing
    reply = served.client.post(f"/u/{token}?scope=all")
    assert reply.status_code == 200 and "all notifications" in reply.text
    assert served.world.store.table(tables.USERS).get("u2", tables.PROFILE_SK)["unsubscribed"] is True
    from notify_core.delivery.tracking import sign_token

    click_token = sign_token(served.tracking_keys, "n-page", kind="click")
    nid, kid, mac = token.split(".")
    for forged in (click_token, f"n-other.{kid}.{mac}", f"{nid}.{kid}.{'A' * len(mac)}", "x", "a.b.c"):
        assert served.client.post(f"/u/{forged}").status_code == 404
        assert served.client.get(f"/u/{forged}").status_code == 404
    assert served.client.post(f"/u/{token}?scope=some").status_code == 400


def test_an_opt_out_interrupted_by_a_store_failure_is_finished_by_the_retry(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    token = served.unsubscribe_token("n-fault", campaign_id="c001")
    store = served.world.store
    events = store.table(tables.USER_EVENTS)
    real = type(events).batch_put
    calls = {"n": 0}

    def failing(self: Any, items: Any) -> int:
        if self.name == tables.USER_EVENTS and calls["n"] == 0:
            calls["n"] += 1
            raise BackendError("store unavailable")
        return real(self, items)

    monkeypatch.setattr(type(events), "batch_put", failing)
    assert served.client.post(f"/u/{token}").status_code == 503  # the marker is taken, the event is not
    assert [e for e in events.query("u2") if e["type"] == "opt_out"] == []
    assert served.client.post(f"/u/{token}").status_code == 200  # the retry finishes the job, once
    assert len([e for e in events.query("u2") if e["type"] == "opt_out"]) == 1
    day = datetime.fromtimestamp(served.clock.now(), UTC).date().isoformat()
    assert store.table(tables.CAMPAIGN_STATS).get("c001", day)["opted_out"] == 1
    assert served.client.post(f"/u/{token}").status_code == 200
    assert store.table(tables.CAMPAIGN_STATS).get("c001", day)["opted_out"] == 1


# -- preview ---------------------------------------------------------------------------------------------
def test_preview_renders_readable_copy_without_sending(served: Served) -> None:
    read = _h(served, "campaigns:read")
    served.world.store.table(tables.USERS).update("u2", tables.PROFILE_SK, set={"first_name": "Anna"})
    reply = served.client.post("/v1/campaigns/c001/preview", json={"user_id": "u2"}, headers=read)
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["body"].startswith("Hi Anna, kitchen mugs offer 1. great kitchen mugs deals number 1 http")
    assert "  " not in out["body"] and out["would_send"] is True and out["suppressed_reason"] is None
    assert "/u/" in out["unsubscribe"] and out["link"] in out["body"]
    assert list(served.world.store.table(tables.DELIVERIES).scan()) == []  # nothing sent or recorded
    u1 = served.client.post("/v1/campaigns/c003/preview", json={"user_id": "u1"}, headers=read).json()
    assert u1["would_send"] is False and u1["suppressed_reason"] == "category_opted_out"
    assert u1["body"].startswith("Hi, ")  # no first name: no "there"
    hour = datetime.fromtimestamp(served.clock.now(), UTC).hour  # a quiet hour now: held back at send time
    served.world.store.table(tables.USERS).update("u2", tables.PROFILE_SK, set={
        "quiet_start_hour": hour, "quiet_end_hour": (hour + 1) % 24, "timezone": "UTC"})
    quiet = served.client.post("/v1/campaigns/c001/preview", json={"user_id": "u2"}, headers=read).json()
    assert quiet["would_send"] is False and quiet["suppressed_reason"] == "quiet_hours"
    assert served.client.post("/v1/campaigns/c001/preview", json={"user_id": "nobody"}, headers=read).status_code == 404
    assert served.client.post("/v1/campaigns/nope/preview", json={"user_id": "u2"}, headers=read).status_code == 404
    assert served.client.post("/v1/campaigns/c001/preview", json={"user_id": "u2", "x": 1},
                              headers=read).status_code == 400


def test_the_documented_limits_of_history_pages_and_stats_ranges(served: Served) -> None:
    """docs/user-api.md: a history page is ``limit`` 1..100; a stats range is at most 366 days (both ends
    inclusive): one more day, or one more entry, is a 400, the bound itself a 200."""
    read = _h(served, "users:read", "campaigns:read")
    history = "/v1/users/u2/notifications?limit="
    assert served.client.get(history + "100", headers=read).status_code == 200
    reply = served.client.get(history + "101", headers=read)
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "ValidationError", reply.text
    stats = "/v1/campaigns/c001/stats?since=2026-01-01&until="
    assert served.client.get(stats + "2027-01-01", headers=read).status_code == 200  # 366 days
    reply = served.client.get(stats + "2027-01-02", headers=read)  # 367 days
    assert reply.status_code == 400 and "366" in reply.json()["error"]["message"], reply.text


def test_stats_default_to_the_last_30_days(served: Served) -> None:
    """docs/user-api.md: without since/until, the stats are the last 30 days to today (by the served clock)."""
    today = datetime.fromtimestamp(served.clock.now(), UTC).date()
    table = served.world.store.table(tables.CAMPAIGN_STATS)
    for back in (0, 29, 30):
        table.put({"pk": "c001", "sk": (today - timedelta(days=back)).isoformat(), "planned": 100 + back})
    reply = served.client.get("/v1/campaigns/c001/stats", headers=_h(served, "campaigns:read"))
    assert reply.status_code == 200, reply.text
    days = {d["day"]: d["planned"] for d in reply.json()["days"]}
    assert {(today - timedelta(days=b)).isoformat() for b in (0, 29)} <= set(days)
    assert (today - timedelta(days=30)).isoformat() not in days
