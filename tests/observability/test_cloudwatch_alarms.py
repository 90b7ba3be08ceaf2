"""The CloudWatch SLO alarms read what Notify's functions really publish (session-40 audit, docs/audit-findings.md).

An alarm on a metric nobody publishes, or on one that counts other workloads, is silent or wrong: these tests
feed an alarm the EMF lines the handler edge writes on Lambda and evaluate its metric math the way CloudWatch
does (a metric matches a record that publishes it with exactly the alarm's dimensions).
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from lambdas import http
from lambdas.http import api_handler
from notify_core import cloudwatch_metrics
from notify_core.observability import Invocations
from notify_core.slo import cloudwatch_resources
from tests.events.helpers import api_event


@pytest.fixture(autouse=True)
def _fresh_cloudwatch_clients() -> Iterator[None]:
    """The per-process CloudWatch publishers hold clients made under moto: none outlives a test."""
    cloudwatch_metrics._CLOUDWATCH.clear()
    yield
    cloudwatch_metrics._CLOUDWATCH.clear()


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(expression: str, values: Mapping[str, float]) -> float:
    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "MAX"
                and len(node.args) == 1 and isinstance(node.args[0], ast.List)):
            return max(walk(item) for item in node.args[0].elts)
        raise AssertionError(f"unsupported metric math: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def _alarm_value(alarm: Mapping[str, Any], records: list[dict[str, Any]]) -> float | None:
    """The alarm's value over ``records`` (EMF), or None when one of its metrics has no data point."""
    values: dict[str, float] = {}
    for query in alarm["Properties"]["Metrics"]:
        if "MetricStat" not in query:
            continue
        metric = query["MetricStat"]["Metric"]
        wanted = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        points = [record[metric["MetricName"]] for record in records
                  for directive in record["_aws"]["CloudWatchMetrics"]
                  if directive["Namespace"] == metric["Namespace"]
                  and metric["MetricName"] in {m["Name"] for m in directive["Metrics"]}
                  for dimension_set in directive["Dimensions"]
                  if sorted(dimension_set) == sorted(wanted) and all(record.get(k) == v for k, v in wanted.items())]
        if not points:
            return None
        values[query["Id"]] = float(sum(points))
    [value] = [q for q in alarm["Properties"]["Metrics"] if q.get("ReturnData")]
    return _evaluate(value["Expression"], values)


def test_a_handler_answering_500_on_lambda_breaches_the_handler_error_alarm() -> None:
    """A handler's exception is answered as a 500 (Lambda counts the invocation a success): the alarm read
    ``AWS/Lambda`` ``Errors``, so it never saw one, and without a FunctionName it counted the whole account."""
    lines: list[str] = []
    holder = http._invocations
    previous = holder._value
    holder.use(Invocations(emit=lines.append))

    def broken(event: Any, context: Any) -> Any:
        raise RuntimeError("the Store is gone")

    def fine(event: Any, context: Any) -> Any:
        return {"statusCode": 200, "body": "{}"}

    try:
        assert api_handler(broken)(api_event({}), None)["statusCode"] == 500
        for _ in range(3):
            assert api_handler(fine)(api_event({}), None)["statusCode"] == 200
    finally:
        holder.use(previous)
    records = [json.loads(line) for line in lines]
    alarm = cloudwatch_resources()["SloLambdaErrorsAlarm"]
    value = _alarm_value(alarm, records)
    assert value is not None, "the alarm reads a metric the handlers never publish"
    assert value == 0.25 and alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
    assert value > alarm["Properties"]["Threshold"]


