"""The API edge in the rendered CloudFormation: routes from the OpenAPI document, the key authorizer in
front of every scoped route, the pepper from a secret, least privilege for the key check, SLO alarms."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas import routes as route_table
from lambdas.openapi import openapi_document
from notify_cli import deploy_templates
from notify_core import slo
from notify_core.store import tables


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return deploy_templates.cloudformation()


def _of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def test_the_api_routes_are_the_openapi_documents(template: dict[str, Any]) -> None:
    documented = {f"{m.upper()} {p}" for p, item in openapi_document()["paths"].items() for m in item}
    rendered = {r["Properties"]["RouteKey"] for r in _of_type(template, "AWS::ApiGatewayV2::Route").values()}
    assert rendered == documented == {r.key for r in route_table.ROUTES}


def test_a_route_missing_from_the_document_fails_the_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = route_table.GatewayRoute("DELETE", "/v1/campaigns/{campaign_id}", "lambdas.upsert_campaign:handler",
                                     scope="campaigns:write")
    monkeypatch.setattr(route_table, "ROUTES", [*route_table.ROUTES, extra])
    with pytest.raises(RuntimeError, match="DELETE /v1/campaigns"):
        deploy_templates.cloudformation()


def test_every_scoped_route_goes_through_the_key_authorizer(template: dict[str, Any]) -> None:
    scopes = {r.key: r.scope for r in route_table.ROUTES}
    for route in _of_type(template, "AWS::ApiGatewayV2::Route").values():
        props = route["Properties"]
        if scopes[props["RouteKey"]]:
            assert props["AuthorizationType"] == "CUSTOM" and props["AuthorizerId"] == {"Ref": "ApiKeyAuthorizer"}
        else:  # the signed tracking links are public
            assert props["AuthorizationType"] == "NONE" and "AuthorizerId" not in props
    [authorizer] = _of_type(template, "AWS::ApiGatewayV2::Authorizer").values()
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "REQUEST" and props["EnableSimpleResponses"] is True
    assert props["AuthorizerPayloadFormatVersion"] == "2.0"
    assert "${AuthorizerFunction.Arn}" in props["AuthorizerUri"]["Fn::Sub"]
    # cached only when asked for, and then keyed by the key *and* the route (scopes differ per route)
    assert props["IdentitySource"]["Fn::If"][1] == ["$request.header.x-api-key", "$context.routeKey"]
    function = template["Resources"]["AuthorizerFunction"]["Properties"]
    assert function["ImageConfig"]["Command"] == ["lambdas.authorizer.handler"]
    stage = template["Resources"]["HttpApiStage"]["Properties"]["DefaultRouteSettings"]
    assert stage["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRate"}  # API Gateway throttling in front


def test_the_key_check_is_read_only_on_the_key_tables_alone(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    table_of = {logical: r["Properties"]["TableName"]["Fn::Sub"].removeprefix("${TablePrefix}")
                for logical, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"}
    for function in ("AuthorizerFunction", "CaptureEventsFunction"):
        role = resources[resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        dynamo = [s for s in statements if str(s["Action"]).count("dynamodb:")]
        # the bare adapter: no key documents, and KMS only through DynamoDB (tests/unit/test_deploy_templates.py)
        assert sorted(table_of[a["Fn::GetAtt"][0]] for s in dynamo for a in s["Resource"]) == [tables.API_KEYS]
        kms = [s for s in statements if "kms:Decrypt" in s["Action"]]
        via = [{"Fn::Sub": f"{service}.${{AWS::Region}}.amazonaws.com"} for service in ("dynamodb", "secretsmanager")]
        # DynamoDB, and Secrets Manager for the pepper secret
        assert [s["Condition"] for s in kms] == [{"StringEquals": {"kms:ViaService": via}}], function
        assert not any(a.startswith(("dynamodb:Put", "dynamodb:Update", "dynamodb:Delete", "dynamodb:BatchWrite"))
                       for s in dynamo for a in s["Action"]), function


def test_the_pepper_comes_from_a_secret_to_every_function_that_checks_keys(template: dict[str, Any]) -> None:
    """Each function that checks keys is told the secret, and may read that secret alone; no function's
    environment holds the pepper. (It held a ``{{resolve:secretsmanager:...}}`` dynamic reference, which
    CloudFormation resolves into the environment: the pepper in clear for whoever may read the function's
    configuration, ``lambda:GetFunctionConfiguration``.)"""
    resources = template["Resources"]
    secret = resources["ApiKeyPepper"]["Properties"]
    assert secret["KmsKeyId"] == {"Ref": "DataKey"} and secret["GenerateSecretString"]["PasswordLength"] >= 32
    functions = _of_type(template, "AWS::Lambda::Function")
    assert "resolve:secretsmanager" not in str(functions)
    assert not any("NOTIFY_API_KEY_PEPPER" in f["Properties"]["Environment"]["Variables"] for f in functions.values())
    checking = {k for k, f in functions.items()
                if "NOTIFY_API_KEY_PEPPER_SECRET" in f["Properties"]["Environment"]["Variables"]}
    handlers = {f"{deploy_templates._function_name(r.handler)}Function" for r in route_table.ROUTES}
    assert checking == handlers | {"AuthorizerFunction"}  # not the scheduled delivery run
    for name, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        reads = [s["Resource"] for s in statements if "secretsmanager:GetSecretValue" in str(s["Action"])]
        if name in checking:
            assert variables["NOTIFY_API_KEY_PEPPER_SECRET"] == {"Ref": "ApiKeyPepper"}
            assert reads == [{"Ref": "ApiKeyPepper"}], name
        else:
            assert reads == [], name


def test_a_function_reads_its_pepper_from_the_secret_it_is_told(tmp_path: Any) -> None:
    """What the template's functions do at a cold start: the key check's pepper is the secret's string
    (moto's Secrets Manager), and a key made with that pepper is accepted."""
    import boto3
    from moto import mock_aws

    from lambdas import runtime
    from notify_core.clock import ManualClock
    from notify_core.security.keys import KeyRing
    from notify_core.settings import NotifySettings
    from notify_core.store.sqlite import SqliteStore

    pepper = "q" * 64
    store = SqliteStore(tmp_path / "store.sqlite")
    clock = ManualClock(1_800_000_000)
    try:
        _, token = KeyRing(store, pepper=pepper.encode(), clock=clock).create(
            name="app", scopes=["events:write"], actor="test", source="pytest")
        with mock_aws():
            arn = boto3.client("secretsmanager", region_name="eu-west-1").create_secret(
                Name="notify-pepper", SecretString=pepper)["ARN"]
            settings = NotifySettings(env="aws", aws_region="eu-west-1", s3_bucket="b",
                                      sns_topic_arn="arn:aws:sns:eu-west-1:1:t", api_key_pepper_secret=arn)
            check = runtime.build_key_check(settings, store, clock=clock)
        assert check.authorize(token, "events:write").name == "app"
    finally:
        store.close()


def test_the_slo_alarms_and_log_retention_are_in_the_template(template: dict[str, Any]) -> None:
    alarms = _of_type(template, "AWS::CloudWatch::Alarm")
    functions = _of_type(template, "AWS::Lambda::Function")
    # one per objective with CloudWatch metrics (the rest alert in Prometheus only), the error objective
    # once more per function on its own AWS/Lambda metrics, and the missed deliveries
    assert len(alarms) == len([o for o in slo.OBJECTIVES if o.cloudwatch]) + len(functions) + 1
    assert alarms["DeliveriesMissedAlarm"]["Properties"]["AlarmName"] == {
        "Fn::Sub": "${AWS::StackName}-" + slo.MISSED_ALERT}
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())
    topic = template["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "DataKey"}
    key_policy = template["Resources"]["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in key_policy)
    assert "KafkaClusterName" in template["Parameters"]
    for name, function in _of_type(template, "AWS::Lambda::Function").items():
        group = template["Resources"][function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
        assert group["Properties"]["RetentionInDays"] == slo.LOG_RETENTION_DAYS == 30, name
