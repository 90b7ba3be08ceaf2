"""The README's claims about the code's shape, read from the source (every import and call, lazy ones in
function bodies included):

* Layout: ``notify_core`` "imports neither Dagster nor Lambda code (boto3/kafka only inside adapters)";
  "Arrows point one way: lambdas, notify_assets, notify_sensors, notify_resources, notify_cli ->
  notify_core, never the reverse"; ``lambdas/`` has "no Dagster imports".
* Time: ``notify_core/clock.py`` "is the only place in the domain that reads the wall clock".
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTER = ("lambdas", "notify_assets", "notify_sensors", "notify_resources", "notify_cli")


def _modules(package: str) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), filename=str(path))


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level package imported -> the files importing it (absolute imports only; relative ones stay inside)."""
    found: dict[str, set[str]] = {}
    for name, tree in _modules(package):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                found.setdefault(target.split(".")[0], set()).add(name)
    return found


def test_notify_core_imports_no_outer_layer_and_no_dagster() -> None:
    imported = _imports("notify_core")
    for forbidden in (*OUTER, "dagster", "dagster_k8s", "dagster_postgres", "aws_lambda_powertools"):
        assert forbidden not in imported, (forbidden, sorted(imported[forbidden]))


def test_kafka_and_boto3_only_inside_adapters() -> None:
    imported = _imports("notify_core")
    assert imported.get("confluent_kafka") == {"notify_core/stream/kafka.py"}
    assert "kafka" not in imported  # kafka-python is not used at all
    adapters = {"notify_core/delivery/sns.py", "notify_core/s3_objects.py", "notify_core/security/crypto.py",
                "notify_core/store/dynamodb.py", "notify_core/cloudwatch_metrics.py"}  # SNS S3 KMS DynamoDB CloudWatch
    assert imported.get("boto3", set()) | imported.get("botocore", set()) <= adapters


def test_the_lambdas_import_no_dagster_and_no_other_outer_layer() -> None:
    imported = _imports("lambdas")
    for forbidden in ("dagster", "notify_assets", "notify_sensors", "notify_resources", "notify_cli"):
        assert forbidden not in imported, (forbidden, sorted(imported[forbidden]))


WALL_CLOCK = {"datetime.now", "datetime.utcnow", "datetime.today", "date.today", "time.time", "time.time_ns",
              "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.date.today"}


def test_only_the_clock_module_reads_the_wall_clock() -> None:
    """Every call of a wall-clock reader in notify_core, and every ``from time import time`` that would
    hide one, is in clock.py. (A plain grep also finds a receiver's example in webhook_verify.py's
    docstring: prose, not a call.)"""
    readers: list[str] = []
    for name, tree in _modules("notify_core"):
        if name == "notify_core/clock.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in WALL_CLOCK:
                readers.append(f"{name}:{node.lineno} {ast.unparse(node.func)}")
            if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
                hidden = {a.name for a in node.names} & {"time", "time_ns"} if node.module == "time" else set()
                readers += [f"{name}:{node.lineno} from time import {h}" for h in sorted(hidden)]
    assert readers == []
    clock = (ROOT / "notify_core" / "clock.py").read_text()
    assert "time.time()" in clock  # the one reader is where the README says it is