def test_no_alarm_reads_an_account_wide_lambda_metric() -> None:
    """``AWS/Lambda`` metrics without a ``FunctionName`` dimension are every function of the account."""
    from notify_cli.deploy_templates import cloudformation

    alarms = {k: r for k, r in cloudformation()["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(cloudwatch_resources()) < set(alarms)
    for logical, alarm in alarms.items():
        for query in alarm["Properties"].get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == "AWS/Lambda":
                names = {d["Name"] for d in metric.get("Dimensions", [])}
                assert "FunctionName" in names, f"{logical} reads {metric['MetricName']} of the whole account"


def _lambda_service_points(function: str, **values: float) -> dict[str, Any]:
    """What the Lambda service records for one function over a period, in the shape ``_alarm_value`` reads."""
    return {"_aws": {"CloudWatchMetrics": [{"Namespace": "AWS/Lambda", "Dimensions": [["FunctionName"]],
                                            "Metrics": [{"Name": name} for name in values]}]},
            "FunctionName": function, **values}


def test_a_function_that_crashes_or_times_out_breaches_its_own_error_alarm() -> None:
    """An invocation that never answered (a timeout, out of memory, a failed cold start, an exception outside
    the handler edge) writes no EMF line, so the objective's alarm never saw it; Lambda's own ``Errors`` of
    that function does. Every function of the stack has such an alarm, on its own name only."""
    from notify_cli.deploy_templates import cloudformation

    resources = cloudformation()["Resources"]
    functions = {logical for logical, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    alarms = {logical: r for logical, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"
              and any(q.get("MetricStat", {}).get("Metric", {}).get("Namespace") == "AWS/Lambda"
                      for q in r["Properties"]["Metrics"])}
    watched = {q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]: logical for logical, alarm in alarms.items()
               for q in alarm["Properties"]["Metrics"] if q.get("Id") == "errors"}
    assert len(functions) == 12 and set(watched) == functions
    alarm = alarms[watched["DeliverNotificationsFunction"]]
    # the Lambda service's metrics carry the function's physical name; the template's Ref resolves to it
    props = json.loads(json.dumps(alarm).replace('{"Ref": "DeliverNotificationsFunction"}', '"stack-deliver"'))
    timed_out = [_lambda_service_points("stack-deliver", Errors=3, Invocations=300),
                 _lambda_service_points("someone-elses-function", Errors=500, Invocations=500)]
    value = _alarm_value(props, timed_out)
    assert value == 0.01 and value > props["Properties"]["Threshold"] == 0.001
    assert _alarm_value(props, [_lambda_service_points("stack-deliver", Errors=0, Invocations=300)]) == 0.0
    assert props["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_cloudwatch_may_use_the_data_key_only_for_this_stacks_alarms_and_every_alarm_is_one() -> None:
    """The key policy lets CloudWatch encrypt for the alarm topic only on behalf of this account's alarms named
    after the stack (the confused deputy); an alarm named otherwise would deploy and never notify anyone."""
    import fnmatch

    from notify_cli.deploy_templates import cloudformation

    resources = cloudformation()["Resources"]
    [statement] = [s for s in resources["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
                   if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    pattern = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert len(alarms) >= 7 + 12
    prefix = "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
    for alarm in alarms:
        arn = prefix + alarm["AlarmName"]["Fn::Sub"]
        assert fnmatch.fnmatchcase(arn, pattern), arn
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert not fnmatch.fnmatchcase(prefix + "other-stack-x", pattern)


def _sent(client: Any, queries: list[dict[str, Any]]) -> dict[str, float]:
    """The sum of what was sent (to moto) for each of an alarm's metric queries, over the last hour."""
    from datetime import UTC, datetime, timedelta

    out: dict[str, float] = {}
    for q in queries:
        metric, now = q["MetricStat"]["Metric"], datetime.now(UTC)
        points = client.get_metric_statistics(
            Namespace=metric["Namespace"], MetricName=metric["MetricName"], Dimensions=metric["Dimensions"],
            StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=3600,
            Statistics=["Sum"])["Datapoints"]
        out[q["Id"]] = sum(p["Sum"] for p in points)
    return out


def _aws_settings() -> Any:
    from notify_core.settings import NotifySettings

    return NotifySettings(env="aws", aws_region="eu-west-1", s3_bucket="b", sns_topic_arn="arn:aws:sns:eu-west-1:1:t")


def test_the_consumer_pod_in_aws_sends_what_the_pipeline_success_alarm_reads() -> None:
    """The consumer runs in a pod, not a Lambda: its counters never became EMF lines in a Lambda log, so the
    pipeline-success alarm read a metric nothing published. In aws ``notify consume`` now sends them
    (PutMetricData, every 60 s and at exit: ``notify_core.cloudwatch_metrics.cloudwatch_counters``), and its pod
    role may do that in the alarm's namespace only."""
    from moto import mock_aws

    from notify_cli import deploy_templates
    from notify_core.events.consumer import RECORDS

    alarm = cloudwatch_resources()["SloPipelineSuccessAlarm"]["Properties"]
    queries = [q for q in alarm["Metrics"] if "MetricStat" in q]
    with mock_aws():
        counters = cloudwatch_metrics.cloudwatch_counters(_aws_settings())
        assert counters is not None
        client = counters._client

        def sums() -> dict[str, float]:
            return _sent(client, queries)

        cloudwatch_metrics.publish_counters(counters)  # whatever this process counted before
        before = sums()
        RECORDS.labels("persisted").inc(997)
        RECORDS.labels("dead_lettered").inc(3)
        cloudwatch_metrics.publish_counters(counters)
        after = sums()
    [value] = [q for q in alarm["Metrics"] if q.get("ReturnData")]
    ratio = _evaluate(value["Expression"], {k: after[k] - before[k] for k in after})
    assert ratio == 0.997 and alarm["ComparisonOperator"] == "LessThanThreshold" and ratio < alarm["Threshold"]
    role = deploy_templates.cloudformation()["Resources"]["ConsumerPodRole"]
    statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    namespaces = {q["MetricStat"]["Metric"]["Namespace"] for q in queries}
    assert [s["Condition"] for s in statements if s["Action"] == "cloudwatch:PutMetricData"] == [
        {"StringEquals": {"cloudwatch:namespace": namespace}} for namespace in namespaces]


def test_the_consumer_lag_alarm_reads_msk_lag_per_topic_of_the_consumers_group() -> None:
    """MSK publishes EstimatedMaxTimeLag with the dimensions Cluster Name, Consumer Group and Topic; a query
    with only the first two (as the alarm had) matches no metric, so the alarm never had a data point. It reads
    each topic ``notify consume`` reads, for the group it uses, and alarms on the worst."""
    import inspect

    from notify_cli import deploy_templates, stream_commands
    from notify_core.events.models import TOPICS

    alarm = cloudwatch_resources()["SloConsumerLagAlarm"]["Properties"]
    queries = [q for q in alarm["Metrics"] if "MetricStat" in q]
    group = inspect.signature(stream_commands.consume).parameters["group"].default
    [container] = deploy_templates.consumer_manifest()["spec"]["template"]["spec"]["containers"]
    assert "--group" not in container["command"]  # the pods use that default group
    read: dict[str, str] = {}
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert (metric["Namespace"], metric["MetricName"]) == ("AWS/Kafka", "EstimatedMaxTimeLag")
        assert set(dims) == {"Cluster Name", "Consumer Group", "Topic"}, dims
        assert dims["Consumer Group"] == group
        read[dims["Topic"]] = query["Id"]
    assert set(read) == set(TOPICS)
    [value] = [q for q in alarm["Metrics"] if q.get("ReturnData")]
    lags = {read["purchase_history"]: 3.0, read["notify_clickstream"]: 25.0}  # one topic behind
    assert _evaluate(value["Expression"], lags) == 25.0 > alarm["Threshold"]


def test_a_dagster_plan_run_in_aws_sends_its_outcome_to_the_schedule_generation_alarm(monkeypatch: Any) -> None:
    """The daily plan runs in a Dagster run pod, no Lambda: its plan generations reached no CloudWatch metric,
    so the schedule-generation alarm saw only the generate_schedule function's. The plan asset's body now
    sends what the run counted, a failed run included; the Dagster pods' role may do that."""
    import logging
    from types import SimpleNamespace

    from moto import mock_aws

    from notify_assets import scheduling
    from notify_cli import deploy_templates
    from notify_core.clock import ManualClock
    from notify_core.metrics import counted_plan_generation

    @counted_plan_generation
    def unreadable_lake(*args: Any, **kwargs: Any) -> Any:  # stands in for plan_from_lake, counted the same way
        raise RuntimeError("the lake is unreadable")

    monkeypatch.setattr(scheduling, "plan_from_lake", unreadable_lake)
    monkeypatch.setattr(scheduling, "build_artefact_store", lambda settings: None)
    settings = _aws_settings()
    notify = SimpleNamespace(settings=settings, store=None, lake=None, clock=lambda: ManualClock())
    context = SimpleNamespace(partition_key="2026-12-05", has_partition_key=True, log=logging.getLogger(__name__),
                              run=SimpleNamespace(tags={}))
    alarm = cloudwatch_resources()["SloScheduleGenerationAlarm"]["Properties"]
    queries = [q for q in alarm["Metrics"] if "MetricStat" in q]
    with mock_aws():
        counters = cloudwatch_metrics.cloudwatch_counters(settings)
        assert counters is not None
        cloudwatch_metrics.publish_counters(counters)  # whatever this process counted before
        before = _sent(counters._client, queries)
        with pytest.raises(RuntimeError, match="unreadable"):
            scheduling._plan(context, scheduling.PlanConfig(), notify)  # type: ignore[arg-type]
        after = _sent(counters._client, queries)
    sent = {k: after[k] - before[k] for k in after}
    assert sorted(sent.values()) == [0.0, 1.0]  # one failure, no success
    [value] = [q for q in alarm["Metrics"] if q.get("ReturnData")]
    assert _evaluate(value["Expression"], sent) == 0.0 < alarm["Threshold"]
    statements = deploy_templates.cloudformation()["Resources"]["DagsterPodRole"]["Properties"]["Policies"][0][
        "PolicyDocument"]["Statement"]
    assert [s["Condition"] for s in statements if s["Action"] == "cloudwatch:PutMetricData"] == [
        {"StringEquals": {"cloudwatch:namespace": q["MetricStat"]["Metric"]["Namespace"]}} for q in queries[:1]]


def test_late_deliveries_on_lambda_breach_the_on_time_delivery_alarm() -> None:
    """§1.2 (99.5 % within 10 s) was measured by the lateness histogram, which no Lambda sent anywhere: the
    delivery function's flush now carries its bucket at 10 s and its count as EMF, which the alarm reads."""
    from notify_core.delivery.outcomes import LATENESS

    lines: list[str] = []
    invocations = Invocations(emit=lines.append)
    invocations.flush_counters()  # the baseline: whatever this process counted before
    lines.clear()
    for _ in range(980):
        LATENESS.observe(0.4)
    for _ in range(20):
        LATENESS.observe(12.0)  # over the bound
    invocations.flush_counters()  # what deliver_notifications calls (lambdas.http.flush_metrics)
    alarm = cloudwatch_resources()["SloOnTimeDeliveryAlarm"]
    value = _alarm_value(alarm, [json.loads(line) for line in lines])
    assert value == 0.98 and alarm["Properties"]["ComparisonOperator"] == "LessThanThreshold"
    assert value < alarm["Properties"]["Threshold"]


def test_slow_persistence_in_the_consumer_pod_breaches_the_event_persistence_alarm() -> None:
    """§1.4 (99.9 % within 5 s): the consumer pod sends its persist-latency bucket at 5 s and its count."""
    from moto import mock_aws

    from notify_core.events.consumer import PERSIST_LATENCY

    alarm = cloudwatch_resources()["SloEventPersistenceAlarm"]["Properties"]
    queries = [q for q in alarm["Metrics"] if "MetricStat" in q]
    with mock_aws():
        counters = cloudwatch_metrics.cloudwatch_counters(_aws_settings())
        assert counters is not None
        cloudwatch_metrics.publish_counters(counters)
        before = _sent(counters._client, queries)
        PERSIST_LATENCY.observe_counts([(0.3, 995), (7.5, 5)])
        cloudwatch_metrics.publish_counters(counters)
        after = _sent(counters._client, queries)
    [value] = [q for q in alarm["Metrics"] if q.get("ReturnData")]
    ratio = _evaluate(value["Expression"], {k: after[k] - before[k] for k in after})
    assert ratio == 0.995 and ratio < alarm["Threshold"]


def test_notifications_found_too_late_on_lambda_breach_the_missed_deliveries_alarm(tmp_path: Any) -> None:
    """The minute Lambda back after EventBridge stopped calling it for hours finishes what is more than
    ``max_late_s`` late as ``too_late``: Prometheus had an alert on that count, but no Lambda sent it to
    CloudWatch and no alarm read it, so on AWS nobody heard of the notifications never sent."""
    from datetime import UTC, datetime

    from lambdas import deliver_notifications
    from notify_core.clock import ManualClock
    from notify_core.delivery import DeliveryWorker, WorkerOptions
    from notify_core.delivery.synthetic import seed_due
    from notify_core.slo import MISSED_ALERT, MISSED_WINDOW_S, prometheus_rules
    from notify_core.store.sqlite import SqliteStore
    from tests.delivery.conftest import ScriptedChannel

    clock = ManualClock(datetime(2026, 11, 24, 10, 5, tzinfo=UTC))
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    options = WorkerOptions(concurrency=2, lookback_minutes=15, prefetch_s=0.0, max_late_s=3600)

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    lines: list[str] = []
    holder = http._invocations
    previous = holder._value
    holder.use(Invocations(emit=lines.append))  # one execution environment: its counters since its last flush

    def invocation() -> list[dict[str, Any]]:
        """One minute's invocation of the deliver_notifications Lambda; the EMF records it wrote."""
        lines.clear()
        worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=options)
        deliver_notifications.use_worker(worker)
        try:
            deliver_notifications.handler({"detail-type": "Scheduled Event", "linger_s": 0}, Context())
        finally:
            deliver_notifications.use_worker(None)
            worker.close()
        return [json.loads(line) for line in lines]

    alarm = cloudwatch_resources()["DeliveriesMissedAlarm"]
    try:
        invocation()  # the Lambda runs (and sends what this process counted before)...
        clock.advance(120)
        invocation()  # ... and the watermark is written as its minutes close
        start = clock.now()
        seed_due(store, n=30, start=datetime.fromtimestamp(start, UTC), spread_s=30 * 60)
        clock.advance(30 * 60 + 3600 - 15 * 60)  # EventBridge called nothing for 75 minutes
        now = clock.now()
        records = invocation()
        rows = list(store.table("schedules").scan())
        clock.advance(60)
        quiet = invocation()  # the next minute: nothing more missed
    finally:
        holder.use(previous)
        store.close()
    missed = {str(i["notification_id"]) for i in rows if i.get("suppressed_reason") == "too_late"}
    older = {str(i["notification_id"]) for i in rows
             if now - datetime.fromisoformat(str(i["send_at"])).timestamp() > options.max_late_s}
    assert missed == older and 10 <= len(missed) <= 20, len(missed)  # those more than an hour late
    assert sum(1 for i in rows if i["status"] == "sent") == 30 - len(missed)
    value = _alarm_value(alarm, records)
    assert value == len(missed) and value > alarm["Properties"]["Threshold"]
    assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
    assert _alarm_value(alarm, quiet) is None and alarm["Properties"]["TreatMissingData"] == "notBreaching"
    [query] = [q for q in alarm["Properties"]["Metrics"] if "MetricStat" in q]
    rules = {r.get("alert"): r for group in prometheus_rules()["groups"] for r in group["rules"]}
    assert query["MetricStat"]["Period"] == MISSED_WINDOW_S  # the same window as the Prometheus alert's
    assert f"[{MISSED_WINDOW_S // 60}m]" in rules[MISSED_ALERT]["expr"]
    assert alarm["Properties"]["AlarmName"] == {"Fn::Sub": "${AWS::StackName}-" + MISSED_ALERT}


def test_a_process_that_is_no_lambda_sends_its_counters_while_it_runs_and_as_it_ends() -> None:
    """``publishing`` (``notify consume``, ``notify worker``, the Dagster runs that plan or deliver): in aws
    what the block counted reaches CloudWatch every ``every_s`` and once more as it ends, an exception
    included; a missed delivery reaches the missed-deliveries alarm's metric."""
    import time

    from moto import mock_aws

    from notify_core.delivery.outcomes import MISSED
    from notify_core.settings import NotifySettings

    alarm = cloudwatch_resources()["DeliveriesMissedAlarm"]["Properties"]
    queries = [q for q in alarm["Metrics"] if "MetricStat" in q]
    with mock_aws():
        counters = cloudwatch_metrics.cloudwatch_counters(_aws_settings())
        assert counters is not None
        cloudwatch_metrics.publish_counters(counters)  # whatever this process counted before
        before = _sent(counters._client, queries)
        with cloudwatch_metrics.publishing(_aws_settings(), every_s=0.05):
            MISSED.labels("webhook").inc(2)
            MISSED.labels("sns").inc(1)
            deadline = time.monotonic() + 10
            while _sent(counters._client, queries)["missed"] - before["missed"] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            during = _sent(counters._client, queries)
        with pytest.raises(RuntimeError), cloudwatch_metrics.publishing(_aws_settings(), every_s=3600):
            MISSED.labels("webhook").inc(4)
            raise RuntimeError("the run failed")
        after = _sent(counters._client, queries)
    assert during["missed"] - before["missed"] == 3  # summed over the channels: the alarm's one metric
    assert after["missed"] - during["missed"] == 4
    local = NotifySettings(env="local")
    with cloudwatch_metrics.publishing(local):  # not aws: nothing to send to, nothing started
        assert cloudwatch_metrics.cloudwatch_counters(local) is None
