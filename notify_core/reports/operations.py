"""The daily operations report: what Notify did on one UTC day, from the Store, as numbers and a picture.

Sends, failures, opens, clicks, CTR, the day's opt-outs, how late notifications went out (a histogram), how many
notifications users were planned (plan sizes) and how far behind the event consumer is. Computed from
the rows the pipeline already writes, so it needs no metrics server:

* the day's ``schedules`` items (the partitions of every due minute and shard, as the delivery worker
  reads them, an hour's 960 at a time through ``query_many``): status, lateness (``latency_s`` of sent
  items), sends per hour, and per user the plan size;
* ``campaign_stats`` (one row per campaign and day, read in batches): first opens and clicks, counted by
  the tracking endpoints, and the one-click opt-outs made that day through a message's unsubscribe link.
  No user profile is read: the report used to scan every profile for the users with a category opt-out,
  which at the spec's 10M users meant reading and opening every profile's sealed fields once a day for
  one number that is not the day's (it counted preferences however old);
* the stream (embedded log only): records not yet committed by the consumer group and the age of the
  oldest one. On Kafka, joining the group to look would trigger a rebalance, so lag comes from the
  ``notify_consumer_lag_seconds`` metric instead and the report says "n/a".

Scale: 1,440 minutes x 16 shards = 23,040 partitions for a day. SQLite reads them in one statement an
hour; DynamoDB has no multi-partition query, so that is ~23k read requests a day (a rounding error next to
delivery itself), 16 in flight at a time (:meth:`DynamoTable.query_many`): with a region's ~4 ms round trip
that is ~40-50 s a day instead of ~160-170 s one after another (``bench/bench_query_many.py``: an hour's
960). On DynamoDB Local on 2 cores the requests are CPU-bound either way (~44 s, most of a small
``notify run`` on aws).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from notify_core.events.consumer import DEFAULT_GROUP
from notify_core.events.models import TOPICS
from notify_core.scheduling.ids import DEFAULT_SHARDS
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.stream.port import Stream

LATENESS_EDGES_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)  # the last bucket is "300 s and more"


@dataclass(frozen=True, slots=True)
class OperationsReport:
    day: str
    sends: int
    failures: int  # dead-lettered
    pending: int  # planned and not finished yet (pending, claimed, retry scheduled)
    cancelled: int
    duplicates: int  # suppressed by the 24 h dedupe window (a re-planned notification id)
    opens: int
    clicks: int
    opt_outs: int  # one-click opt-outs that day (the campaigns' ``opted_out`` counters)
    sends_by_hour: list[int]
    lateness_counts: list[int]  # per LATENESS_EDGES_S bucket: [edge_i, edge_i+1), the last open-ended
    lateness_p50_s: float | None
    lateness_p95_s: float | None
    plan_sizes: dict[int, int]  # notifications planned for a user that day -> number of users
    consumer_lag_records: int | None = None
    consumer_lag_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ctr(self) -> float:
        return self.clicks / self.sends if self.sends else 0.0

    @property
    def open_rate(self) -> float:
        return self.opens / self.sends if self.sends else 0.0

    @property
    def failure_rate(self) -> float:
        finished = self.sends + self.failures
        return self.failures / finished if finished else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan_sizes"] = {str(k): v for k, v in sorted(self.plan_sizes.items())}
        out.update(ctr=round(self.ctr, 6), open_rate=round(self.open_rate, 6), failure_rate=round(self.failure_rate, 6))
        return out

    def summary(self) -> dict[str, Any]:
        """The headline numbers (Dagster metadata, the HTML's first table)."""
        return {
            "sends": self.sends, "failures": self.failures, "failure_rate": round(self.failure_rate, 6),
            "opens": self.opens, "clicks": self.clicks, "ctr": round(self.ctr, 6),
            "opt_outs": self.opt_outs,
            "lateness_p50_s": self.lateness_p50_s, "lateness_p95_s": self.lateness_p95_s,
            "users_planned": sum(self.plan_sizes.values()), "pending": self.pending,
            "consumer_lag_records": self.consumer_lag_records, "consumer_lag_seconds": self.consumer_lag_seconds,
        }


def _quantile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(float(sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]), 4)


