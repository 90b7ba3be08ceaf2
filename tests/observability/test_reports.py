"""Pictures: the daily operations report from a real delivery run (numbers, HTML, the Dagster asset with
its plot in the metadata), the evaluation report's charts, and the Grafana dashboard against the registry."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.channels import Outcome
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import sign_token, track
from notify_core.delivery.worker import DeliveryWorker, WorkerOptions
from notify_core.preferences import opt_out_from_link
from notify_core.reports.operations import LATENESS_EDGES_S, daily_operations, operations_html
from notify_core.security.keyring import ephemeral_keyring
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.delivery.conftest import ScriptedChannel

REPO = Path(__file__).resolve().parents[2]


def _base() -> datetime:
    """A minute-aligned instant tomorrow (UTC) at 09:00: the test's own 'now', never a literal date."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    return datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, 0, tzinfo=UTC)


def delivered_day(tmp_path: Path) -> tuple[SqliteStore, datetime, list[str]]:
    """One day: 40 notifications due at 09:00 (2 fail for good), 20 at 14:00 and 10 at 18:00 for the same
    users as at 14:00, one of which repeats a notification id (a duplicate); all sent 30 s late."""
    store = SqliteStore(tmp_path / "store.sqlite")
    base = _base()
    morning = seed_due(store, n=40, start=base, user_prefix="m")
    afternoon = seed_due(store, n=20, start=base + timedelta(hours=5), user_prefix="a")
    seed_due(store, n=10, start=base + timedelta(hours=9), user_prefix="a", campaigns=1)  # a0 + c000 again
    failing = [str(morning[0]["notification_id"]), str(morning[1]["notification_id"])]
    channel = ScriptedChannel({nid: [Outcome.PERMANENT] for nid in failing})
    for hours in (0, 5, 9):
        clock = ManualClock(base + timedelta(hours=hours, seconds=30))
        worker = DeliveryWorker(store, channel, public_base_url="http://t.example", clock=clock,
                                options=WorkerOptions(concurrency=4, prefetch_s=0.0))
        worker.run_until_idle(deadline=clock.now() + 60)
        worker.close()
    sent = [str(i["notification_id"]) for i in morning[2:12]] + [str(i["notification_id"]) for i in afternoon[:2]]
    # two one-click opt-outs that day (their messages' unsubscribe links), and one category opt-out the user's
    # profile held before (a landing file's preference: not an opt-out of that day)
    for item in morning[3:5]:
        opt_out_from_link(store, user_id=str(item["user_id"]), campaign_id=str(item["campaign_id"]),
                          notification_id=str(item["notification_id"]), day=base.date().isoformat(),
                          now=base + timedelta(hours=1))
    store.table(tables.USERS).update("m0000006", tables.PROFILE_SK, set={"opted_out_categories": ["toys"]})
    return store, base, sent


