"""The spec's §8 service levels as ONE table, and the alerts derived from it for both platforms.

Each :class:`Objective` names the spec's target once; :func:`prometheus_rules` (checked in as
``deploy/prometheus/notify-rules.yml``, tested with ``promtool test rules``) and :func:`cloudwatch_resources`
(alarms for the CloudFormation template) are both computed from :data:`OBJECTIVES`, so a changed target
changes every alert. The metrics they read are those of :mod:`notify_core.metrics` (and the consumer's and
delivery worker's own counters); on AWS, the Lambda service's own metrics, the EMF metrics the handlers
write (namespace :data:`EMF_NAMESPACE`) and MSK's consumer-lag metric.

What each §8 line means here:

* *Pipeline success >= 99.9 %*: of the events the stream consumer handled, the share persisted to the
  Store (the rest went to a dead-letter topic).
* *Lambda errors <= 0.1 %*: 5xx answers of the handlers (gateway: per-route counter; AWS: the handlers' own
  EMF ``Errors`` / ``Invocations``, summed over Notify's functions. Not ``AWS/Lambda``'s: without a
  ``FunctionName`` those are every function of the account and region, and a handler's exception is
  answered as a 500, which Lambda counts as a success).
* *Consumer lag <= 10 s*: ``notify_consumer_lag_seconds`` (AWS: MSK ``EstimatedMaxTimeLag`` of the consumer
  group, the worst of its topics).
* *Notification failures <= 0.3 %*: dead-lettered deliveries among finished ones (delivered + dead-lettered).
* *Schedule generation success 99.95 %*: plan generation runs that completed.
* *Logs kept 30 days*: :data:`LOG_RETENTION_DAYS`, the retention of the Lambda log groups and the TTL of the
  delivery log rows.

Two SLAs of the spec's §1 are measured by histograms with a bucket at their bound (on AWS that bucket and
the count reach CloudWatch with the counters: :data:`notify_core.metrics.EMF_HISTOGRAM_BOUNDS`):

* *On-time delivery 99.5 % within 10 seconds* (§1.2): delivered notifications whose lateness (delivered
  minus scheduled time) is <= 10 s, ``notify_delivery_lateness_seconds``.
* *Event persistence 99.9 % within 5 seconds* (§1.4): consumed events in the Store <= 5 s after they were
  produced, ``notify_consumer_persist_latency_seconds``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from notify_core.events.consumer import DEFAULT_GROUP
from notify_core.events.models import TOPICS
from notify_core.observability import LOG_RETENTION_DAYS

EMF_NAMESPACE = "Notify"
MISSED_ALERT = "NotifyDeliveriesMissed"  # notifications found too late to send (Prometheus and CloudWatch)
MISSED_WINDOW_S = 900  # ... in this window


@dataclass(frozen=True, slots=True, kw_only=True)
class Objective:
    """One service level: a PromQL value compared with ``threshold``, breached when ``value <op> threshold``.

    ``expr`` may use ``{window}`` for the rate window. ``cloudwatch`` is the same objective as CloudWatch
    metric queries (``Metrics`` of an ``AWS::CloudWatch::Alarm``) whose ``ReturnData`` one is the value.
    """

    key: str
    alert: str
    spec: str  # the spec's words, shown in the alert's description
    expr: str
    op: Literal["<", ">"]
    threshold: float
    window: str = "5m"
    for_: str = "10m"
    severity: str = "page"
    unit: Literal["ratio", "seconds"] = "ratio"
    cloudwatch: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    cloudwatch_period_s: int = 300
    section: str = "§8"  # where the spec states it

    def promql(self) -> str:
        return f"({self.expr.format(window=self.window)}) {self.op} {self.threshold:g}"


def _metric(id_: str, namespace: str, name: str, dimensions: Mapping[str, Any], *, stat: str = "Sum",
            period: int = 300) -> dict[str, Any]:
    return {"Id": id_, "ReturnData": False, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": name,
                   "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()]},
        "Period": period, "Stat": stat}}


def _math(expression: str, label: str) -> dict[str, Any]:
    return {"Id": "value", "Expression": expression, "Label": label, "ReturnData": True}


OBJECTIVES: tuple[Objective, ...] = (
    Objective(
        key="pipeline_success", alert="NotifyPipelineSuccessBelowSLO", spec="Pipeline success rate >= 99.9 %",
        expr='sum(rate(notify_consumer_records_total{{outcome="persisted"}}[{window}]))'
             ' / sum(rate(notify_consumer_records_total{{outcome=~"persisted|dead_lettered"}}[{window}]))',
        op="<", threshold=0.999,
        cloudwatch=(
            _metric("ok", EMF_NAMESPACE, "notify_consumer_records_total", {"outcome": "persisted"}),
            _metric("bad", EMF_NAMESPACE, "notify_consumer_records_total", {"outcome": "dead_lettered"}),
            _math("ok / (ok + bad)", "pipeline success ratio"),
        ),
    ),
    Objective(
        key="lambda_errors", alert="NotifyHandlerErrorsAboveSLO", spec="Lambda error rate <= 0.1 %",
        expr='sum(rate(notify_http_requests_total{{status=~"5.."}}[{window}]))'
             ' / sum(rate(notify_http_requests_total[{window}]))',
        op=">", threshold=0.001,
        cloudwatch=(
            _metric("errors", EMF_NAMESPACE, "Errors", {}),
            _metric("invocations", EMF_NAMESPACE, "Invocations", {}),
            _math("errors / invocations", "handler 5xx ratio (Notify's API functions)"),
        ),
    ),
    Objective(
        key="consumer_lag", alert="NotifyConsumerLagAboveSLO", spec="Kafka consumer lag <= 10 seconds",
        expr="max(notify_consumer_lag_seconds)", op=">", threshold=10, for_="5m", unit="seconds",
        # MSK publishes its consumer-lag metrics per topic (dimensions Cluster Name, Consumer Group, Topic):
        # a query without Topic matches no metric. The worst of the consumer's topics.
        cloudwatch=(
            *(_metric(f"lag_{topic}", "AWS/Kafka", "EstimatedMaxTimeLag",
                      {"Cluster Name": {"Ref": "KafkaClusterName"}, "Consumer Group": DEFAULT_GROUP, "Topic": topic},
                      stat="Maximum", period=60) for topic in TOPICS),
            _math(f"MAX([{', '.join(f'lag_{topic}' for topic in TOPICS)}])", "consumer lag (seconds)"),
        ),
        cloudwatch_period_s=60,
    ),
    Objective(
        key="notification_failures", alert="NotifyNotificationFailuresAboveSLO",
        spec="Notification failure rate <= 0.3 %",
        expr='sum(rate(notify_deliveries_total{{outcome="dead_lettered"}}[{window}]))'
             ' / sum(rate(notify_deliveries_total{{outcome=~"delivered|dead_lettered"}}[{window}]))',
        op=">", threshold=0.003, window="15m",
        cloudwatch=(
            _metric("bad", EMF_NAMESPACE, "notify_deliveries_total", {"outcome": "dead_lettered"}),
            _metric("ok", EMF_NAMESPACE, "notify_deliveries_total", {"outcome": "delivered"}),
            _math("bad / (ok + bad)", "notification failure ratio"),
        ),
    ),
    Objective(
        key="schedule_generation", alert="NotifyScheduleGenerationBelowSLO",
        spec="Schedule generation success >= 99.95 %",
        expr='sum(increase(notify_plan_generations_total{{outcome="success"}}[{window}]))'
             ' / sum(increase(notify_plan_generations_total[{window}]))',
        op="<", threshold=0.9995, window="1d", for_="0m", severity="ticket",
        cloudwatch=(
            _metric("ok", EMF_NAMESPACE, "notify_plan_generations_total", {"outcome": "success"}, period=86400),
            _metric("bad", EMF_NAMESPACE, "notify_plan_generations_total", {"outcome": "failure"}, period=86400),
            _math("ok / (ok + bad)", "schedule generation success ratio"),
        ),
        cloudwatch_period_s=86400,
    ),
    Objective(
        key="on_time_delivery", alert="NotifyOnTimeDeliveryBelowSLO", spec="On-time delivery 99.5 % within 10 seconds",
        expr='sum(rate(notify_delivery_lateness_seconds_bucket{{le="10.0"}}[{window}]))'
             ' / sum(rate(notify_delivery_lateness_seconds_count[{window}]))',
        op="<", threshold=0.995, window="15m", section="§1.2",
        cloudwatch=(
            _metric("on_time", EMF_NAMESPACE, "notify_delivery_lateness_seconds_bucket", {"le": "10.0"}),
            _metric("delivered", EMF_NAMESPACE, "notify_delivery_lateness_seconds_count", {}),
            _math("on_time / delivered", "on-time delivery ratio (within 10 s)"),
        ),
    ),
    Objective(
        key="event_persistence", alert="NotifyEventPersistenceBelowSLO",
        spec="Event persistence 99.9 % within 5 seconds",
        expr='sum(rate(notify_consumer_persist_latency_seconds_bucket{{le="5.0"}}[{window}]))'
             ' / sum(rate(notify_consumer_persist_latency_seconds_count[{window}]))',
        op="<", threshold=0.999, section="§1.4",
        cloudwatch=(
            _metric("in_time", EMF_NAMESPACE, "notify_consumer_persist_latency_seconds_bucket", {"le": "5.0"}),
            _metric("persisted", EMF_NAMESPACE, "notify_consumer_persist_latency_seconds_count", {}),
            _math("in_time / persisted", "event persistence ratio (within 5 s)"),
        ),
    ),
)


def objective(key: str) -> Objective:
    return next(o for o in OBJECTIVES if o.key == key)


def prometheus_rules(objectives: Sequence[Objective] = OBJECTIVES) -> dict[str, Any]:
    """A Prometheus rule file (as data): one alert per objective, plus a recording rule of its value."""
    rules: list[dict[str, Any]] = []
    for o in objectives:
        record = f"notify:slo_{o.key}:{'ratio' if o.unit == 'ratio' else 'seconds'}"
        rules.append({"record": record, "expr": o.expr.format(window=o.window)})
        value = "{{ $value | humanizePercentage }}" if o.unit == "ratio" else "{{ $value | humanizeDuration }}"
        rules.append({
            "alert": o.alert,
            "expr": f"{record} {o.op} {o.threshold:g}",
            "for": o.for_,
            "labels": {"severity": o.severity, "slo": o.key},
            "annotations": {"summary": f"{o.spec}: now {value}",
                            "description": f"SLO {o.key} breached over {o.window} (spec {o.section}: {o.spec})."},
        })
    return {"groups": [{"name": "notify-slo", "rules": rules},
                       {"name": "notify-operations", "rules": operational_alerts()}]}


def operational_alerts() -> list[dict[str, Any]]:
    """Alerts on the machinery rather than an objective: a backup whose replica stopped receiving changes, or
    whose file snapshots fail, while `notify backup` runs (:mod:`notify_core.backup.replica_lag`: it logs an
    error at the same bound); notifications a worker found too late to send (an outage or a clock step:
    :mod:`notify_core.delivery.claims`, Catching up), which no lateness objective sees, as they are not sent."""
    from notify_core.backup.replica_lag import BEHIND_ALERT_S  # imported here: handlers import this module

    return [{
        "alert": "NotifyBackupReplicaBehind",
        "expr": f"max by (database) (notify_backup_replica_behind_seconds) > {BEHIND_ALERT_S:g}",
        "for": "5m",
        "labels": {"severity": "page"},
        "annotations": {
            "summary": "The {{ $labels.database }} backup replica is {{ $value | humanizeDuration }} behind",
            "description": "notify backup runs but the database's changes do not reach its target (its disk full, "
                           "S3 credentials or the bucket): see its error line and Litestream's log.",
        },
    }, {
        "alert": "NotifyBackupFilesBehind",
        "expr": f"max(notify_backup_files_behind_seconds) > {BEHIND_ALERT_S:g}",
        "for": "5m",
        "labels": {"severity": "page"},
        "annotations": {
            "summary": "The backup's file snapshots have failed for {{ $value | humanizeDuration }}",
            "description": "notify backup runs but cannot write the lake, landing and artefact snapshots to its "
                           "target: see its error line.",
        },
    }, {
        "alert": MISSED_ALERT,
        "expr": f"sum(increase(notify_delivery_missed_total[{MISSED_WINDOW_S // 60}m])) > 0",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "{{ $value | humanize }} notifications were not sent: found after their time had passed",
            "description": "A delivery worker found notifications more than NOTIFY_DELIVERY_MAX_LATE_S after their "
                           "send time (no worker ran for that long, or the clock was stepped forward) and finished "
                           "them as suppressed too_late: see the deliveries rows and the workers' history.",
        },
    }]


def _logical(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _alarm(o: Objective, *, alarm_topic: Any, name: Any = None,
           metrics: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One ``AWS::CloudWatch::Alarm`` of objective ``o`` (its own metrics unless ``metrics`` are given)."""
    periods = 1 if o.cloudwatch_period_s >= 3600 else 2
    return _cloudwatch_alarm(
        name=name if name is not None else {"Fn::Sub": f"${{AWS::StackName}}-{o.alert}"},
        description=f"Notify SLO {o.key}: {o.spec}", op=o.op, threshold=o.threshold, periods=periods,
        metrics=o.cloudwatch if metrics is None else metrics, alarm_topic=alarm_topic)


