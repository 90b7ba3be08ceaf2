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
the HTTP routes from the OpenAPI document (checked against :data:`lambdas.routes.ROUTES`, which names each
route's handler and scope), the settings from ``NotifySettings``, so adding a table or a route cannot leave
a template behind. Routes with a scope go through the Lambda authorizer (``lambdas/authorizer.py``); the
§8 SLOs become CloudWatch alarms (:mod:`notify_core.slo`) and every function logs to a 30-day log group.
``notify templates --check`` (run by the tests) fails
when the committed files differ from what the code renders; ``cfn-lint`` checks the CloudFormation.
Two images: ``deploy/Dockerfile`` (the AWS Lambda base image; each function's command is its handler)
and ``deploy/app.Dockerfile`` (plain Python; Dagster's code server, the run pods and ``notify consume``).
The Kubernetes pods reach AWS through IRSA service accounts (``deploy/k8s/service-accounts.yaml``),
whose roles the CloudFormation stack creates; no AWS keys in a Secret.

On one machine, unattended: ``deploy/systemd/`` (:mod:`notify_cli.systemd_units`), the embedded default's
long-running commands as systemd services under one target.
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
SERVICE_ACCOUNTS_PATH = ROOT / "deploy" / "k8s" / "service-accounts.yaml"
SYSTEMD_DIR = ROOT / "deploy" / "systemd"
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


# Tables replicated to a second region (global tables): what a regional outage must not lose or stall. The
# spec names campaigns and schedules; the erasure register too, or an erasure made before the region was lost
# is forgotten: the failover region's ingest and consumer would take the user in again, and a point-in-time
# restore could not be re-applied (`notify users reapply-erasures` reads the register of the old tables).
GLOBAL_TABLES: tuple[str, ...] = ("campaigns", "schedules", "erasures")
LOG_RETENTION_DAYS = 30
LAMBDA_DATA_DIR = "/tmp/notify"  # the only writable path in Lambda: the artefact cache, outbox and logs go here
K8S_NAMESPACE = "notify"
SERVICE_ACCOUNTS = {"dagster": "notify-dagster", "consumer": "notify-consumer"}  # IRSA: one role each
LAMBDA_IMAGE = "deploy/Dockerfile"  # the Lambda image (AWS base image, handler as the command)
APP_IMAGE = "deploy/app.Dockerfile"  # the Dagster code server / run pods / consumer image
APP_IMAGE_NAME = "notify-app"
APP_IMAGE_UID = 10001  # the app image's USER (deploy/app.Dockerfile)
APP_SCRATCH = "/tmp"  # the app image's NOTIFY_DATA_DIR lives under it (deploy/app.Dockerfile)
# Our image's pods run as its unprivileged user, with no capabilities and no way to gain privileges.
POD_SECURITY: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": APP_IMAGE_UID, "runAsGroup": APP_IMAGE_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _aws_environment() -> dict[str, Any]:
    return {
        "NOTIFY_ENV": "aws",
        "NOTIFY_DATA_DIR": LAMBDA_DATA_DIR,
        "NOTIFY_AWS_REGION": {"Ref": "AWS::Region"},
        "NOTIFY_TABLE_PREFIX": {"Ref": "TablePrefix"},
        "NOTIFY_S3_BUCKET": {"Ref": "DataBucket"},
        # the replica's name (the erasure deletes a user's versions there too: S3 does not replicate deletes)
        "NOTIFY_S3_REPLICA_BUCKET": {"Fn::Select": [5, {"Fn::Split": [":", {"Ref": "ReplicaBucketArn"}]}]},
        "NOTIFY_S3_REPLICA_REGION": {"Ref": "ReplicaRegion"},
        "NOTIFY_STREAM_BACKEND": "kafka",
        "NOTIFY_KAFKA_BOOTSTRAP": {"Ref": "KafkaBootstrap"},
        "NOTIFY_DELIVERY_CHANNEL": "sns",
        "NOTIFY_SNS_TOPIC_ARN": {"Ref": "NotificationsTopic"},
        # the master key every function shares: it wraps the data keys and signing rings in the Store
        # (notify_core/security/vault.py); a key per instance would seal what no other instance opens
        "NOTIFY_KMS_KEY_ID": {"Ref": "DataKey"},
        "NOTIFY_PUBLIC_BASE_URL": {"Fn::If": ["HasPublicBaseUrl", {"Ref": "PublicBaseUrl"}, {
            "Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.amazonaws.com"}]},
    }


def _table_arns(logical_ids: list[str]) -> list[Any]:
    return [{"Fn::GetAtt": [t, "Arn"]} for t in logical_ids]


KMS_ACTIONS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
KEY_PURPOSE_CONTEXT = "kms:EncryptionContext:purpose"  # what KmsMasterKey passes (notify_core/security/crypto.py)


def _service(name: str) -> dict[str, str]:
    return {"Fn::Sub": f"{name}.${{AWS::Region}}.amazonaws.com"}


def _kms_statements(*, services: list[str], direct: bool) -> list[dict[str, Any]]:
    """The data key, two ways. Through the services a principal uses (DynamoDB, S3 and SNS encrypt with
    it on its behalf: ``kms:ViaService``), and, for code that reaches the key vault
    (``notify_core.security.vault``: it wraps data keys and signing rings), directly, only with the
    ``purpose`` encryption context those wraps carry. A principal without the vault (the API-key
    authorizer, the event capture) cannot call KMS itself at all."""
    key = {"Fn::GetAtt": ["DataKey", "Arn"]}
    statements: list[dict[str, Any]] = []
    if services:
        statements.append({"Effect": "Allow", "Action": KMS_ACTIONS, "Resource": key, "Condition": {
            "StringEquals": {"kms:ViaService": [_service(s) for s in services]}}})
    if direct:
        statements.append({"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": key,
                           "Condition": {"Null": {KEY_PURPOSE_CONTEXT: "false"}}})
    return statements


def _data_statements(*, table_ids: list[str], actions: tuple[str, ...], s3_read: bool, s3_write: bool,
                     sns: bool, kms_direct: bool, s3_versions: bool = False,
                     pepper: bool = False) -> list[dict[str, Any]]:
    """IAM statements for one principal: its tables and actions, the bucket, the topic and the key.
    ``pepper``: read the API-key pepper secret (``ApiKeyPepper``, encrypted with the key) at a cold start.
    ``s3_versions``: list, read and delete the stored versions of objects (the erasure), in the data bucket
    and in its replica (read through S3 with the replica region's key). ``kms_direct``: the principal's code
    reaches the key vault (:func:`_kms_statements`)."""
    statements: list[dict[str, Any]] = []
    if table_ids:
        statements.append({"Effect": "Allow", "Action": list(actions), "Resource": _table_arns(table_ids)})
    if s3_read or s3_write:
        object_actions = ["s3:GetObject"] + (["s3:PutObject", "s3:DeleteObject"] if s3_write else []) + (
            ["s3:GetObjectVersion", "s3:DeleteObjectVersion"] if s3_versions else [])
        bucket = {"Fn::GetAtt": ["DataBucket", "Arn"]}
        list_actions: str | list[str] = ["s3:ListBucket", "s3:ListBucketVersions"] if s3_versions else "s3:ListBucket"
        statements += [{"Effect": "Allow", "Action": list_actions, "Resource": bucket},
                       {"Effect": "Allow", "Action": object_actions, "Resource": {"Fn::Sub": "${DataBucket.Arn}/*"}}]
    if s3_versions:
        statements += [
            {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
             "Resource": {"Ref": "ReplicaBucketArn"}},
            {"Effect": "Allow", "Action": ["s3:GetObjectVersion", "s3:DeleteObjectVersion"],
             "Resource": {"Fn::Sub": "${ReplicaBucketArn}/*"}},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Ref": "ReplicaKmsKeyArn"},
             "Condition": {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${ReplicaRegion}.amazonaws.com"}}}}]
    if sns:
        statements.append({"Effect": "Allow", "Action": "sns:Publish", "Resource": {"Ref": "NotificationsTopic"}})
    if pepper:
        statements.append({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": {"Ref": "ApiKeyPepper"}})
    services = ((["dynamodb"] if table_ids else []) + (["s3"] if s3_read or s3_write else []) + (["sns"] if sns else [])
                + (["secretsmanager"] if pepper else []))
    return statements + _kms_statements(services=services, direct=kms_direct)


def _encryption_and_storage(resources: dict[str, Any]) -> None:
    """The customer-managed key, the bucket (versioned, replicated, KMS, private, TLS-only), the topic."""
    account_root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    resources["DataKey"] = {
        "Type": "AWS::KMS::Key", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
        "Properties": {"Description": "Notify data at rest: DynamoDB tables, the S3 bucket, the SNS topic",
                       "EnableKeyRotation": True, "KeyPolicy": {"Version": "2012-10-17", "Statement": [
                           {"Sid": "AccountAdministersThroughIam", "Effect": "Allow",
                            "Principal": {"AWS": account_root}, "Action": "kms:*", "Resource": "*"}]}},
    }
    resources["DataKeyAlias"] = {"Type": "AWS::KMS::Alias", "Properties": {
        "AliasName": {"Fn::Sub": "alias/${AWS::StackName}-data"}, "TargetKeyId": {"Ref": "DataKey"}}}
    resources["DataBucket"] = {
        "Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                  "KMSMasterKeyID": {"Fn::GetAtt": ["DataKey", "Arn"]}},
                "BucketKeyEnabled": True}]},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                               "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "VersioningConfiguration": {"Status": "Enabled"},
            # A rewrite (a lake merge, an erasure) keeps the old copy as a noncurrent version: kept 30 days for
            # recovery, then gone, so old copies do not pile up (the erasure deletes a user's at once).
            "LifecycleConfiguration": {"Rules": [{"Id": "expire-noncurrent", "Status": "Enabled",
                                                  "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                                                  "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]},
            "ReplicationConfiguration": {"Role": {"Fn::GetAtt": ["ReplicationRole", "Arn"]}, "Rules": [{
                "Id": "replicate-everything", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": ""},
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "SourceSelectionCriteria": {"SseKmsEncryptedObjects": {"Status": "Enabled"}},
                "Destination": {"Bucket": {"Ref": "ReplicaBucketArn"},
                                "EncryptionConfiguration": {"ReplicaKmsKeyID": {"Ref": "ReplicaKmsKeyArn"}}}}]},
        },
    }
    resources["DataBucketPolicy"] = {"Type": "AWS::S3::BucketPolicy", "Properties": {
        "Bucket": {"Ref": "DataBucket"}, "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [{"Fn::GetAtt": ["DataBucket", "Arn"]}, {"Fn::Sub": "${DataBucket.Arn}/*"}],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}}}
    resources["ReplicationRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
        "Policies": [{"PolicyName": "replicate", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
             "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-*"}},
            {"Effect": "Allow", "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl",
                                           "s3:GetObjectVersionTagging"],
             "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${AWS::StackName}-*/*"}},
            {"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
             "Resource": {"Fn::Sub": "${ReplicaBucketArn}/*"}},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Fn::GetAtt": ["DataKey", "Arn"]}},
            {"Effect": "Allow", "Action": "kms:Encrypt", "Resource": {"Ref": "ReplicaKmsKeyArn"}},
        ]}}]}}
    resources["NotificationsTopic"] = {"Type": "AWS::SNS::Topic", "Properties": {
        "TopicName": {"Fn::Sub": "${TablePrefix}notifications"}, "KmsMasterKeyId": {"Ref": "DataKey"}}}


