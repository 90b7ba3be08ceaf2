"""Capacity and cost model: what the scale-out deployment needs for a given scale, and what it costs.

Pure arithmetic (no I/O beyond reading the dated price table): a :class:`Scale` (users,
notifications/day, events/s and recommendations/s at peak), the project's *measured* per-operation
costs (:class:`Measured`, read from ``bench/results/*.json`` by the CLI), the per-operation counts the
code performs (:class:`Assumptions`, each documented where it is declared) and the price table
(``capacity_prices.json``: each price with its source page and date) give the capacity of each
component, its monthly cost, and the cost per 1k notifications and per 1k recommendations against the
spec's budgets. ``notify capacity`` prints it.

Why a model and not a guess: every figure is a product of a measured rate and a counted operation, so a
benchmark re-run or a code change that adds a Store write moves the estimate by itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notify_core.errors import ConfigurationError

PRICES_PATH = Path(__file__).with_name("capacity_prices.json")
SECONDS_PER_MONTH = 30 * 86_400  # a 30-day month, as the spec's daily volumes x 30
HOURS_PER_MONTH = 730  # AWS bills provisioned capacity and instances by the 730-hour month

# The spec's budgets (notify-requirements.md, "Cost Efficiency Targets"): per component and per unit.
BUDGETS_MONTHLY: dict[str, float] = {"Lambda": 1_200.0, "DynamoDB": 1_800.0, "Kafka": 900.0,
                                     "Orchestration": 700.0, "EventBridge": 250.0}
BUDGET_TOTAL = 4_800.0
BUDGET_PER_1K_NOTIFICATIONS = 0.015
BUDGET_PER_1K_RECOMMENDATIONS = 0.008
PROVISIONED_BUFFER = 0.30  # the spec's 30 % headroom over peak (5.1 DynamoDB capacity)


@dataclass(frozen=True, kw_only=True)
class Scale:
    """The load to plan for. Means default to the spec's normal/peak ratios (events: 11k of 49k/s)."""

    users: int
    notifications_per_day: int
    events_per_s_peak: float
    recommendations_per_s_peak: float
    events_mean_to_peak: float = 11 / 49  # spec 2.2: 11k/s normal, 49k/s peak
    recommendations_mean_to_peak: float = 1 / 3  # assumed: the spec gives only the peak (2,500/s)

    def __post_init__(self) -> None:
        if self.users <= 0 or self.notifications_per_day < 0 or self.events_per_s_peak < 0 \
                or self.recommendations_per_s_peak < 0:
            raise ConfigurationError("scale figures must be positive (users) or non-negative (rates)")

    @classmethod
    def for_users(cls, users: int) -> Scale:
        """The spec's ratios scaled to ``users`` (10M users: 50M notifications/day, 49k events/s,
        2,500 recommendations/s at peak)."""
        ratio = users / 10_000_000
        return cls(users=users, notifications_per_day=5 * users, events_per_s_peak=49_000 * ratio,
                   recommendations_per_s_peak=2_500 * ratio)


