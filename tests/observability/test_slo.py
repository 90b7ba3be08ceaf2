"""The §8 SLO table and what is derived from it: Prometheus rules (promtool check + unit tests with input
series), CloudWatch alarms and 30-day log groups (cfn-lint), and the delivery log's TTL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from notify_cli import alarms
from notify_core import slo

PROMTOOL = alarms.promtool()
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: run `make setup` (scripts/setup.sh)")


def test_the_checked_in_rules_are_what_the_slo_table_renders() -> None:
    assert alarms.main(["--check"]) == 0, "run `python -m notify_cli.alarms`"


def test_every_spec_line_has_one_objective_with_the_spec_target() -> None:
    targets = {o.key: (o.op, o.threshold) for o in slo.OBJECTIVES}
    assert targets == {
        "pipeline_success": ("<", 0.999), "lambda_errors": (">", 0.001), "consumer_lag": (">", 10),
        "notification_failures": (">", 0.003), "schedule_generation": ("<", 0.9995),
        # §1.2 and §1.4: measured by the lateness and persist-latency histograms (bucket at the bound)
        "on_time_delivery": ("<", 0.995), "event_persistence": ("<", 0.999),
    }
    assert slo.LOG_RETENTION_DAYS == 30
    from notify_core.delivery.worker import LOG_TTL_S

    assert LOG_TTL_S == 30 * 86400  # the delivery log keeps rows as long as the logs are kept


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(alarms.RULES_PATH)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 17 rules found" in done.stdout  # 7 objectives (a record and an alert each), 2 backup, 1 delivery


def _alert(name: str, at: str, *, fires: bool, labels: dict[str, Any] | None = None) -> dict[str, Any]:
    case: dict[str, Any] = {"eval_time": at, "alertname": name, "exp_alerts": []}
    if fires:
        case["exp_alerts"] = [labels or {}]
    return case


def _fires(o: slo.Objective, now: str) -> dict[str, Any]:
    """The alert as promtool must see it: its labels, and the value it reports in the summary."""
    return {"exp_labels": {"severity": o.severity, "slo": o.key},
            "exp_annotations": {"summary": f"{o.spec}: now {now}",
                                "description": f"SLO {o.key} breached over {o.window} (spec {o.section}: {o.spec})."}}


def _unit_tests() -> dict[str, Any]:
    """Input series just inside and just outside each objective; each alert fires only for the bad one.

    Counters grow per minute (``a+bxN``); a rate ratio is then b_bad / b_total exactly.
    """
    o = {x.key: x for x in slo.OBJECTIVES}
    tests: list[dict[str, Any]] = []

    def case(series: list[tuple[str, str]], checks: list[dict[str, Any]], interval: str = "1m") -> None:
        tests.append({"interval": interval,
                      "input_series": [{"series": s, "values": v} for s, v in series],
                      "alert_rule_test": checks})

    # Pipeline: 1 dead letter per 10,000 (99.99 %) is fine, 2 per 1,000 (99.8 %) pages after 10 min.
    case([('notify_consumer_records_total{outcome="persisted"}', "0+9999x40"),
          ('notify_consumer_records_total{outcome="dead_lettered"}', "0+1x40")],
         [_alert("NotifyPipelineSuccessBelowSLO", "30m", fires=False)])
    case([('notify_consumer_records_total{outcome="persisted"}', "0+998x40"),
          ('notify_consumer_records_total{outcome="dead_lettered"}', "0+2x40")],
         [_alert("NotifyPipelineSuccessBelowSLO", "8m", fires=False),  # pending: "for" is 10 minutes
          _alert("NotifyPipelineSuccessBelowSLO", "30m", fires=True, labels=_fires(o["pipeline_success"], "99.8%"))])
    # Handler errors: 5xx over all statuses and routes; 0.05 % fine, 0.5 % pages.
    case([('notify_http_requests_total{route="/v1/events",method="POST",status="202"}', "0+1999x40"),
          ('notify_http_requests_total{route="/v1/events",method="POST",status="503"}', "0+1x40")],
         [_alert("NotifyHandlerErrorsAboveSLO", "30m", fires=False)])
    case([('notify_http_requests_total{route="/v1/events",method="POST",status="202"}', "0+150x40"),
          ('notify_http_requests_total{route="/t/{notification_id}",method="GET",status="302"}', "0+49x40"),
          ('notify_http_requests_total{route="/v1/events",method="POST",status="500"}', "0+1x40")],
         [_alert("NotifyHandlerErrorsAboveSLO", "30m", fires=True, labels=_fires(o["lambda_errors"], "0.5%"))])
    # Consumer lag: 8 s is fine; 25 s for longer than 5 minutes pages; a 2-minute spike does not.
    case([("notify_consumer_lag_seconds", "8x40")], [_alert("NotifyConsumerLagAboveSLO", "30m", fires=False)])
    case([("notify_consumer_lag_seconds", "0x10 25x2 0x10")],
         [_alert("NotifyConsumerLagAboveSLO", "12m", fires=False)])
    case([("notify_consumer_lag_seconds", "0x5 25x30")],
         [_alert("NotifyConsumerLagAboveSLO", "8m", fires=False),
          _alert("NotifyConsumerLagAboveSLO", "20m", fires=True, labels=_fires(o["consumer_lag"], "25s"))])
    # Deliveries: retries do not count as failures; 0.2 % dead-lettered fine, 1 % pages.
    case([('notify_deliveries_total{outcome="delivered",channel="outbox"}', "0+998x60"),
          ('notify_deliveries_total{outcome="retried",channel="outbox"}', "0+500x60"),
          ('notify_deliveries_total{outcome="dead_lettered",channel="outbox"}', "0+2x60")],
         [_alert("NotifyNotificationFailuresAboveSLO", "50m", fires=False)])
    case([('notify_deliveries_total{outcome="delivered",channel="outbox"}', "0+99x60"),
          ('notify_deliveries_total{outcome="dead_lettered",channel="webhook"}', "0+1x60")],
         [_alert("NotifyNotificationFailuresAboveSLO", "50m", fires=True,
                 labels=_fires(o["notification_failures"], "1%"))])
    # Plan generation, over a day: every run succeeding is fine; one failure in 100 runs opens a ticket.
    case([('notify_plan_generations_total{outcome="success"}', "0+4x30")],
         [_alert("NotifyScheduleGenerationBelowSLO", "1d", fires=False)], interval="1h")
    case([('notify_plan_generations_total{outcome="success"}', "0+99x30"),
          ('notify_plan_generations_total{outcome="failure"}', "0+1x30")],
         [_alert("NotifyScheduleGenerationBelowSLO", "1d", fires=True, labels=_fires(o["schedule_generation"], "99%"))],
         interval="1h")
    # On-time delivery (lateness <= 10 s, the histogram's le="10.0" bucket): 99.9 % fine, 98 % pages.
    case([('notify_delivery_lateness_seconds_bucket{le="10.0"}', "0+999x40"),
          ("notify_delivery_lateness_seconds_count", "0+1000x40")],
         [_alert("NotifyOnTimeDeliveryBelowSLO", "30m", fires=False)])
    case([('notify_delivery_lateness_seconds_bucket{le="10.0"}', "0+98x40"),
          ("notify_delivery_lateness_seconds_count", "0+100x40")],
         [_alert("NotifyOnTimeDeliveryBelowSLO", "8m", fires=False),
          _alert("NotifyOnTimeDeliveryBelowSLO", "30m", fires=True, labels=_fires(o["on_time_delivery"], "98%"))])
    # Event persistence (Store write <= 5 s after produce, le="5.0"): 99.99 % fine, 99.5 % pages.
    case([('notify_consumer_persist_latency_seconds_bucket{le="5.0"}', "0+9999x40"),
          ("notify_consumer_persist_latency_seconds_count", "0+10000x40")],
         [_alert("NotifyEventPersistenceBelowSLO", "30m", fires=False)])
    case([('notify_consumer_persist_latency_seconds_bucket{le="5.0"}', "0+995x40"),
          ("notify_consumer_persist_latency_seconds_count", "0+1000x40")],
         [_alert("NotifyEventPersistenceBelowSLO", "30m", fires=True,
                 labels=_fires(o["event_persistence"], "99.5%"))])
    # A backup replica behind (the gauge grows a minute a minute): paged once behind for more than a minute,
    # for 5 minutes; one that catches up within the minute does not page.
    case([('notify_backup_replica_behind_seconds{database="store"}', "0+60x20"),
          ('notify_backup_replica_behind_seconds{database="stream"}', "0 30 0 0 0 0 0 0 0 0 0 0 0 0 0")],
         [_alert("NotifyBackupReplicaBehind", "5m", fires=False),
          _alert("NotifyBackupReplicaBehind", "10m", fires=True, labels={
              "exp_labels": {"severity": "page", "database": "store"},
              "exp_annotations": {
                  "summary": "The store backup replica is 10m 0s behind",
                  "description": "notify backup runs but the database's changes do not reach its target (its disk "
                                 "full, S3 credentials or the bucket): see its error line and Litestream's log."}})])
    # File snapshots failing for more than a minute, for 5 minutes, page; a spell of 30 s does not.
    case([("notify_backup_files_behind_seconds", "0+60x20")],
         [_alert("NotifyBackupFilesBehind", "5m", fires=False),
          _alert("NotifyBackupFilesBehind", "10m", fires=True, labels={
              "exp_labels": {"severity": "page"},
              "exp_annotations": {
                  "summary": "The backup's file snapshots have failed for 10m 0s",
                  "description": "notify backup runs but cannot write the lake, landing and artefact snapshots "
                                 "to its target: see its error line."}})])
    case([("notify_backup_files_behind_seconds", "0 30 0 0 0 0 0 0 0 0 0 0")],
         [_alert("NotifyBackupFilesBehind", "10m", fires=False)])
    # Notifications found too late to send (a worker back after an outage): a ticket while any were missed in
    # the last 15 minutes; none missed, none raised.
    case([('notify_delivery_missed_total{channel="webhook"}', "0 0 0 120 120 120 120 120 120 120 120 120 120 120 "
                                                              "120 120 120 120 120 120 120 120 120 120 120")],
         [_alert("NotifyDeliveriesMissed", "2m", fires=False),
          _alert("NotifyDeliveriesMissed", "5m", fires=True, labels={
              "exp_labels": {"severity": "ticket"},
              "exp_annotations": {
                  "summary": "120 notifications were not sent: found after their time had passed",
                  "description": "A delivery worker found notifications more than NOTIFY_DELIVERY_MAX_LATE_S after "
                                 "their send time (no worker ran for that long, or the clock was stepped forward) and "
                                 "finished them as suppressed too_late: see the deliveries rows and the workers' "
                                 "history."}}),
          _alert("NotifyDeliveriesMissed", "24m", fires=False)])
    case([('notify_delivery_missed_total{channel="webhook"}', "0+0x30")],
         [_alert("NotifyDeliveriesMissed", "20m", fires=False)])
    return {"rule_files": [str(alarms.RULES_PATH)], "evaluation_interval": "1m", "tests": tests}


@needs_promtool
def test_promtool_unit_tests_of_every_alert(tmp_path: Path) -> None:
    spec = tmp_path / "notify-rules.test.yml"
    spec.write_text(yaml.safe_dump(_unit_tests(), sort_keys=False))
    done = subprocess.run([str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests above can fail: the same input with the opposite expectation is an error."""
    tests = _unit_tests()
    tests["tests"] = [tests["tests"][1]]
    tests["tests"][0]["alert_rule_test"] = [_alert("NotifyPipelineSuccessBelowSLO", "30m", fires=False)]
    spec = tmp_path / "wrong.test.yml"
    spec.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_cloudwatch_alarms_and_log_groups_pass_cfn_lint(tmp_path: Path) -> None:
    resources = slo.cloudwatch_resources(function_logical_ids=["CaptureEventsFunction"],
                                         alarm_topic={"Ref": "AlarmTopic"})
    alarms_ = {k: v for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert len(alarms_) == len(slo.OBJECTIVES) + 1  # and the missed-deliveries alarm
    for alarm in alarms_.values():
        returned = [m for m in alarm["Properties"]["Metrics"] if m["ReturnData"]]
        assert len(returned) == 1
    assert resources["CaptureEventsFunctionLogGroup"]["Properties"]["RetentionInDays"] == 30
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"KafkaClusterName": {"Type": "String"}, "ImageUri": {"Type": "String"}},
        "Resources": {
            "AlarmTopic": {"Type": "AWS::SNS::Topic"},
            "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "lambda.amazonaws.com"}}]}}},
            "CaptureEventsFunction": {"Type": "AWS::Lambda::Function", "Properties": {
                "PackageType": "Image", "Code": {"ImageUri": {"Ref": "ImageUri"}},
                "Role": {"Fn::GetAtt": ["Role", "Arn"]}}},
            **resources,
        },
    }
    path = tmp_path / "alarms.json"
    path.write_text(json.dumps(template))
    lint = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(path)], capture_output=True,
                          text=True, timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr
