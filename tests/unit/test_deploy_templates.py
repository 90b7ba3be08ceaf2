"""The deployable templates under deploy/: rendered from the code, committed up to date, lint-clean, and
covering every table, route and handler."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from lambdas.gateway import ROUTES
from notify_cli import deploy_templates
from notify_cli.main import app
from notify_core.store import tables


def test_committed_templates_are_what_the_code_renders() -> None:
    result = CliRunner().invoke(app, ["templates", "--check"])
    assert result.exit_code == 0, result.output


def test_every_table_constant_is_deployed() -> None:
    """ALL_TABLES is what the templates create: a new table constant must be listed there."""
    constants = {value for name, value in vars(tables).items()
                 if name.isupper() and isinstance(value, str) and not name.endswith("_SK")}
    assert constants == set(tables.ALL_TABLES)
    resources = deploy_templates.cloudformation()["Resources"]
    deployed = {r["Properties"]["TableName"]["Fn::Sub"].removeprefix("${TablePrefix}")
                for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"}
    assert deployed == set(tables.ALL_TABLES)
    assert all(r["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
               for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table")


def test_every_gateway_route_is_an_api_route_to_an_importable_handler() -> None:
    resources = deploy_templates.cloudformation()["Resources"]
    routes = {r["Properties"]["RouteKey"] for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Route"}
    assert routes == {f"{r.method} {r.path}" for r in ROUTES}
    commands = [r["Properties"]["ImageConfig"]["Command"][0] for r in resources.values()
                if r["Type"] == "AWS::Lambda::Function"]
    assert "lambdas.deliver_notifications.handler" in commands
    for command in commands:
        module, _, function = command.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function)), command


def test_cloudformation_passes_cfn_lint() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")  # the dev extra installs it in the venv
    lint = subprocess.run([str(cfn_lint), str(deploy_templates.CFN_PATH)], capture_output=True, text=True,
                          timeout=300)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_kubernetes_files_name_the_code_location_and_the_consumer() -> None:
    values = yaml.safe_load(deploy_templates.HELM_PATH.read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    module = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("--module-name") + 1]
    assert hasattr(importlib.import_module(module), "defs")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    consumer = yaml.safe_load(deploy_templates.CONSUMER_PATH.read_text())
    assert consumer["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["notify", "consume"]