@dataclass(frozen=True, kw_only=True)
class Measured:
    """Per-operation costs measured by the project's benchmarks (2-core machine), with their sources."""

    recommend_compute_ms: float = 0.40  # handler in-process p50, Store lookups included (recommend.json)
    deliveries_per_core_s: float = 840.0  # delivery.json "spread": 1,679/s on 2 cores
    plan_users_per_core_s: float = 58_126.0  # schedule.json
    embed_texts_per_core_s: float = 158.0  # embeddings.json: 316 texts/s on 2 cores
    consume_events_per_core_s: float = 24_760.0  # stream.json kafka: 49,521 events/s on 2 cores
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Assumptions:
    """Operation counts and sizes the code implies; each one is a documented, overridable assumption."""

    store_writes_per_event: float = 1.0  # the consumer writes each order line / click once (<= 1 KB: 1 WRU)
    store_reads_per_recommendation: float = 2.0  # user vector + campaign overlay items, eventually consistent
    store_roundtrip_ms: float = 4.0  # DynamoDB GetItem/Query latency inside a region (Lambda duration)
    store_writes_per_notification: float = 3.0  # plan put, delivery state update, delivery log
    store_reads_per_notification: float = 1.0  # due-queue page share + user context
    recommend_memory_gb: float = 2.0  # the template's MemorySize for the recommendation function
    delivery_memory_gb: float = 1.0
    lambda_vcpu_per_gb: float = 1 / 1.769  # Lambda grants one vCPU per 1,769 MB
    delivery_invocations_per_minute: int = 1  # one EventBridge rule every minute (not one schedule per message)
    event_bytes: int = 600  # a JSON order line / click on the wire
    kafka_replication: int = 3
    kafka_retention_days: int = 7
    kafka_partition_events_per_s: float = 12_000.0  # stream.json: 49.5k/s over 4 partitions, one consumer each
    kafka_broker_mb_per_s: float = 30.0  # kafka.m5.large sustained write (ingress x replication) per broker
    item_bytes: int = 1_000  # average Store item, as the spec's 5.1
    items_per_user: float = 60.0  # profile, features, vector, plan, purchases, clicks kept under TTL
    daily_changed_fraction: float = 0.05  # users/products whose embedding text changes in a day
    lake_gb_per_million_users: float = 20.0  # Parquet lake + index versions + landing per 1M users
    s3_puts_per_day: float = 20_000.0  # lake partitions, index versions, landing and quarantine files
    recommend_cold_starts_per_day: float = 5_000.0  # each GETs the index files from S3
    nodes_always_on: int = 2  # Dagster webserver + daemon + code server, consumer pods share them
    cores_per_node: int = 4
    api_gateway_fronts_recommendations: bool = True  # False: callers invoke the Lambda directly


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    as_of: str


@dataclass(frozen=True)
class PriceTable:
    region: str
    table_date: str
    prices: Mapping[str, Price]

    def __getitem__(self, name: str) -> float:
        return self.prices[name].usd