def _bucket(value: float) -> int:
    for i in range(len(LATENESS_EDGES_S) - 1, -1, -1):
        if value >= LATENESS_EDGES_S[i]:
            return i
    return 0


def stream_lag(
    stream: Stream | None, *, group: str, topics: Sequence[str], now_ms: int,
) -> tuple[int | None, float | None]:
    """(records not committed by ``group``, age in seconds of the oldest of them) on the embedded log."""
    committed = getattr(stream, "committed", None)
    if stream is None or committed is None:
        return None, None
    records = 0
    for topic in topics:
        records += max(stream.end_offsets(topic).get(0, 0) - int(committed(group, topic)), 0)
    if records == 0:
        return 0, 0.0
    oldest: list[int] = []
    for topic in topics:  # the first uncommitted record of each topic (on the local log, reading moves nothing)
        consumer = stream.consumer(group=group, topics=[topic])
        try:
            oldest += [r.timestamp_ms for r in consumer.poll_batch(max_records=1, timeout=0)]
        finally:
            consumer.close()
    return records, (max(now_ms - min(oldest), 0) / 1000 if oldest else None)


def daily_operations(
    store: Store, *, day: date, now: datetime, stream: Stream | None = None, group: str = DEFAULT_GROUP,
    topics: Sequence[str] = TOPICS, shards: int = DEFAULT_SHARDS,
) -> OperationsReport:
    """The report of UTC ``day`` (see the module docstring); ``now`` is when it is computed (for lag)."""
    schedules = store.table(tables.SCHEDULES)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    status: Counter[str] = Counter()
    by_hour = [0] * 24
    lateness: list[float] = []
    per_user: Counter[str] = Counter()
    for hour in range(24):  # an hour's partitions (60 minutes x shards) in one query_many each
        pks = [tables.schedule_pk(tables.due_minute(start + timedelta(hours=hour, minutes=m)), shard)
               for m in range(60) for shard in range(shards)]
        for items in schedules.query_many(pks).values():
            for item in items:
                state = str(item.get("status"))
                status[state] += 1
                if state not in ("cancelled", "duplicate"):
                    per_user[str(item.get("user_id"))] += 1
                if state == "sent":
                    by_hour[hour] += 1
                    if item.get("latency_s") is not None:
                        lateness.append(max(float(item["latency_s"]), 0.0))
    lateness.sort()
    counts = [0] * len(LATENESS_EDGES_S)
    for value in lateness:
        counts[_bucket(value)] += 1
    opens = clicks = opt_outs = 0
    keys = [(str(campaign["pk"]), day.isoformat()) for campaign in store.table(tables.CAMPAIGNS).scan()]
    for row in store.table(tables.CAMPAIGN_STATS).batch_get(keys):
        opens += int(row.get("opened") or 0)
        clicks += int(row.get("clicked") or 0)
        opt_outs += int(row.get("opted_out") or 0)
    lag_records, lag_seconds = stream_lag(stream, group=group, topics=topics, now_ms=int(now.timestamp() * 1000))
    notes = [] if stream is not None and lag_records is not None else [
        "consumer lag: read from the notify_consumer_lag_seconds metric (not readable from this stream)"]
    return OperationsReport(
        day=day.isoformat(), sends=status["sent"], failures=status["dead_lettered"],
        pending=status["pending"] + status["claimed"] + status["retry_scheduled"], cancelled=status["cancelled"],
        duplicates=status["duplicate"],
        opens=opens, clicks=clicks, opt_outs=opt_outs, sends_by_hour=by_hour, lateness_counts=counts,
        lateness_p50_s=_quantile(lateness, 0.5), lateness_p95_s=_quantile(lateness, 0.95),
        plan_sizes=dict(sorted(Counter(per_user.values()).items())), consumer_lag_records=lag_records,
        consumer_lag_seconds=lag_seconds, notes=notes,
    )