def _tables(resources: dict[str, Any]) -> dict[str, str]:
    """One DynamoDB table per Store table (KMS, point-in-time recovery, TTL); GLOBAL_TABLES replicated."""
    from notify_core.store.tables import ALL_TABLES

    keys = {"AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                     {"AttributeName": "sk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]}
    pitr = {"PointInTimeRecoveryEnabled": True}
    ids: dict[str, str] = {}
    for table in ALL_TABLES:
        logical = f"Table{_camel(table)}"
        ids[table] = logical
        common = {"TableName": {"Fn::Sub": f"${{TablePrefix}}{table}"}, "BillingMode": "PAY_PER_REQUEST", **keys,
                  "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True}}
        if table in GLOBAL_TABLES:
            properties = {**common, "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
                          "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS"},
                          "Replicas": [
                              {"Region": {"Ref": "AWS::Region"}, "PointInTimeRecoverySpecification": pitr,
                               "SSESpecification": {"KMSMasterKeyId": {"Fn::GetAtt": ["DataKey", "Arn"]}}},
                              {"Region": {"Ref": "ReplicaRegion"}, "PointInTimeRecoverySpecification": pitr,
                               "SSESpecification": {"KMSMasterKeyId": {"Ref": "ReplicaKmsKeyArn"}}}]}
            kind = "AWS::DynamoDB::GlobalTable"
        else:
            properties = {**common, "PointInTimeRecoverySpecification": pitr,
                          "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS",
                                               "KMSMasterKeyId": {"Ref": "DataKey"}}}
            kind = "AWS::DynamoDB::Table"
        resources[logical] = {"Type": kind, "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                              "Properties": properties}
    return ids


def _pod_roles(resources: dict[str, Any], table_ids: dict[str, str]) -> None:
    """IRSA: one IAM role per Kubernetes service account, trusted only by that account through the
    cluster's OIDC provider (no AWS keys in a Secret). Dagster runs every stage: all tables, the bucket (with
    its object versions: ``notify users delete`` runs in its pods), the topic. The consumer writes what
    ``notify_core.events.consumer`` reaches, and landing files."""
    from notify_cli.deploy_access import DYNAMODB_READ, DYNAMODB_SCAN, DYNAMODB_WRITE, derive_access
    from notify_core.slo import EMF_NAMESPACE

    consumer = derive_access("notify_core.events.consumer")
    # their SLO counters for the alarms (notify_core.cloudwatch_metrics.cloudwatch_counters): a pod has no Lambda log
    put_metrics = {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
                   "Condition": {"StringEquals": {"cloudwatch:namespace": EMF_NAMESPACE}}}
    grants = {
        "dagster": _data_statements(table_ids=list(table_ids.values()),
                                    actions=DYNAMODB_READ + DYNAMODB_SCAN + DYNAMODB_WRITE,
                                    s3_read=True, s3_write=True, sns=True, kms_direct=True, s3_versions=True)
        + [put_metrics],
        "consumer": _data_statements(table_ids=[table_ids[t] for t in sorted(consumer.tables)],
                                     actions=consumer.dynamodb_actions, s3_read=True, s3_write=True, sns=False,
                                     kms_direct=consumer.reaches_keys) + [put_metrics],
    }
    for role, account in SERVICE_ACCOUNTS.items():
        trust = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": '
                 '"arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/${EksOidcIssuer}"}, '
                 '"Action": "sts:AssumeRoleWithWebIdentity", "Condition": {"StringEquals": {'
                 f'"${{EksOidcIssuer}}:sub": "system:serviceaccount:{K8S_NAMESPACE}:{account}", '
                 '"${EksOidcIssuer}:aud": "sts.amazonaws.com"}}}]}')
        resources[f"{_camel(role)}PodRole"] = {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": {"Fn::Sub": f"${{AWS::StackName}}-{account}"},
            "AssumeRolePolicyDocument": {"Fn::Sub": trust},
            "Policies": [{"PolicyName": "notify-data", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": grants[role]}}]}}


def cloudformation() -> dict[str, Any]:
    """The AWS template as a dict (see the module doc)."""
    from notify_cli.deploy_access import derive_access

    resources: dict[str, Any] = {}
    _encryption_and_storage(resources)
    table_ids = _tables(resources)
    _pod_roles(resources, table_ids)
    resources["HttpApi"] = {"Type": "AWS::ApiGatewayV2::Api",
                            "Properties": {"Name": {"Fn::Sub": "${AWS::StackName}-api"}, "ProtocolType": "HTTP"}}
    # HTTP APIs answer HTTPS only (TLS 1.2) on their execute-api endpoint; throttled per stage.
    resources["HttpApiStage"] = {"Type": "AWS::ApiGatewayV2::Stage",
                                 "Properties": {"ApiId": {"Ref": "HttpApi"}, "StageName": "$default",
                                                "AutoDeploy": True, "DefaultRouteSettings": {
                                                    "ThrottlingRateLimit": {"Ref": "ApiThrottleRate"},
                                                    "ThrottlingBurstLimit": {"Ref": "ApiThrottleBurst"}}}}

    def function(logical: str, handler: str, *, timeout: int, memory: int) -> None:
        """One function with its own role, derived from the code its handler module reaches."""
        access = derive_access(handler.rpartition(".")[0])
        role = f"{logical}Role"
        resources[role] = {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
            "ManagedPolicyArns": [
                "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole" if access.kafka
                else "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
        }}
        checks_keys = "notify_core.security.keycheck" in access.modules
        statements = _data_statements(table_ids=[table_ids[t] for t in sorted(access.tables)],
                                      actions=access.dynamodb_actions, s3_read=access.s3_read,
                                      s3_write=access.s3_write, sns=access.sns, kms_direct=access.reaches_keys,
                                      s3_versions=access.s3_versions, pepper=checks_keys)
        if statements:
            resources[role]["Properties"]["Policies"] = [{"PolicyName": "notify-data", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": statements}}]
        properties: dict[str, Any] = {
            "PackageType": "Image", "Code": {"ImageUri": {"Ref": "ImageUri"}},
            "ImageConfig": {"Command": [handler]},
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "Timeout": timeout, "MemorySize": memory, "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": 2048},  # /tmp: the index cache
            # the pepper's secret by name, read at a cold start: a dynamic reference here would put the pepper
            # itself in the environment, readable by whoever may read the function's configuration
            "Environment": {"Variables": {**_aws_environment(), **(
                {"NOTIFY_API_KEY_PEPPER_SECRET": {"Ref": "ApiKeyPepper"}} if checks_keys else {})}},
            "LoggingConfig": {"LogGroup": {"Ref": f"{logical}Logs"}},
        }
        if access.kafka:  # MSK is reachable only inside the VPC
            properties["VpcConfig"] = {"SubnetIds": {"Ref": "SubnetIds"},
                                       "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
        resources[logical] = {"Type": "AWS::Lambda::Function", "Properties": properties}
        resources[f"{logical}Logs"] = {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete",
                                       "UpdateReplacePolicy": "Delete", "Properties": {
                                           "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}-{logical}"},
                                           "RetentionInDays": LOG_RETENTION_DAYS}}

    _api_key_check(resources, function)
    for route in api_routes():
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
                           "Target": {"Fn::Sub": f"integrations/${{Integration{route_id}}}"},
                           # a route with a scope is checked at the gateway (and again by the handler edge)
                           **({"AuthorizationType": "CUSTOM", "AuthorizerId": {"Ref": "ApiKeyAuthorizer"}}
                              if route.scope else {"AuthorizationType": "NONE"})},
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
    _alarms(resources)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Notify: the serverless recommend/deliver path (Lambda + API Gateway HTTP API + "
                       "EventBridge), its DynamoDB tables, its S3 bucket and the Kubernetes pods' IAM roles.",
        "Parameters": {
            "ImageUri": {"Type": "String", "Description": f"ECR image built from {LAMBDA_IMAGE}"},
            "TablePrefix": {"Type": "String", "Default": "notify_", "AllowedPattern": "^[A-Za-z0-9_.-]*$"},
            "KafkaBootstrap": {"Type": "String", "Description": "Kafka (MSK) bootstrap servers, host:port,..."},
            "SubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                          "Description": "Private subnets that reach MSK (with DynamoDB/S3 gateway endpoints)"},
            "SecurityGroupIds": {"Type": "List<AWS::EC2::SecurityGroup::Id>",
                                 "Description": "Security groups allowed into the MSK brokers"},
            "PublicBaseUrl": {"Type": "String", "Default": "",
                              "Description": "Base URL of tracking links (a custom domain); empty: the API's URL"},
            "ReplicaRegion": {"Type": "String", "Default": "eu-central-1",
                              "Description": "Second region of the global tables"},
            "ReplicaKmsKeyArn": {"Type": "String", "Description": "KMS key in the replica region (tables, bucket)"},
            "ReplicaBucketArn": {"Type": "String", "Description": "Versioned bucket in the replica region"},
            "EksOidcIssuer": {"Type": "String", "Description": "EKS OIDC issuer without https:// "
                                                               "(oidc.eks.<region>.amazonaws.com/id/<id>)"},
            "ApiThrottleRate": {"Type": "Number", "Default": 3000, "Description": "Steady requests/s per stage"},
            "ApiThrottleBurst": {"Type": "Number", "Default": 5000, "Description": "Burst requests per stage"},
            **EDGE_PARAMETERS,
        },
        "Conditions": {"HasPublicBaseUrl": {"Fn::Not": [{"Fn::Equals": [{"Ref": "PublicBaseUrl"}, ""]}]},
                       **EDGE_CONDITIONS},
        "Resources": resources,
        "Outputs": {"ApiUrl": {"Value": {"Fn::Sub": "https://${HttpApi}.execute-api.${AWS::Region}.amazonaws.com"}},
                    "DataBucket": {"Value": {"Ref": "DataBucket"}},
                    # NOTIFY_KMS_KEY_ID of the notify-settings ConfigMap (the pods share the functions' keys)
                    "DataKeyArn": {"Value": {"Fn::GetAtt": ["DataKey", "Arn"]}},
                    **{f"{_camel(role)}PodRoleArn": {"Value": {"Fn::GetAtt": [f"{_camel(role)}PodRole", "Arn"]}}
                       for role in SERVICE_ACCOUNTS}},
    }


# --- the API edge in aws (issues 14 and 18): routes from the OpenAPI document, the key authorizer, the pepper
# secret, and the §8 SLO alarms -------------------------------------------------------------------------
AUTHORIZER_HANDLER = "lambdas.authorizer.handler"
EDGE_PARAMETERS: dict[str, Any] = {
    "AuthorizerCacheSeconds": {
        "Type": "Number", "Default": 0, "MinValue": 0, "MaxValue": 3600,
        "Description": "Cache the key authorizer's answers (per X-API-Key and route). 0: every request is "
                       "checked, revocation is immediate at the gateway and Authorization: Bearer works too; "
                       "> 0: clients must send X-API-Key (the cache key), and the handlers still re-check"},
    "KafkaClusterName": {"Type": "String", "Description": "MSK cluster name (the consumer-lag alarm's metric)"},
    "AlarmEmail": {"Type": "String", "Default": "", "Description": "Who the SLO alarms email (empty: none)"},
}
EDGE_CONDITIONS: dict[str, Any] = {
    "CachesAuthorizer": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AuthorizerCacheSeconds"}, 0]}]},
    "HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]},
}


def api_routes() -> list[Any]:
    """The API's routes as the OpenAPI document declares them (generated from the handlers' models), each
    with its handler and scope from :data:`lambdas.routes.ROUTES`; a route in one and not the other fails
    the rendering, so template, document and gateway cannot drift apart."""
    from lambdas.openapi import openapi_document
    from lambdas.routes import ROUTES, declared

    document = openapi_document()
    routes = [declared(method, path) for path, item in document["paths"].items() for method in item]
    missing = sorted({r.key for r in ROUTES} - {r.key for r in routes})
    if missing:
        raise RuntimeError(f"routes of lambdas.routes missing from the OpenAPI document: {missing}")
    return routes


def _api_key_check(resources: dict[str, Any], function: Any) -> None:
    """The pepper secret and the Lambda authorizer (``lambdas/authorizer.py``, the handler edge's key check)
    in front of every route that has a scope."""
    resources["ApiKeyPepper"] = {
        "Type": "AWS::SecretsManager::Secret", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
        "Properties": {"Description": "Notify API key pepper: HMAC key of the stored key hashes",
                       "KmsKeyId": {"Ref": "DataKey"},
                       "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True}}}
    function("AuthorizerFunction", AUTHORIZER_HANDLER, timeout=10, memory=512)
    resources["ApiKeyAuthorizer"] = {
        "Type": "AWS::ApiGatewayV2::Authorizer",
        "Properties": {
            "ApiId": {"Ref": "HttpApi"}, "Name": "notify-api-keys", "AuthorizerType": "REQUEST",
            "AuthorizerPayloadFormatVersion": "2.0", "EnableSimpleResponses": True,
            "AuthorizerUri": {"Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/"
                                         "functions/${AuthorizerFunction.Arn}/invocations"},
            "AuthorizerResultTtlInSeconds": {"Ref": "AuthorizerCacheSeconds"},
            # Identity sources are needed only to key a cache: the route is part of it (scopes differ per route)
            "IdentitySource": {"Fn::If": ["CachesAuthorizer", ["$request.header.x-api-key", "$context.routeKey"],
                                          {"Ref": "AWS::NoValue"}]},
        },
    }
    resources["AuthorizerPermission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": "AuthorizerFunction"},
                       "Principal": "apigateway.amazonaws.com",
                       "SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:"
                                                "${AWS::AccountId}:${HttpApi}/authorizers/${ApiKeyAuthorizer}"}},
    }


def _alarms(resources: dict[str, Any]) -> None:
    """The §8 SLOs as CloudWatch alarms (:func:`notify_core.slo.cloudwatch_resources`, the same table as the
    Prometheus rules), with the error objective also on each function's own ``AWS/Lambda`` metrics, on an
    encrypted topic CloudWatch may publish to for this stack's alarms only. The functions' 30-day log groups are
    declared with the functions above."""
    from notify_core.slo import cloudwatch_resources

    resources["AlarmTopic"] = {"Type": "AWS::SNS::Topic", "Properties": {
        "TopicName": {"Fn::Sub": "${AWS::StackName}-slo-alarms"}, "KmsMasterKeyId": {"Ref": "DataKey"},
        "Subscription": {"Fn::If": ["HasAlarmEmail", [{"Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}],
                                    {"Ref": "AWS::NoValue"}]}}}
    # only for this stack's alarms (the confused deputy: any alarm of any account could otherwise have
    # CloudWatch use the key through this statement)
    resources["DataKey"]["Properties"]["KeyPolicy"]["Statement"].append({
        "Sid": "CloudWatchAlarmsPublishToTheEncryptedTopic", "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*", "Condition": {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnLike": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:"
                                                     "${AWS::AccountId}:alarm:${AWS::StackName}-*"}}}})
    functions = [logical for logical, resource in resources.items() if resource["Type"] == "AWS::Lambda::Function"]
    resources.update(cloudwatch_resources(alarm_topic={"Ref": "AlarmTopic"}, lambda_functions=functions))


def dagster_values() -> dict[str, Any]:
    """Values for the dagster/dagster Helm chart: our code location, runs as Kubernetes jobs."""
    env = [{"name": "NOTIFY_ENV", "value": "aws"}, {"name": "NOTIFY_STREAM_BACKEND", "value": "kafka"}]
    return {
        "dagster-user-deployments": {
            "enabled": True,
            "deployments": [{
                "name": "notify",
                "image": {"repository": APP_IMAGE_NAME, "tag": "latest", "pullPolicy": "IfNotPresent"},
                "dagsterApiGrpcArgs": ["--module-name", "notify_assets.definitions"],
                "port": 3030,
                "envConfigMaps": [{"name": "notify-settings"}],
                "envSecrets": [{"name": "notify-secrets"}],
                "env": env,
                "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                "podSecurityContext": POD_SECURITY,
                "securityContext": CONTAINER_SECURITY,
            }],
            # IRSA: the pods assume the DagsterPodRole of the CloudFormation stack (no AWS keys anywhere)
            "serviceAccount": {"create": False, "name": SERVICE_ACCOUNTS["dagster"]},
        },
        "serviceAccount": {"create": False, "name": SERVICE_ACCOUNTS["dagster"]},
        # instance storage on PostgreSQL (RDS); psycopg2 because SQLAlchemy 2.1 would pick psycopg 3
        "postgresql": {"enabled": False, "postgresqlHost": "notify-dagster.example.internal",
                       "postgresqlUsername": "dagster", "postgresqlDatabase": "dagster",
                       "postgresqlScheme": "postgresql+psycopg2", "service": {"port": 5432}},
        "generatePostgresqlPasswordSecret": False,
        "runLauncher": {"type": "K8sRunLauncher", "config": {"k8sRunLauncher": {
            "envConfigMaps": [{"name": "notify-settings"}], "envSecrets": [{"name": "notify-secrets"}],
            "runK8sConfig": {"containerConfig": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}},
                                                 "securityContext": CONTAINER_SECURITY},
                             "podSpecConfig": {"securityContext": POD_SECURITY}},
        }}},
        "dagsterDaemon": {"enabled": True},  # schedules and the sensors (landing, index publisher, re-plan)
    }