def load_prices(path: Path = PRICES_PATH) -> PriceTable:
    """The dated price table; a missing price or field is a ConfigurationError, not a KeyError later."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        prices = {name: Price(float(p["usd"]), str(p["unit"]), str(p["source"]), str(p["as_of"]))
                  for name, p in raw["prices"].items()}
        return PriceTable(region=str(raw["region"]), table_date=str(raw["table_date"]), prices=prices)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"price table {path} unreadable: {exc}") from exc


def measured_from_results(results: Mapping[str, Mapping[str, Any]]) -> Measured:
    """:class:`Measured` from benchmark result documents keyed by file stem (``recommend``, ``delivery``,
    ``schedule``, ``embeddings``, ``stream``); a figure whose file is absent keeps its default."""
    values: dict[str, float] = {}
    sources: dict[str, str] = {}

    def cores(doc: Mapping[str, Any]) -> int:
        return int(doc.get("machine", {}).get("cpus", 2) or 2)

    if (doc := results.get("recommend")) and "handler_p50_ms" in doc:
        values["recommend_compute_ms"] = float(doc["handler_p50_ms"])
        sources["recommend_compute_ms"] = f"recommend.json handler_p50_ms ({doc.get('when', '?')})"
    if (doc := results.get("delivery")) and doc.get("runs", {}).get("spread"):
        rate = max(float(run["per_s"]) for run in doc["runs"]["spread"])
        values["deliveries_per_core_s"] = rate / cores(doc)
        sources["deliveries_per_core_s"] = f"delivery.json spread {rate:.0f}/s on {cores(doc)} cores"
    if doc := results.get("schedule"):
        # The planning run's row when it ran; else the end-to-end run's planner rate (one thread: per core).
        planner = (doc.get("results") or {}).get("limits_beside", {}).get("planner_users_per_s")
        if planner:
            values["plan_users_per_core_s"] = float(planner)
            sources["plan_users_per_core_s"] = "schedule.json planner users/s on one thread (end to end run)"
        for row in doc.get("rows", []):
            if str(row[0]).startswith("users per core-second"):
                values["plan_users_per_core_s"] = float(row[1])
                sources["plan_users_per_core_s"] = "schedule.json users per core-second"
    if (doc := results.get("embeddings")) and doc.get("texts_per_s"):
        rates = doc["texts_per_s"]  # {"batch_64": ..., "batch_256": ...}: the best batch size
        best = max(float(v) for v in rates.values()) if isinstance(rates, Mapping) else float(rates)
        values["embed_texts_per_core_s"] = best / cores(doc)
        sources["embed_texts_per_core_s"] = f"embeddings.json texts_per_s {best:.0f} on {cores(doc)} cores"
    if doc := results.get("stream"):
        kafka = [r for r in doc.get("stream", []) if r.get("backend") == "kafka"]
        if kafka:
            values["consume_events_per_core_s"] = float(kafka[0]["events_per_s"]) / cores(doc)
            sources["consume_events_per_core_s"] = f"stream.json kafka {kafka[0]['events_per_s']}/s"
    return Measured(**values, sources=sources)


@dataclass(frozen=True)
class Line:
    """One component: what it needs (capacity text) and its monthly cost."""

    component: str
    capacity: str
    monthly_usd: float
    budget_usd: float | None = None

    @property
    def within_budget(self) -> bool | None:
        return None if self.budget_usd is None else self.monthly_usd <= self.budget_usd


@dataclass(frozen=True)
class Estimate:
    scale: Scale
    lines: tuple[Line, ...]
    figures: Mapping[str, float]  # the derived capacities, by name (tests and the JSON output read these)
    notifications_per_month: float
    recommendations_per_month: float
    notification_usd: float  # monthly cost attributed to notifications
    recommendation_usd: float  # monthly cost attributed to recommendations

    @property
    def total_usd(self) -> float:
        return sum(line.monthly_usd for line in self.lines)

    @property
    def per_1k_notifications(self) -> float:
        return 1000 * self.notification_usd / self.notifications_per_month if self.notifications_per_month else 0.0

    @property
    def per_1k_recommendations(self) -> float:
        return 1000 * self.recommendation_usd / self.recommendations_per_month \
            if self.recommendations_per_month else 0.0


def lambda_billed_ms(compute_ms: float, roundtrips: float, roundtrip_ms: float) -> int:
    """Lambda bills each invocation by the millisecond, rounded up, at least 1 ms."""
    return max(1, math.ceil(compute_ms + roundtrips * roundtrip_ms))


def kafka_brokers(ingress_mb_s: float, *, replication: int, broker_mb_s: float) -> int:
    """Brokers for the replicated write load, in multiples of 3 (one per availability zone), at least 3."""
    needed = math.ceil(ingress_mb_s * replication * (1 + PROVISIONED_BUFFER) / broker_mb_s)
    return max(3, 3 * math.ceil(needed / 3))


def estimate(scale: Scale, *, measured: Measured, assumptions: Assumptions, prices: PriceTable) -> Estimate:
    """The capacity of every component and its monthly cost (see the module doc)."""
    a, m, p = assumptions, measured, prices
    month = SECONDS_PER_MONTH
    events_month = scale.events_per_s_peak * scale.events_mean_to_peak * month
    recs_month = scale.recommendations_per_s_peak * scale.recommendations_mean_to_peak * month
    notes_month = scale.notifications_per_day * 30.0
    notes_peak_s = scale.notifications_per_day / 86_400 * 4  # planner spreads; 4x the mean at the peak minute

    # DynamoDB: request units from counted operations; provisioned = peak x (1 + 30 %).
    wru_events, wru_notes = events_month * a.store_writes_per_event, notes_month * a.store_writes_per_notification
    rru_recs = recs_month * a.store_reads_per_recommendation * 0.5  # eventually consistent <= 4 KB: 0.5 RRU
    rru_notes = notes_month * a.store_reads_per_notification * 0.5
    peak_wcu = scale.events_per_s_peak * a.store_writes_per_event + notes_peak_s * a.store_writes_per_notification
    peak_rcu = (scale.recommendations_per_s_peak * a.store_reads_per_recommendation
                + notes_peak_s * a.store_reads_per_notification) * 0.5
    wcu, rcu = math.ceil(peak_wcu * (1 + PROVISIONED_BUFFER)), math.ceil(peak_rcu * (1 + PROVISIONED_BUFFER))
    storage_gb = scale.users * a.items_per_user * a.item_bytes / 1e9
    storage_usd = storage_gb * p["dynamodb_storage_gb_month"]
    ondemand_usd = (wru_events + wru_notes) * p["dynamodb_ondemand_write"] \
        + (rru_recs + rru_notes) * p["dynamodb_ondemand_read"] + storage_usd
    provisioned_usd = (wcu * p["dynamodb_wcu_hour"] + rcu * p["dynamodb_rcu_hour"]) * HOURS_PER_MONTH + storage_usd
    dynamo_usd = min(ondemand_usd, provisioned_usd)
    dynamo_mode = "on-demand" if ondemand_usd <= provisioned_usd else "provisioned"

    # Lambda: recommendations (measured compute + Store round trips) and delivery (measured rate per vCPU).
    rec_ms = lambda_billed_ms(m.recommend_compute_ms, a.store_reads_per_recommendation, a.store_roundtrip_ms)
    rec_gb_s = recs_month * rec_ms / 1000 * a.recommend_memory_gb
    rec_concurrency = math.ceil(scale.recommendations_per_s_peak * rec_ms / 1000)
    delivery_rate = m.deliveries_per_core_s * a.delivery_memory_gb * a.lambda_vcpu_per_gb  # per invocation
    delivery_gb_s = notes_month / delivery_rate * a.delivery_memory_gb if delivery_rate else 0.0
    delivery_invocations = a.delivery_invocations_per_minute * 60 * 24 * 30
    delivery_concurrency = max(1, math.ceil(notes_peak_s / delivery_rate)) if delivery_rate else 1
    rec_lambda_usd = rec_gb_s * p["lambda_gb_second"] + recs_month * p["lambda_request"]
    delivery_lambda_usd = delivery_gb_s * p["lambda_gb_second"] + delivery_invocations * p["lambda_request"]

    # Kafka (MSK): partitions from the measured per-partition consume rate, brokers from replicated ingress.
    partitions = math.ceil(scale.events_per_s_peak * (1 + PROVISIONED_BUFFER) / a.kafka_partition_events_per_s)
    ingress_mb_s = scale.events_per_s_peak * a.event_bytes / 1e6
    brokers = kafka_brokers(ingress_mb_s, replication=a.kafka_replication, broker_mb_s=a.kafka_broker_mb_per_s)
    kafka_storage_gb = events_month / 30 * a.kafka_retention_days * a.event_bytes * a.kafka_replication / 1e9
    kafka_usd = brokers * HOURS_PER_MONTH * p["msk_broker_hour"] + kafka_storage_gb * p["msk_storage_gb_month"]

    # Orchestration: Dagster on EKS (always-on nodes + daily run pods) with Postgres run storage.
    plan_core_s = scale.users / m.plan_users_per_core_s
    embed_core_s = scale.users * a.daily_changed_fraction / m.embed_texts_per_core_s
    consumer_cores = math.ceil(scale.events_per_s_peak / m.consume_events_per_core_s) if m.consume_events_per_core_s \
        else 0
    run_node_hours = (plan_core_s + embed_core_s) / 3600 / a.cores_per_node * 30
    consumer_nodes = math.ceil(consumer_cores / a.cores_per_node)
    nodes = a.nodes_always_on + consumer_nodes
    orchestration_usd = (p["eks_cluster_hour"] + p["rds_postgres_hour"] + nodes * p["ec2_node_hour"]) \
        * HOURS_PER_MONTH + run_node_hours * p["ec2_node_hour"]

    # EventBridge: one rule every minute (scheduled rules on the default bus: counted as invocations).
    eventbridge_usd = delivery_invocations * p["eventbridge_scheduler_invocation"]
    # S3: lake/index writes, index downloads on cold starts, storage.
    s3_gb = scale.users / 1e6 * a.lake_gb_per_million_users
    s3_usd = a.s3_puts_per_day * 30 * p["s3_put"] + a.recommend_cold_starts_per_day * 30 * 4 * p["s3_get"] \
        + s3_gb * p["s3_storage_gb_month"]
    sns_usd = notes_month * p["sns_publish"]
    api_usd = recs_month * p["api_gateway_http_request"] if a.api_gateway_fronts_recommendations else 0.0

    lines = (
        Line("Lambda", f"recommend: {rec_ms} ms x {a.recommend_memory_gb:g} GB, peak concurrency {rec_concurrency}, "
                       f"{rec_gb_s / 1e6:,.1f}M GB-s; deliver: {delivery_rate:,.0f}/s per invocation, "
                       f"concurrency {delivery_concurrency}, {delivery_gb_s / 1e6:,.2f}M GB-s",
             rec_lambda_usd + delivery_lambda_usd, BUDGETS_MONTHLY["Lambda"]),
        Line("DynamoDB", f"{dynamo_mode}: {(wru_events + wru_notes) / 1e9:,.1f}B WRU + "
                         f"{(rru_recs + rru_notes) / 1e9:,.2f}B RRU/month (on-demand ${ondemand_usd:,.0f}); "
                         f"provisioned {wcu:,} WCU + {rcu:,} RCU "
                         f"(peak +30 %: ${provisioned_usd:,.0f}); {storage_gb:,.0f} GB",
             dynamo_usd, BUDGETS_MONTHLY["DynamoDB"]),
        Line("Kafka", f"MSK {brokers} x kafka.m5.large, {partitions} partitions per topic, "
                      f"{ingress_mb_s:,.1f} MB/s peak ingress, {kafka_storage_gb:,.0f} GB retained",
             kafka_usd, BUDGETS_MONTHLY["Kafka"]),
        Line("Orchestration", f"Dagster on EKS: {nodes} x m5.xlarge ({consumer_nodes} for {consumer_cores} consumer "
                              f"cores) + {run_node_hours:,.1f} run node-hours; Postgres storage",
             orchestration_usd, BUDGETS_MONTHLY["Orchestration"]),
        Line("EventBridge", f"{delivery_invocations:,} rule invocations/month (one per minute)",
             eventbridge_usd, BUDGETS_MONTHLY["EventBridge"]),
        Line("S3", f"{s3_gb:,.0f} GB, {a.s3_puts_per_day * 30:,.0f} PUTs/month", s3_usd),
        Line("SNS", f"{notes_month / 1e9:,.2f}B publishes/month", sns_usd),
        Line("API Gateway", f"{recs_month / 1e9:,.2f}B HTTP API requests/month" if api_usd else "not used", api_usd),
    )
    dynamo_share_notes = dynamo_usd * _share(wru_notes * p["dynamodb_ondemand_write"] + rru_notes
                                             * p["dynamodb_ondemand_read"], ondemand_usd - storage_usd)
    dynamo_share_recs = dynamo_usd * _share(rru_recs * p["dynamodb_ondemand_read"], ondemand_usd - storage_usd)
    figures = {
        "events_per_month": events_month, "recommendations_per_month": recs_month,
        "notifications_per_month": notes_month, "wcu_provisioned": wcu, "rcu_provisioned": rcu,
        "peak_wcu": peak_wcu, "ondemand_usd": ondemand_usd, "provisioned_usd": provisioned_usd,
        "recommend_billed_ms": rec_ms, "recommend_concurrency": rec_concurrency, "recommend_gb_s": rec_gb_s,
        "delivery_gb_s": delivery_gb_s, "delivery_concurrency": delivery_concurrency,
        "kafka_partitions": partitions, "kafka_brokers": brokers, "nodes": nodes,
        "run_node_hours": run_node_hours, "eventbridge_invocations": delivery_invocations,
    }
    return Estimate(
        scale=scale, lines=lines, figures=figures, notifications_per_month=notes_month,
        recommendations_per_month=recs_month,
        notification_usd=delivery_lambda_usd + sns_usd + eventbridge_usd + dynamo_share_notes,
        recommendation_usd=rec_lambda_usd + api_usd + dynamo_share_recs,
    )


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0