def operations_figure(report: OperationsReport) -> Any:
    """One figure, four panels: sends per hour, lateness histogram, plan sizes, engagement."""
    from notify_core.reports.plots import PALETTE, new_figure

    fig = new_figure(width=11, height=6.4)
    (a, b), (c, d) = fig.subplots(2, 2)
    a.bar(range(24), report.sends_by_hour, color=PALETTE[0])
    a.set_title("Sends per hour (UTC)")
    a.set_xticks(range(0, 24, 3))
    labels = [f"{LATENESS_EDGES_S[i]:g}-{LATENESS_EDGES_S[i + 1]:g}" for i in range(len(LATENESS_EDGES_S) - 1)]
    labels.append(f"{LATENESS_EDGES_S[-1]:g}+")
    b.bar(range(len(labels)), report.lateness_counts, color=PALETTE[1])
    b.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    b.set_title(f"Lateness of sends, seconds (p50 {report.lateness_p50_s}, p95 {report.lateness_p95_s})")
    sizes = sorted(report.plan_sizes)
    c.bar([str(s) for s in sizes], [report.plan_sizes[s] for s in sizes], color=PALETTE[2])
    c.set_title("Plan sizes: notifications per user")
    c.set_xlabel("notifications planned")
    c.set_ylabel("users")
    names = ["sends", "opens", "clicks", "failures", "opt-outs"]
    values = [report.sends, report.opens, report.clicks, report.failures, report.opt_outs]
    d.barh(names[::-1], values[::-1], color=[PALETTE[5], PALETTE[4], PALETTE[3], PALETTE[2], PALETTE[0]])
    d.set_title(f"Engagement: CTR {report.ctr:.1%}, open rate {report.open_rate:.1%}")
    for ax in (a, b, c, d):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x" if ax is d else "y", alpha=0.3)
    fig.suptitle(f"Notify operations, {report.day}")
    return fig


def operations_html(report: OperationsReport, *, figure_uri: str | None = None) -> str:
    """A self-contained page: the headline numbers, then the figure (given as a data URI, or rendered)."""
    from notify_core.reports.plots import data_uri

    uri = figure_uri or data_uri(operations_figure(report), fmt="svg")

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "n/a"
        if key.endswith("rate") or key == "ctr":
            return f"{value:.2%}"
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape(str(value))

    rows = "".join(f"<tr><th>{html.escape(k.replace('_', ' ').replace('ctr', 'CTR'))}</th><td>{cell(k, v)}</td></tr>"
                   for k, v in report.summary().items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Notify operations {html.escape(report.day)}</title>"
            "<style>body{font-family:sans-serif;margin:24px;color:#1f2328}table{border-collapse:collapse;"
            "margin-bottom:16px}th,td{border:1px solid #d0d7de;padding:4px 10px}th{text-align:left;"
            "font-weight:normal;color:#57606a}td{text-align:right;font-variant-numeric:tabular-nums}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>Notify operations, {html.escape(report.day)} (UTC)</h1><table>{rows}</table>"
            f"<img alt='Sends per hour, lateness histogram, plan sizes and engagement' src='{uri}'>"
            f"{f'<ul>{notes}</ul>' if notes else ''}</body></html>")


def write_operations_report(report: OperationsReport, folder: Path, *, figure_uri: str | None = None) -> Path:
    """``operations-<day>.html`` under ``folder`` (written atomically, 0600 in a 0700 folder); its path."""
    import os

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"operations-{report.day}.html"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.touch(mode=0o600)
    tmp.write_text(operations_html(report, figure_uri=figure_uri))
    os.replace(tmp, path)
    return path
