"""The capacity and cost model's arithmetic (notify_core/capacity.py) and `notify capacity`."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from notify_cli.capacity_commands import RESULTS, _results
from notify_cli.main import app
from notify_core.capacity import (
    HOURS_PER_MONTH,
    SECONDS_PER_MONTH,
    Assumptions,
    Measured,
    Price,
    PriceTable,
    Scale,
    estimate,
    kafka_brokers,
    lambda_billed_ms,
    load_prices,
    measured_from_results,
)
from notify_core.errors import ConfigurationError

UNIT_PRICES = {name: 1.0 for name in load_prices().prices}  # every price $1: costs become unit counts


def _unit_prices(**overrides: float) -> PriceTable:
    prices = {**UNIT_PRICES, **overrides}
    return PriceTable("test", "today", {k: Price(v, "unit", "test", "today") for k, v in prices.items()})


def test_the_price_table_is_dated_and_sourced() -> None:
    table = load_prices()
    assert table.table_date and table.region
    for name, price in table.prices.items():
        assert price.usd > 0 and price.source.startswith("https://aws.amazon.com/") and price.as_of, name


def test_spec_scale_for_10m_users() -> None:
    scale = Scale.for_users(10_000_000)
    assert scale.notifications_per_day == 50_000_000
    assert scale.events_per_s_peak == 49_000 and scale.recommendations_per_s_peak == 2_500


def test_provisioned_dynamodb_is_peak_plus_the_spec_30_percent() -> None:
    """The spec's 5.1: 50k writes/s of 1 KB -> 65,000 WCU provisioned."""
    scale = Scale(users=1, notifications_per_day=0, events_per_s_peak=50_000, recommendations_per_s_peak=0)
    result = estimate(scale, measured=Measured(), assumptions=Assumptions(), prices=load_prices())
    assert result.figures["wcu_provisioned"] == 65_000


def test_ondemand_dynamodb_counts_request_units() -> None:
    scale = Scale(users=1, notifications_per_day=1_000, events_per_s_peak=0, recommendations_per_s_peak=0)
    a = Assumptions(store_writes_per_notification=3, store_reads_per_notification=1, items_per_user=0)
    prices = _unit_prices(dynamodb_ondemand_write=1.0, dynamodb_ondemand_read=1.0)
    result = estimate(scale, measured=Measured(), assumptions=a, prices=prices)
    # 30,000 notifications a month x (3 writes + 1 read at 0.5 RRU)
    assert result.figures["ondemand_usd"] == pytest.approx(30_000 * 3 + 30_000 * 0.5)


def test_lambda_billing_rounds_up_to_the_millisecond() -> None:
    assert lambda_billed_ms(0.4, 2, 4.0) == 9
    assert lambda_billed_ms(0.0, 0, 4.0) == 1
    assert lambda_billed_ms(1.0, 0, 4.0) == 1


def test_recommendation_lambda_concurrency_and_gb_seconds() -> None:
    scale = Scale(users=1, notifications_per_day=0, events_per_s_peak=0, recommendations_per_s_peak=2_500,
                  recommendations_mean_to_peak=1.0)
    m = Measured(recommend_compute_ms=0.4)
    a = Assumptions(store_reads_per_recommendation=2, store_roundtrip_ms=4.0, recommend_memory_gb=2.0)
    result = estimate(scale, measured=m, assumptions=a, prices=load_prices())
    assert result.figures["recommend_billed_ms"] == 9
    assert result.figures["recommend_concurrency"] == math.ceil(2_500 * 0.009)
    assert result.figures["recommend_gb_s"] == pytest.approx(2_500 * SECONDS_PER_MONTH * 0.009 * 2.0)


def test_kafka_brokers_come_in_threes_and_partitions_follow_the_measured_rate() -> None:
    assert kafka_brokers(1.0, replication=3, broker_mb_s=30) == 3
    assert kafka_brokers(30.0, replication=3, broker_mb_s=30) == 6  # 30 x 3 x 1.3 / 30 = 3.9 -> 4 -> 6
    scale = Scale(users=1, notifications_per_day=0, events_per_s_peak=24_000, recommendations_per_s_peak=0)
    result = estimate(scale, measured=Measured(), assumptions=Assumptions(kafka_partition_events_per_s=12_000),
                      prices=load_prices())
    assert result.figures["kafka_partitions"] == math.ceil(24_000 * 1.3 / 12_000)