def missed_deliveries_alarm(*, alarm_topic: Any = None) -> dict[str, Any]:
    """:data:`MISSED_ALERT` on CloudWatch: any notification a delivery worker finished as ``too_late`` in
    :data:`MISSED_WINDOW_S` (the ``deliver_notifications`` Lambda sends the count as EMF; a worker or a
    Dagster run in a pod, with PutMetricData), like the Prometheus rule of :func:`operational_alerts`. No
    data is no miss: the metric is sent only when something was missed."""
    return _cloudwatch_alarm(
        name={"Fn::Sub": f"${{AWS::StackName}}-{MISSED_ALERT}"},
        description="Notify: notifications not sent, found more than NOTIFY_DELIVERY_MAX_LATE_S after their send "
                    "time (no worker ran for that long, or the clock was stepped forward)",
        op=">", threshold=0, periods=1, alarm_topic=alarm_topic, metrics=(
            _metric("missed", EMF_NAMESPACE, "notify_delivery_missed_total", {}, period=MISSED_WINDOW_S),
            _math("missed", "notifications found too late to send"),
        ))


def _cloudwatch_alarm(*, name: Any, description: str, op: str, threshold: float, periods: int,
                      metrics: Sequence[Mapping[str, Any]], alarm_topic: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "AlarmName": name,
        "AlarmDescription": description,
        "ComparisonOperator": "LessThanThreshold" if op == "<" else "GreaterThanThreshold",
        "Threshold": threshold,
        "EvaluationPeriods": periods,
        "DatapointsToAlarm": periods,
        "TreatMissingData": "notBreaching",
        "Metrics": [dict(m) for m in metrics],
    }
    if alarm_topic is not None:
        props["AlarmActions"] = [alarm_topic]
        props["OKActions"] = [alarm_topic]
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": props}


