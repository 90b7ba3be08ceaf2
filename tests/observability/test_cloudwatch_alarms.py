"""The CloudWatch SLO alarms read what Notify's functions really publish (session-40 audit, docs/audit-findings.md).

An alarm on a metric nobody publishes, or on one that counts other workloads, is silent or wrong: these tests
feed an alarm the EMF lines the handler edge writes on Lambda and evaluate its metric math the way CloudWatch
does (a metric matches a record that publishes it with exactly the alarm's dimensions).
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Mapping
from typing import Any

from lambdas import http
from lambdas.http import api_handler
from notify_core.observability import Invocations
from notify_core.slo import cloudwatch_resources
from tests.events.helpers import api_event

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(expression: str, values: Mapping[str, float]) -> float:
    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
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
    for logical, alarm in cloudwatch_resources().items():
        for query in alarm["Properties"].get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == "AWS/Lambda":
                names = {d["Name"] for d in metric.get("Dimensions", [])}
                assert "FunctionName" in names, f"{logical} reads {metric['MetricName']} of the whole account"