def test_one_eventbridge_rule_per_minute_whatever_the_volume() -> None:
    small = estimate(Scale.for_users(1_000), measured=Measured(), assumptions=Assumptions(), prices=load_prices())
    large = estimate(Scale.for_users(10_000_000), measured=Measured(), assumptions=Assumptions(),
                     prices=load_prices())
    assert small.figures["eventbridge_invocations"] == large.figures["eventbridge_invocations"] == 60 * 24 * 30


def test_unit_costs_divide_attributed_cost_by_volume() -> None:
    result = estimate(Scale.for_users(10_000_000), measured=Measured(), assumptions=Assumptions(),
                      prices=load_prices())
    assert result.per_1k_notifications == pytest.approx(1000 * result.notification_usd / (50_000_000 * 30))
    assert result.total_usd == pytest.approx(sum(line.monthly_usd for line in result.lines))
    assert result.figures["nodes"] >= Assumptions().nodes_always_on
    assert HOURS_PER_MONTH == 730


def test_measured_costs_are_read_from_the_benchmark_results() -> None:
    measured = measured_from_results(_results(RESULTS))
    recommend = json.loads((RESULTS / "recommend.json").read_text())
    assert measured.recommend_compute_ms == recommend["handler_p50_ms"]
    assert set(measured.sources) >= {"recommend_compute_ms", "deliveries_per_core_s", "plan_users_per_core_s"}
    assert measured_from_results({}) == Measured()  # no results: the documented defaults


def test_bad_scale_and_bad_price_table_are_configuration_errors(tmp_path) -> None:
    with pytest.raises(ConfigurationError):
        Scale(users=0, notifications_per_day=1, events_per_s_peak=1, recommendations_per_s_peak=1)
    bad = tmp_path / "prices.json"
    bad.write_text('{"region": "x", "table_date": "y", "prices": {"lambda_request": {"usd": 1}}}')
    with pytest.raises(ConfigurationError):
        load_prices(bad)


def test_cli_prints_every_component_and_the_unit_budgets() -> None:
    result = CliRunner().invoke(app, ["capacity", "--users", "10000000"])
    assert result.exit_code == 0, result.output
    for word in ("Lambda", "DynamoDB", "Kafka", "Orchestration", "EventBridge", "per 1k notifications",
                 "per 1k recommendations", "total"):
        assert word in result.output


def test_the_readme_table_is_what_notify_capacity_prints_from_the_committed_results() -> None:
    """README, "the cost at the spec's scale": each row's $/month and budget, the total and the unit costs are
    `notify capacity --users 10000000` on bench/results as committed. A new benchmark result or price
    table that moves a figure fails here until the README is updated with it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("| component | $/month | budget | verdict |")
    rows = {}
    for line in readme[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    result = estimate(Scale.for_users(10_000_000), measured=measured_from_results(_results(RESULTS)),
                      assumptions=Assumptions(), prices=load_prices())
    lines = {line.component: line for line in result.lines}
    names = {"Lambda": "Lambda", "DynamoDB (on-demand)": "DynamoDB", "Kafka (MSK, 6 brokers)": "Kafka",
             "Dagster on EKS + Postgres": "Orchestration", "EventBridge (one rule a minute)": "EventBridge"}
    for row, component in names.items():
        cost, budget, verdict = rows[row]
        line = lines[component]
        assert cost == f"{line.monthly_usd:,.0f}", (row, cost, line.monthly_usd)
        assert budget.split(" ")[0] == f"{line.budget_usd:,.0f}", (row, budget, line.budget_usd)
        assert verdict.split(":")[0] == ("met" if line.within_budget else "over"), (row, verdict)
    assert "6 x kafka" in lines["Kafka"].capacity
    total = rows["total (with API Gateway 2,160, SNS 750, S3 8)"]
    assert total[0] == f"{result.total_usd:,.0f}"
    assert [f"{lines[c].monthly_usd:,.0f}" for c in ("API Gateway", "SNS", "S3")] == ["2,160", "750", "8"]
    unit = rows["per 1k notifications / per 1k recommendations"][0]
    assert unit == f"${result.per_1k_notifications:.4f} / ${result.per_1k_recommendations:.4f}"