def function_error_alarm(logical: str, *, alarm_topic: Any = None) -> dict[str, Any]:
    """The error objective on one function's ``AWS/Lambda`` metrics: invocations that ended in an error
    (what the handler edge never answered, so its EMF ``Errors`` cannot count it) over all its invocations.

    A handler's own exception is answered as a 500, which Lambda counts as a success, and the objective's
    alarm sees it; a crash, a timeout or a failed cold start leaves no EMF line and only Lambda's metric
    has it. One alarm per function: an alarm's metric math reads at most 10 metrics, and the stack has 12
    functions."""
    o = objective("lambda_errors")
    function = {"FunctionName": {"Ref": logical}}
    return _alarm(o, alarm_topic=alarm_topic, name={"Fn::Sub": f"${{AWS::StackName}}-{o.alert}-{logical}"}, metrics=(
        _metric("errors", "AWS/Lambda", "Errors", function),
        _metric("invocations", "AWS/Lambda", "Invocations", function),
        _math("errors / invocations", f"{logical}: invocations that ended in an error"),
    ))


def cloudwatch_resources(
    *, function_logical_ids: Sequence[str] = (), alarm_topic: Any = None,
    objectives: Sequence[Objective] = OBJECTIVES, lambda_functions: Sequence[str] = (),
) -> dict[str, Any]:
    """CloudFormation resources: an alarm per objective, a 30-day log group per Lambda function, and an
    error alarm per function of ``lambda_functions``.

    ``function_logical_ids``: the template's ``AWS::Lambda::Function`` resources (their log groups are
    declared here so the retention is the template's, not Lambda's default of forever). ``alarm_topic``:
    what the alarms notify (e.g. ``{"Ref": "AlarmTopic"}``); None: alarms without actions. The consumer-lag
    alarm reads MSK's metric and needs a ``KafkaClusterName`` parameter in the template.
    ``lambda_functions``: functions whose invocations that never answered (an exception outside the handler
    edge, a timeout, running out of memory, a failed cold start: what ``AWS/Lambda`` ``Errors`` counts) are
    held to the same error objective, each on its own ``FunctionName`` (:func:`function_error_alarm`).
    """
    resources: dict[str, Any] = {"DeliveriesMissedAlarm": missed_deliveries_alarm(alarm_topic=alarm_topic)}
    for o in objectives:
        resources[f"Slo{_logical(o.key)}Alarm"] = _alarm(o, alarm_topic=alarm_topic)
    for logical in lambda_functions:
        resources[f"SloLambdaErrors{logical}Alarm"] = function_error_alarm(logical, alarm_topic=alarm_topic)
    for logical in function_logical_ids:
        resources[f"{logical}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
            "Properties": {"LogGroupName": {"Fn::Sub": f"/aws/lambda/${{{logical}}}"},
                           "RetentionInDays": LOG_RETENTION_DAYS},
        }
    return resources