def consumer_manifest() -> dict[str, Any]:
    """The ``notify consume`` Deployment: stream -> Store, scaled up to the topics' partition count."""
    from notify_core.metrics_server import HEALTH_PATH

    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "notify-consumer", "labels": {"app": "notify-consumer"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "notify-consumer"}},
            "template": {
                "metadata": {"labels": {"app": "notify-consumer"}},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNTS["consumer"],  # IRSA: ConsumerPodRole
                    "terminationGracePeriodSeconds": 60,  # SIGTERM: finish and commit the batch in hand
                    "securityContext": POD_SECURITY,
                    # the root filesystem is read-only: the data directory (landing files until pushed) is here
                    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}],
                    "containers": [{
                        "name": "consumer", "image": f"{APP_IMAGE_NAME}:latest",
                        # the pod's address, not loopback: Prometheus scrapes the pod IP (the consumer-lag and
                        # pipeline-success rules read these metrics)
                        "command": ["notify", "consume", "--metrics-port", "9100", "--metrics-addr", "0.0.0.0"],
                        "env": [{"name": "NOTIFY_ENV", "value": "aws"},
                                {"name": "NOTIFY_STREAM_BACKEND", "value": "kafka"}],
                        "envFrom": [{"configMapRef": {"name": "notify-settings"}},
                                    {"secretRef": {"name": "notify-secrets"}}],
                        "ports": [{"name": "metrics", "containerPort": 9100}],
                        # a loop stuck on a call that never returns (10 min without a turn or a write attempt)
                        # answers 503: restarted, its uncommitted batch is read again by the next member
                        "livenessProbe": {"httpGet": {"path": HEALTH_PATH, "port": "metrics"},
                                          "initialDelaySeconds": 30, "periodSeconds": 30, "timeoutSeconds": 5,
                                          "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
                        "securityContext": {**CONTAINER_SECURITY, "readOnlyRootFilesystem": True},
                        "volumeMounts": [{"name": "scratch", "mountPath": APP_SCRATCH}],
                    }],
                },
            },
        },
    }


