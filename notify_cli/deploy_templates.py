"""``notify templates``: the deployable templates, rendered from the code they deploy.

Beyond one machine Notify runs as

* ``deploy/aws/notify.cfn.yaml`` (CloudFormation): the Store's DynamoDB tables (on-demand, TTL on
  ``ttl``), the artefact/lake bucket, the SNS topic of the ``sns`` channel, one container-image Lambda
  per gateway route behind an API Gateway HTTP API (payload 2.0, the events the handlers parse), and
  ``deliver_notifications`` on an EventBridge rule every minute;
* ``deploy/k8s/dagster-values.yaml`` (values for the ``dagster/dagster`` Helm chart): the code location
  (``notify_assets.definitions``) with runs launched as Kubernetes jobs (dagster-k8s), and
  ``deploy/k8s/consumer.yaml``: the ``notify consume`` Deployment reading Kafka.

They are rendered, not hand-written: the tables come from :data:`notify_core.store.tables.ALL_TABLES`,
the HTTP routes from :data:`lambdas.gateway.ROUTES`, the settings from ``NotifySettings``, so adding a
table or a route cannot leave a template behind. ``notify templates --check`` (run by the tests) fails
when the committed files differ from what the code renders; ``cfn-lint`` checks the CloudFormation.
One image (``deploy/Dockerfile``) serves all of them: Lambda runs it with a handler as its command,
Kubernetes with ``notify consume`` or Dagster's code server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

ROOT = Path(__file__).resolve().parent.parent
CFN_PATH = ROOT / "deploy" / "aws" / "notify.cfn.yaml"
HELM_PATH = ROOT / "deploy" / "k8s" / "dagster-values.yaml"
CONSUMER_PATH = ROOT / "deploy" / "k8s" / "consumer.yaml"
SCHEDULED: tuple[tuple[str, str, str], ...] = (  # (name, handler, schedule)
    ("deliver_notifications", "lambdas.deliver_notifications.handler", "rate(1 minute)"),
)
HEADER = "# Rendered by `notify templates` from the code (tables, routes, settings): do not edit by hand.\n"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _function_name(handler: str) -> str:
    """``lambdas.track:click`` -> ``TrackClick``; ``lambdas.capture_events:handler`` -> ``CaptureEvents``."""
    module, _, function = handler.replace(":", ".").rpartition(".")
    base = _camel(module.rsplit(".", 1)[-1])
    return base if function == "handler" else base + _camel(function)


def _aws_environment() -> dict[str, Any]:
    return {
        "NOTIFY_ENV": "aws",
        "NOTIFY_AWS_REGION": {"Ref": "AWS::Region"},
        "NOTIFY_TABLE_PREFIX": {"Ref": "TablePrefix"},
        "NOTIFY_S3_BUCKET": {"Ref": "DataBucket"},
        "NOTIFY_STREAM_BACKEND": "kafka",
        "NOTIFY_KAFKA_BOOTSTRAP": {"Ref": "KafkaBootstrap"},
        "NOTIFY_DELIVERY_CHANNEL": "sns",
        "NOTIFY_SNS_TOPIC_ARN": {"Ref": "NotificationsTopic"},
    }


def cloudformation() -> dict[str, Any]:
    """The AWS template as a dict (see the module doc)."""
    from lambdas.gateway import ROUTES
    from notify_core.store.tables import ALL_TABLES

    resources: dict[str, Any] = {
        "DataBucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                       "Properties": {"BucketEncryption": {"ServerSideEncryptionConfiguration": [
                           {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                           "PublicAccessBlockConfiguration": {
                               "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                               "RestrictPublicBuckets": True}}},
        "NotificationsTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {
            "Fn::Sub": "${TablePrefix}notifications"}}},
    }
    table_ids = []
    for table in ALL_TABLES:
        logical = f"Table{_camel(table)}"
        table_ids.append(logical)
        resources[logical] = {
            "Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
            "Properties": {
                "TableName": {"Fn::Sub": f"${{TablePrefix}}{table}"},
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                         {"AttributeName": "sk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                              {"AttributeName": "sk", "KeyType": "RANGE"}],
                "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            },
        }
    resources["FunctionRole"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "ManagedPolicyArns": ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
            "Policies": [{"PolicyName": "notify-data", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                # what notify_core/store/dynamodb.py calls; the tables exist (created here), DescribeTable finds them
                {"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query",
                                               "dynamodb:Scan", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                               "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
                                               "dynamodb:DescribeTable"],
                 "Resource": [{"Fn::GetAtt": [t, "Arn"]} for t in table_ids]},
                {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                 "Resource": [{"Fn::GetAtt": ["DataBucket", "Arn"]},
                              {"Fn::Sub": "${DataBucket.Arn}/*"}]},
                {"Effect": "Allow", "Action": "sns:Publish", "Resource": {"Ref": "NotificationsTopic"}},
            ]}}],
        },
    }
    resources["HttpApi"] = {"Type": "AWS::ApiGatewayV2::Api",
                            "Properties": {"Name": {"Fn::Sub": "${AWS::StackName}-api"}, "ProtocolType": "HTTP"}}
    resources["HttpApiStage"] = {"Type": "AWS::ApiGatewayV2::Stage",
                                 "Properties": {"ApiId": {"Ref": "HttpApi"}, "StageName": "$default",
                                                "AutoDeploy": True}}

    def function(logical: str, handler: str, *, timeout: int, memory: int) -> None:
        resources[logical] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "PackageType": "Image", "Code": {"ImageUri": {"Ref": "ImageUri"}},
                "ImageConfig": {"Command": [handler]},
                "Role": {"Fn::GetAtt": ["FunctionRole", "Arn"]},
                "Timeout": timeout, "MemorySize": memory, "Architectures": ["x86_64"],
                "Environment": {"Variables": _aws_environment()},
            },
        }

    for route in ROUTES:
        name = _function_name(route.handler)
        logical = f"{name}Function"
        if logical not in resources:
            function(logical, route.handler.replace(":", "."), timeout=30, memory=2048)
        route_id = _camel(f"{route.method} {route.path}")
        resources[f"Integration{route_id}"] = {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {"ApiId": {"Ref": "HttpApi"}, "IntegrationType": "AWS_PROXY",
                           "IntegrationUri": {"Fn::GetAtt": [logical, "Arn"]}, "PayloadFormatVersion": "2.0"},
        }
        resources[f"Route{route_id}"] = {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {"ApiId": {"Ref": "HttpApi"}, "RouteKey": f"{route.method} {route.path}",
                           "Target": {"Fn::Sub": f"integrations/${{Integration{route_id}}}"}},
        }
        resources[f"Permission{route_id}"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": logical},
                           "Principal": "apigateway.amazonaws.com",
                           "SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:"
                                                    "${AWS::AccountId}:${HttpApi}/*"}},
        }
    for name, handler, schedule in SCHEDULED:
        logical = f"{_camel(name)}Function"
        function(logical, handler, timeout=60, memory=1024)
        resources[f"{_camel(name)}Schedule"] = {
            "Type": "AWS::Events::Rule",
            "Properties": {"ScheduleExpression": schedule, "State": "ENABLED",
                           "Targets": [{"Id": name, "Arn": {"Fn::GetAtt": [logical, "Arn"]}}]},
        }
        resources[f"{_camel(name)}SchedulePermission"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": logical},
                           "Principal": "events.amazonaws.com",
                           "SourceArn": {"Fn::GetAtt": [f"{_camel(name)}Schedule", "Arn"]}},
        }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Notify: the serverless recommend/deliver path (Lambda + API Gateway HTTP API + "
                       "EventBridge), its DynamoDB tables and its S3 bucket.",
        "Parameters": {
            "ImageUri": {"Type": "String", "Description": "ECR image built from deploy/Dockerfile"},
            "TablePrefix": {"Type": "String", "Default": "notify_", "AllowedPattern": "^[A-Za-z0-9_.-]*$"},
            "KafkaBootstrap": {"Type": "String", "Description": "Kafka (MSK) bootstrap servers, host:port,..."},
        },
        "Resources": resources,
        "Outputs": {"ApiUrl": {"Value": {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.amazonaws.com"}},
                    "DataBucket": {"Value": {"Ref": "DataBucket"}}},
    }


def dagster_values() -> dict[str, Any]:
    """Values for the dagster/dagster Helm chart: our code location, runs as Kubernetes jobs."""
    env = [{"name": "NOTIFY_ENV", "value": "aws"}, {"name": "NOTIFY_STREAM_BACKEND", "value": "kafka"}]
    return {
        "dagster-user-deployments": {
            "enabled": True,
            "deployments": [{
                "name": "notify",
                "image": {"repository": "notify", "tag": "latest", "pullPolicy": "IfNotPresent"},
                "dagsterApiGrpcArgs": ["--module-name", "notify_assets.definitions"],
                "port": 3030,
                "envConfigMaps": [{"name": "notify-settings"}],
                "envSecrets": [{"name": "notify-secrets"}],
                "env": env,
                "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
            }],
        },
        "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {
            "envConfigMaps": [{"name": "notify-settings"}], "envSecrets": [{"name": "notify-secrets"}],
            "runK8sConfig": {"containerConfig": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}},
        }}},
        "dagsterDaemon": {"enabled": True},  # schedules and the sensors (landing, index publisher, re-plan)
    }


def consumer_manifest() -> dict[str, Any]:
    """The ``notify consume`` Deployment: stream -> Store, scaled up to the topics' partition count."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "notify-consumer", "labels": {"app": "notify-consumer"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "notify-consumer"}},
            "template": {
                "metadata": {"labels": {"app": "notify-consumer"}},
                "spec": {
                    "terminationGracePeriodSeconds": 60,  # SIGTERM: finish and commit the batch in hand
                    "containers": [{
                        "name": "consumer", "image": "notify:latest",
                        "command": ["notify", "consume", "--metrics-port", "9100"],
                        "env": [{"name": "NOTIFY_ENV", "value": "aws"},
                                {"name": "NOTIFY_STREAM_BACKEND", "value": "kafka"}],
                        "envFrom": [{"configMapRef": {"name": "notify-settings"}},
                                    {"secretRef": {"name": "notify-secrets"}}],
                        "ports": [{"name": "metrics", "containerPort": 9100}],
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                    }],
                },
            },
        },
    }


def rendered() -> dict[Path, str]:
    dump = lambda data: HEADER + yaml.safe_dump(data, sort_keys=False, width=110)  # noqa: E731
    return {CFN_PATH: dump(cloudformation()), HELM_PATH: dump(dagster_values()),
            CONSUMER_PATH: dump(consumer_manifest())}


def templates(
    check: Annotated[bool, typer.Option(help="Only compare: exit 1 if a committed file differs.")] = False,
) -> None:
    """Render the deployable templates under deploy/ from the code (tables, routes, settings)."""
    stale = []
    for path, text in rendered().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            typer.echo(f"wrote {path.relative_to(ROOT)}")
    if stale:
        typer.echo("out of date (run `notify templates`): " + ", ".join(str(p.relative_to(ROOT)) for p in stale))
        raise typer.Exit(1)