def test_the_daily_operations_report_counts_a_real_delivery_run(tmp_path: Path) -> None:
    store, base, sent = delivered_day(tmp_path)
    day = base.date()
    keys, clock = ephemeral_keyring("tracking", now=base), ManualClock(base + timedelta(hours=10))
    tracked = LocalLog(tmp_path / "tracked.sqlite")  # the tracking links' events (not the lag's topic below)
    for nid in sent[:8]:  # 8 opens, 3 of them clicked too, through the links the messages carry
        track(store, tracked, token=sign_token(keys, nid, kind="open"), kind="open", keys=keys, clock=clock)
    for nid in sent[:3]:
        track(store, tracked, token=sign_token(keys, nid, kind="click"), kind="click", keys=keys, clock=clock)
    tracked.close()
    log = LocalLog(tmp_path / "log.sqlite")
    log.produce("notify_clickstream", b"u", b"{}")  # produced "now", never consumed by the group
    now = datetime.now(UTC) + timedelta(seconds=4)
    users = type(store.table(tables.USERS))
    scan = users.scan

    def no_profiles(self: object, **kwargs: object) -> object:  # the report reads no profile (10M users)
        assert getattr(self, "name", None) != tables.USERS, "the operations report scanned users"
        return scan(self, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(users, "scan", no_profiles)
        report = daily_operations(store, day=day, now=now, stream=log)
    log.close()

    assert (report.sends, report.failures, report.duplicates, report.pending) == (67, 2, 1, 0)
    assert (report.sends_by_hour[9], report.sends_by_hour[14], report.sends_by_hour[18]) == (38, 20, 9)
    assert sum(report.sends_by_hour) == 67
    assert (report.opens, report.clicks) == (8, 3) and report.ctr == pytest.approx(3 / 67)
    assert report.failure_rate == pytest.approx(2 / 69)
    assert report.opt_outs == 2
    assert report.plan_sizes == {1: 51, 2: 9}  # a1..a9 twice that day; the duplicate does not count
    assert sum(report.lateness_counts) == 67
    assert report.lateness_counts[LATENESS_EDGES_S.index(30.0)] == 67  # each went out 30 s late
    assert report.lateness_p50_s == pytest.approx(30.0, abs=0.5)
    assert report.consumer_lag_records == 1 and 3 <= (report.consumer_lag_seconds or 0) <= 30

    page = operations_html(report)
    assert "<h1>Notify operations" in page and "data:image/svg+xml;base64," in page
    svg = base64.b64decode(re.search(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", page).group(1))  # type: ignore[union-attr]
    assert b"Sends per hour" in svg and b"Plan sizes" in svg
    store.close()


def test_an_empty_day_renders_zeros_not_errors(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    report = daily_operations(store, day=_base().date(), now=datetime.now(UTC))
    assert (report.sends, report.ctr, report.lateness_p50_s, report.plan_sizes) == (0, 0.0, None, {})
    assert report.consumer_lag_records is None and report.notes  # no stream given: says where lag comes from
    assert "n/a" in operations_html(report)
    store.close()


def test_the_operations_asset_puts_its_plot_in_the_metadata_and_writes_the_html(tmp_path: Path) -> None:
    from notify_assets.operations import operations_report
    from notify_resources.resources import NotifyResource

    store, base, _sent = delivered_day(tmp_path)
    store.close()
    result = dg.materialize([dg.AssetSpec("delivery_run"), operations_report],
                            resources={"notify": NotifyResource(data_dir=str(tmp_path))},
                            selection=[operations_report.key],
                            run_config={"ops": {"operations_report": {"config": {"day": base.date().isoformat()}}}})
    assert result.success
    [mat] = result.asset_materializations_for_node("operations_report")
    assert mat.metadata["sends"].value == 67 and mat.metadata["failures"].value == 2
    plot = mat.metadata["plot"].value
    assert plot.startswith("![operations ") and "](data:image/png;base64," in plot
    png = base64.b64decode(plot.split("base64,", 1)[1].rstrip(")"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    html_path = Path(mat.metadata["report"].value)
    assert html_path == tmp_path / "reports" / f"operations-{base.date().isoformat()}.html"
    assert "Sends per hour" in base64.b64decode(
        html_path.read_text().split("data:image/svg+xml;base64,", 1)[1].split("'", 1)[0]).decode()


def test_the_evaluation_report_has_charts_beside_its_tables() -> None:
    from notify_core.evaluation.run import MethodResult, Report, to_html

    results = [MethodResult(m, "kind", "d", 0.2 + i / 10, 0.3 + i / 10, 0.1, 0.2 + i / 20, 0.5, 0.1, 0.1, 0.05, 0.06,
                            10, 1.0) for i, m in enumerate(("popularity", "embeddings", "hybrid"))]
    report = Report(settings={"users": 100}, results=results,
                    gains=[{"from": "popularity", "to": "embeddings", "hr10": 0.1, "ndcg10": 0.05, "new_hr10": 0.0,
                            "converted": 0.0}])
    page = to_html(report)
    assert page.count("<img") == 2 and "<table>" in page
    assert page.index("<table>") < page.index("<img")  # the tables first, as before
    empty = to_html(Report(settings={}, results=[]))
    assert "<img" not in empty


def test_every_metric_the_grafana_dashboard_queries_exists_in_the_registry() -> None:
    from prometheus_client import REGISTRY

    import notify_core.backup.replica_lag  # noqa: F401  (registers the backup's gauges)
    import notify_core.delivery.worker  # noqa: F401  (registers the delivery metrics)
    import notify_core.events.consumer  # noqa: F401
    import notify_core.metrics  # noqa: F401

    known: set[str] = set()
    for family in REGISTRY.collect():
        known.update(sample.name for sample in family.samples)
        known.update({f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum", f"{family.name}_total"}
                     if family.type in ("histogram", "counter") else {family.name})
    dashboard = json.loads((REPO / "deploy" / "grafana" / "notify.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    recorded = {r["record"] for g in __import__("yaml").safe_load(
        (REPO / "deploy" / "prometheus" / "notify-rules.yml").read_text())["groups"] for r in g["rules"]
        if "record" in r}
    queried = {name for e in exprs for name in re.findall(r"\b(notify[_:][a-z0-9_:]+)", e)}
    missing = {name for name in queried if name not in known and name not in recorded}
    assert not missing, missing
    for needed in ("notify_http_request_duration_seconds_bucket", "notify_consumer_lag_seconds",
                   "notify_capture_events_total", "notify_deliveries_total", "notify_plan_generations_total"):
        assert needed in queried


def test_every_alert_reads_metrics_the_dashboard_shows() -> None:
    """An operator paged by an alert finds what it read on the dashboard: the missed deliveries and the backup's
    lag were alerts with no panel (session 46). An alert on a recorded SLO value is shown by that value or by
    every metric it is computed from; a histogram's ``_count`` by its ``_bucket``."""
    import yaml

    def family(name: str) -> str:
        return re.sub(r"_(bucket|count|sum)$", "", name)

    def names(expr: str) -> set[str]:
        return set(re.findall(r"\b(notify[_:][a-z0-9_:]+)", expr))

    dashboard = json.loads((REPO / "deploy" / "grafana" / "notify.json").read_text())
    queried = {n for p in dashboard["panels"] for t in p.get("targets", []) for n in names(t["expr"])}
    shown = queried | {family(n) for n in queried}
    rules = [r for g in yaml.safe_load((REPO / "deploy" / "prometheus" / "notify-rules.yml").read_text())["groups"]
             for r in g["rules"]]
    recorded = {r["record"]: r["expr"] for r in rules if "record" in r}
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 10
    for alert in alerts:
        needed: set[str] = set()
        for name in names(alert["expr"]):
            needed |= {name} if name in shown or name not in recorded else names(recorded[name])
        missing = {n for n in needed if n not in shown and family(n) not in shown}
        assert not missing, f"{alert['alert']} reads {missing}, on no dashboard panel"