class _NoAliases(yaml.SafeDumper):
    """CloudFormation rejects YAML aliases: shared sub-dicts are written out in full each time."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def service_accounts() -> list[dict[str, Any]]:
    """The pods' service accounts, annotated with their IRSA role (the stack's ``*PodRoleArn`` outputs:
    replace ``<account-id>``, or ``kubectl annotate`` with the output after deploying the stack)."""
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
        "name": account, "namespace": K8S_NAMESPACE, "annotations": {
            "eks.amazonaws.com/role-arn": f"arn:aws:iam::<account-id>:role/<stack-name>-{account}"}}}
        for account in SERVICE_ACCOUNTS.values()]


def rendered() -> dict[Path, str]:
    def dump(data: Any) -> str:
        return HEADER + yaml.dump(data, Dumper=_NoAliases, sort_keys=False, width=110)

    from notify_cli.systemd_units import Layout, units

    files = {CFN_PATH: dump(cloudformation()), HELM_PATH: dump(dagster_values()),
             CONSUMER_PATH: dump(consumer_manifest()),
             SERVICE_ACCOUNTS_PATH: HEADER + yaml.dump_all(service_accounts(), Dumper=_NoAliases, sort_keys=False)}
    one_box = units(Layout(), repository_yaml=(ROOT / "dagster.yaml").read_text())
    files.update({SYSTEMD_DIR / name: text for name, text in one_box.items()})
    return files


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
