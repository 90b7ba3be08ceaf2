"""The deployable templates under deploy/: rendered from the code, committed up to date, lint-clean, and
covering every table, route and handler."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from lambdas.gateway import ROUTES
from notify_cli import deploy_templates
from notify_cli.main import app
from notify_core.metrics_server import HEALTH_PATH
from notify_core.store import tables


def test_committed_templates_are_what_the_code_renders() -> None:
    result = CliRunner().invoke(app, ["templates", "--check"])
    assert result.exit_code == 0, result.output


TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable")


def test_every_table_constant_is_deployed() -> None:
    """ALL_TABLES is what the templates create: a new table constant must be listed there."""
    constants = {value for name, value in vars(tables).items()
                 if name.isupper() and isinstance(value, str) and not name.endswith("_SK")}
    assert constants == set(tables.ALL_TABLES)
    resources = deploy_templates.cloudformation()["Resources"]
    deployed = {r["Properties"]["TableName"]["Fn::Sub"].removeprefix("${TablePrefix}")
                for r in resources.values() if r["Type"] in TABLE_TYPES}
    assert deployed == set(tables.ALL_TABLES)
    assert all(r["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
               for r in resources.values() if r["Type"] in TABLE_TYPES)


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
    container = consumer["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["notify", "consume"]
    # the liveness probe asks the consumer's own /healthz, on the port the command serves its metrics on
    probe = container["livenessProbe"]["httpGet"]
    metrics_port = container["command"][container["command"].index("--metrics-port") + 1]
    assert probe["path"] == HEALTH_PATH
    assert [p["containerPort"] for p in container["ports"] if p["name"] == probe["port"]] == [int(metrics_port)]


# -- issue 15 and the template items of the security/backup issues -------------------------------------
def _resources() -> dict:
    return deploy_templates.cloudformation()["Resources"]


def test_every_table_has_point_in_time_recovery_and_kms_and_campaigns_schedules_are_global() -> None:
    for logical, r in _resources().items():
        props = r.get("Properties", {})
        if r["Type"] == "AWS::DynamoDB::Table":
            assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, logical
            assert props["SSESpecification"]["SSEType"] == "KMS", logical
        elif r["Type"] == "AWS::DynamoDB::GlobalTable":
            assert props["SSESpecification"]["SSEType"] == "KMS", logical
            regions = [replica["Region"] for replica in props["Replicas"]]
            assert regions == [{"Ref": "AWS::Region"}, {"Ref": "ReplicaRegion"}], logical
            assert all(replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
                       for replica in props["Replicas"])
    global_names = {r["Properties"]["TableName"]["Fn::Sub"].removeprefix("${TablePrefix}")
                    for r in _resources().values() if r["Type"] == "AWS::DynamoDB::GlobalTable"}
    assert global_names == {tables.CAMPAIGNS, tables.SCHEDULES, tables.ERASURES}  # the register: not lost with a region


def test_bucket_is_versioned_replicated_kms_private_and_tls_only_and_topic_is_encrypted() -> None:
    resources = _resources()
    bucket = resources["DataBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    [rule] = bucket["LifecycleConfiguration"]["Rules"]  # old copies kept for recovery, not for ever
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert bucket["ReplicationConfiguration"]["Rules"][0]["Status"] == "Enabled"
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] == "aws:kms"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    [deny] = resources["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert resources["NotificationsTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "DataKey"}


def test_each_function_has_its_own_role_limited_to_the_tables_its_code_reaches() -> None:
    from notify_cli.deploy_access import derive_access

    resources = _resources()
    functions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    roles = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()]
    assert len(set(roles)) == len(functions)  # one role per function
    table_of = {logical: r["Properties"]["TableName"]["Fn::Sub"].removeprefix("${TablePrefix}")
                for logical, r in resources.items() if r["Type"].startswith("AWS::DynamoDB::")}
    for logical, function in functions.items():
        module = function["Properties"]["ImageConfig"]["Command"][0].rpartition(".")[0]
        access = derive_access(module)
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        granted = {table_of[arn["Fn::GetAtt"][0]] for s in statements if str(s["Action"]).count("dynamodb:")
                   for arn in s["Resource"]}
        assert granted == set(access.tables), logical
        assert not any(s["Action"] == "*" or s.get("Resource") == "*" for s in statements), logical
        assert ("VpcConfig" in function["Properties"]) == access.kafka, logical
        env = function["Properties"]["Environment"]["Variables"]
        assert env["NOTIFY_DATA_DIR"].startswith("/tmp/") and "NOTIFY_PUBLIC_BASE_URL" in env
        logs = resources[function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
        assert logs["Properties"]["RetentionInDays"] == 30
    # the code really narrows: capture reaches only the API key check, recommendations never touch delivery
    # state
    capture = derive_access("lambdas.capture_events")
    # (the key check reads the bare adapter: no key documents, no key vault)
    assert capture.tables == {tables.API_KEYS} and not capture.store_writes and capture.kafka
    assert not capture.s3_read and not capture.reaches_keys
    assert tables.DELIVERIES not in derive_access("lambdas.get_recommended_campaigns").tables
    # DynamoDB's Scan is its own action: the erasure scans every table (its role lacked it, so on AWS the
    # erase route was refused by IAM), and the consumer scans the erasure register; capture scans nothing
    erase = derive_access("lambdas.erase_user")
    assert "dynamodb:Scan" in erase.dynamodb_actions and "dynamodb:Scan" not in capture.dynamodb_actions
    # and it reaches every table that holds users' items: the erasure walks tables.USER_ITEMS, which the
    # derivation used not to read (the role named 8 tables: the erase route was refused on schedules,
    # deliveries, plans... and on ListTables, which the erasure called and no role has)
    assert set(tables.USER_ITEMS) | {tables.SYNC_LEDGER} <= erase.tables
    assert not (set(tables.NO_USER_ITEMS) - {tables.SYNC_LEDGER, tables.API_KEYS, tables.AUDIT_LOG, tables.ERASURES,
                                             tables.ERASURE_QUEUE, tables.KEY_DOCUMENTS}
                ) & erase.tables  # never products, campaigns...
    assert tables.ERASURE_QUEUE in erase.tables  # what outruns the route's budget is queued for the sweep
    consumer = derive_access("notify_core.events.consumer")
    assert "dynamodb:Scan" in consumer.dynamodb_actions and tables.ERASURES in consumer.tables
    # the consumer reaches the register, not the erasure: no write to profiles, API keys or the audit log
    assert not consumer.tables & {tables.USERS, tables.API_KEYS, tables.AUDIT_LOG}
    statements = _resources()["EraseUserFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert any("dynamodb:Scan" in s["Action"] for s in statements)
    granted = {r["Fn::GetAtt"][0] for s in statements if "dynamodb:DeleteItem" in s["Action"]
               for r in s["Resource"] if isinstance(r, dict) and "Fn::GetAtt" in r}
    assert {"TableSchedules", "TableDeliveries", "TablePlans", "TableReplanUsers"} <= granted
    # the erasure rewrites the objects under the prefix and deletes every old version that held the user
    # (the bucket is versioned): its role lists, reads and deletes versions; no other function's does
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"s3:ListBucketVersions", "s3:GetObjectVersion", "s3:DeleteObjectVersion", "s3:PutObject"} <= actions
    assert erase.s3_versions and erase.s3_write
    others = [str(f["Properties"]["ImageConfig"]["Command"][0]).rpartition(".")[0] for f in _resources().values()
              if f["Type"] == "AWS::Lambda::Function"]
    assert [m for m in others if derive_access(m).s3_versions] == ["lambdas.erase_user"]
    # and in the replica bucket, which S3 replication never deletes from: list, read, delete versions there,
    # decrypting through S3 in the replica region only; no other function is granted the replica at all
    replica = [s for s in statements if "ReplicaBucketArn" in json.dumps(s["Resource"])]
    assert {a for s in replica for a in s["Action"]} == {"s3:ListBucket", "s3:ListBucketVersions",
                                                          "s3:GetObjectVersion", "s3:DeleteObjectVersion"}
    assert any(s["Resource"] == {"Ref": "ReplicaKmsKeyArn"} and s["Action"] == "kms:Decrypt" and
               s["Condition"]["StringEquals"]["kms:ViaService"] for s in statements)
    for logical, resource in _resources().items():
        if resource["Type"] == "AWS::IAM::Role" and logical not in {"EraseUserFunctionRole", "DagsterPodRole",
                                                                    "ReplicationRole"}:
            assert "Replica" not in json.dumps(resource["Properties"].get("Policies", [])), logical
    env = _resources()["EraseUserFunction"]["Properties"]["Environment"]["Variables"]
    assert env["NOTIFY_S3_REPLICA_BUCKET"] == {"Fn::Select": [5, {"Fn::Split": [":", {"Ref": "ReplicaBucketArn"}]}]}


def test_the_derivation_sees_tables_named_by_lazy_imports(tmp_path, monkeypatch) -> None:
    """A handler naming a table through a function-level import is seen (no drift by lazy import)."""
    from notify_cli import deploy_access

    package = tmp_path / "lambdas_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "h.py").write_text("def handler(event, context):\n"
                                  "    from notify_core.store.tables import DEAD_LETTERS\n"
                                  "    store.table(DEAD_LETTERS).put({})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(deploy_access, "ROOT", tmp_path)
    monkeypatch.setattr(deploy_access, "PACKAGES", ("lambdas_probe", "notify_core"))
    deploy_access._source.cache_clear()
    try:
        access = deploy_access.derive_access("lambdas_probe.h")
    finally:
        deploy_access._source.cache_clear()
    assert access.tables == {tables.DEAD_LETTERS} and access.store_writes


def test_api_is_throttled_and_pods_use_irsa_roles() -> None:
    resources = _resources()
    route = resources["HttpApiStage"]["Properties"]["DefaultRouteSettings"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(route)
    for account in deploy_templates.SERVICE_ACCOUNTS.values():
        trust = next(r for r in resources.values() if r["Type"] == "AWS::IAM::Role"
                     and account in str(r["Properties"].get("RoleName", "")))["Properties"]["AssumeRolePolicyDocument"]
        assert f"system:serviceaccount:{deploy_templates.K8S_NAMESPACE}:{account}" in trust["Fn::Sub"]
    accounts = list(yaml.safe_load_all(deploy_templates.SERVICE_ACCOUNTS_PATH.read_text()))
    assert {a["metadata"]["name"] for a in accounts} == set(deploy_templates.SERVICE_ACCOUNTS.values())
    assert all("eks.amazonaws.com/role-arn" in a["metadata"]["annotations"] for a in accounts)
    consumer = yaml.safe_load(deploy_templates.CONSUMER_PATH.read_text())
    assert consumer["spec"]["template"]["spec"]["serviceAccountName"] == deploy_templates.SERVICE_ACCOUNTS["consumer"]
    env_from = consumer["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert not any("secretRef" in e and "aws" in e["secretRef"]["name"] for e in env_from)


def test_every_function_and_pod_shares_the_stacks_master_key() -> None:
    """A key minted per Lambda instance seals what no other instance opens (tests/security/test_shared_keys.py):
    every function gets the stack's KMS key; the pods read its ARN from the outputs. A role uses the key
    directly (wrapping data keys and signing rings, always with a ``purpose`` context) only when its code
    reaches the key vault; otherwise only through the services that encrypt with it."""
    from notify_cli.deploy_access import derive_access

    template = deploy_templates.cloudformation()
    resources = template["Resources"]
    functions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    assert functions
    key = {"Fn::GetAtt": ["DataKey", "Arn"]}
    direct_of: dict[str, bool] = {}
    for name, function in functions.items():
        assert function["Properties"]["Environment"]["Variables"]["NOTIFY_KMS_KEY_ID"] == {"Ref": "DataKey"}, name
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        kms = [s for s in statements if any(str(a).startswith("kms:") for a in s["Action"])]
        if not kms:
            continue
        assert all(s["Resource"] == key and "Condition" in s for s in kms), name  # never unconditioned
        via = [s for s in kms if "kms:ViaService" in s["Condition"].get("StringEquals", {})]
        direct = [s for s in kms if s not in via]
        assert len(via) == 1, name
        services = {v["Fn::Sub"].split(".")[0] for v in via[0]["Condition"]["StringEquals"]["kms:ViaService"]}
        assert "dynamodb" in services, name
        if direct:
            assert direct == [{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": key,
                               "Condition": {"Null": {"kms:EncryptionContext:purpose": "false"}}}], name
        handler = function["Properties"]["ImageConfig"]["Command"][0].rpartition(".")[0]
        assert bool(direct) == derive_access(handler).reaches_keys, name
        direct_of[name] = bool(direct)
    # the edge that every request crosses holds no key; every function that opens users or signs links does
    assert direct_of["AuthorizerFunction"] is False and direct_of["CaptureEventsFunction"] is False
    assert all(direct_of[f] for f in ("TrackClickFunction", "UserPreferencesFunction", "DeliverNotificationsFunction"))
    pods = resources["DagsterPodRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert any(s.get("Condition", {}).get("Null") for s in pods)  # Dagster runs every stage
    assert template["Outputs"]["DataKeyArn"]["Value"] == {"Fn::GetAtt": ["DataKey", "Arn"]}


def test_cloudformation_passes_sam_validate_lint() -> None:
    """`sam validate --lint` (aws-sam-cli, in its own tools venv made by `make setup`) works offline."""
    import os

    sam = deploy_templates.ROOT / ".venv-tools" / "bin" / "sam"
    assert sam.exists(), "aws-sam-cli missing: run `make setup`"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "eu-west-1",
           "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}
    check = subprocess.run([str(sam), "validate", "--lint", "-t", str(deploy_templates.CFN_PATH)],
                           capture_output=True, text=True, timeout=600, env=env)
    assert check.returncode == 0 and "is a valid SAM Template" in check.stdout + check.stderr, \
        check.stdout + check.stderr
