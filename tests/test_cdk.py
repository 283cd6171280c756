"""The CDK app synthesised in-process, and the container images' contracts.

One synth per module (about 10 s). It runs as `cdk synth` does with no AWS credentials:
cdk.json's context plus cdk.context.json, the offline placeholder account, no Docker. The
Lambda layer is pip-installed once per requirements hash into build/lambda-layer and reused,
so only the very first run on a machine needs the package index.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "cdk"))

from esml_cdk import build  # noqa: E402
from esml_cdk.bundling import ensure_layer_packages, layer_cache_key  # noqa: E402
from esml_cdk.metric_names import DAILY_LOSS_GATE, EMITTERS, NAMESPACE  # noqa: E402
from esml_cdk.retraining_flow import JOB_METRICS, FlowTargets, retraining_definition  # noqa: E402
from esml_cdk.settings import ALARM_EMAIL_PLACEHOLDER, Settings, SettingsError  # noqa: E402
from esml_cdk.stack import EsmlStack  # noqa: E402


def _load_training_entrypoint() -> Any:
    """containers/training is no package (the image runs the file), so load it by path."""
    path = REPO_ROOT / "containers" / "training" / "entrypoint.py"
    spec = importlib.util.spec_from_file_location("esml_training_entrypoint", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


training_entrypoint = _load_training_entrypoint()


@dataclass(frozen=True)
class Synth:
    stack: EsmlStack
    template: Template
    resources: dict[str, dict[str, Any]]
    assembly_dir: Path
    assets: dict[str, Any]

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)

    def asset_dir(self, asset_hash: str) -> Path:
        for kind in ("files", "dockerImages"):
            if asset_hash in self.assets[kind]:
                source = self.assets[kind][asset_hash]["source"]
                return self.assembly_dir / source.get("path", source.get("directory"))
        raise KeyError(asset_hash)


def cli_context() -> dict[str, Any]:
    """What the CDK CLI hands the app: cdk.json's context, then the cached lookups."""
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context.update(json.loads((REPO_ROOT / "cdk.context.json").read_text()))
    return context


def nag_findings(message: str) -> list[str]:
    """`rule construct-path` of each finding in the validation report a failed synth names."""
    match = re.search(r"found in: (\S+)", message)
    if match is None:
        return [message]
    report = json.loads(Path(match.group(1)).read_text())
    return [
        f"{v['ruleName']} {c['constructPath']}"
        for plugin in report["pluginReports"]
        for v in plugin["violations"]
        for c in v["violatingConstructs"]
    ]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The synth runs cdk-nag's AwsSolutions pack as a policy validation plugin: any
    unacknowledged finding fails it, and every test of this module with it."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(context=cli_context(), outdir=str(outdir), stack_traces=False)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CDK_DOCKER", "/bin/false")  # any attempt at Docker bundling fails
        stack = build(app, repo_root=REPO_ROOT, environ={})
        try:
            app.synth()
        except RuntimeError as e:
            findings = "\n".join(nag_findings(str(e)))
            pytest.fail(f"cdk-nag AwsSolutions findings without an acknowledgment:\n{findings}")
    template = Template.from_stack(stack)
    return Synth(
        stack=stack,
        template=template,
        resources=template.to_json()["Resources"],
        assembly_dir=outdir,
        assets=json.loads((outdir / f"{stack.artifact_id}.assets.json").read_text()),
    )


def refs(value: Any) -> set[str]:
    """Logical ids a template value points at (Ref and Fn::GetAtt, at any depth)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value:
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            found.add(value["Fn::GetAtt"][0])
        for inner in value.values():
            found |= refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= refs(inner)
    return found


def statements_of(s: Synth, role_id: str) -> list[dict[str, Any]]:
    """Every statement of every policy attached to a role, inline or separate."""
    statements: list[dict[str, Any]] = []
    for resource in s.resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in props["Roles"]:
            statements += props["PolicyDocument"]["Statement"]
    for policy in s.resources[role_id]["Properties"].get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    return statements


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else action


def resources(statement: dict[str, Any]) -> list[Any]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def granted(s: Synth, role_id: str, prefix: str) -> set[str]:
    """Logical ids the role may act on with actions starting with `prefix`."""
    return {
        target
        for statement in statements_of(s, role_id)
        if statement["Effect"] == "Allow" and any(a.startswith(prefix) for a in actions(statement))
        for target in refs(statement["Resource"])
    }


def table_actions(s: Synth, role_id: str) -> dict[str, set[str]]:
    """Logical id -> the dynamodb actions the role is allowed on it (merged statements
    split apart, CloudFormation pseudo references left out)."""
    allowed: dict[str, set[str]] = {}
    for statement in statements_of(s, role_id):
        dynamo = {a for a in actions(statement) if a.startswith("dynamodb:")}
        if statement["Effect"] != "Allow" or not dynamo:
            continue
        for target in refs(statement["Resource"]):
            if not target.startswith("AWS::"):
                allowed.setdefault(target, set()).update(dynamo)
    return allowed


def role_of_function(s: Synth, function_id: str) -> str:
    return s.resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]


def join_literal(value: Any) -> str:
    """A Fn::Join rendered as text, each token replaced by its logical id in angle brackets."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(join_literal(p) for p in parts)
    if isinstance(value.get("Fn::Sub"), str):
        return value["Fn::Sub"]
    return "<" + ",".join(sorted(refs(value))) + ">"


def only(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert len(resources) == 1, sorted(resources)
    return next(iter(resources.items()))


# ---------------------------------------------------------------- data


@pytest.mark.parametrize(
    ("table", "key", "retained"),
    [("orders", "client_id", True), ("fills", "fill_id", True),
     ("risk_state", "account", True), ("idempotency", "id", False)],
)  # fmt: skip
def test_tables_have_their_keys_on_demand_billing_and_recovery(
    synth: Synth, table: str, key: str, retained: bool
) -> None:
    resource = synth.resources[synth.logical_id(getattr(synth.stack.data, table))]
    props = resource["Properties"]
    assert props["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": key, "AttributeType": "S"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert resource["DeletionPolicy"] == ("Retain" if retained else "Delete")
    assert props.get("DeletionProtectionEnabled", False) is retained


def test_five_tables_and_only_idempotency_expires(synth: Synth) -> None:
    """Orders, fills, risk state, idempotency, and the retraining runs."""
    synth.template.resource_count_is("AWS::DynamoDB::Table", 5)
    runs = synth.resources[synth.logical_id(synth.stack.retraining.runs)]
    assert runs["Properties"]["KeySchema"] == [{"AttributeName": "run_id", "KeyType": "HASH"}]
    assert runs["DeletionPolicy"] == "Retain"
    with_ttl = synth.template.find_resources(
        "AWS::DynamoDB::Table", {"Properties": {"TimeToLiveSpecification": Match.any_value()}}
    )
    table_id, table = only(with_ttl)
    assert table_id == synth.logical_id(synth.stack.data.idempotency)
    assert table["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expiration",
        "Enabled": True,
    }


def test_model_bucket_is_private_versioned_encrypted_and_tls_only(synth: Synth) -> None:
    bucket_id = synth.logical_id(synth.stack.data.model_bucket)
    bucket = synth.resources[bucket_id]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    _, policy = only(
        synth.template.find_resources(
            "AWS::S3::BucketPolicy", {"Properties": {"Bucket": {"Ref": bucket_id}}}
        )
    )
    denies_plain_http = [
        st
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if st["Effect"] == "Deny"
        and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert denies_plain_http and denies_plain_http[0]["Principal"] == {"AWS": "*"}


# ---------------------------------------------------------------- webhook API and Lambdas


def test_post_webhook_is_a_throttled_proxy_to_the_webhook_function(synth: Synth) -> None:
    webhook_id = synth.logical_id(synth.stack.functions.webhook)
    _, method = only(synth.template.find_resources("AWS::ApiGateway::Method"))
    props = method["Properties"]
    assert props["HttpMethod"] == "POST"
    resource = synth.resources[props["ResourceId"]["Ref"]]
    assert resource["Properties"]["PathPart"] == "webhook"
    assert props["Integration"]["Type"] == "AWS_PROXY"
    assert refs(props["Integration"]["Uri"]) == {webhook_id}
    _, stage = only(synth.template.find_resources("AWS::ApiGateway::Stage"))
    (settings,) = stage["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    permissions = synth.template.find_resources(
        "AWS::Lambda::Permission", {"Properties": {"Principal": "apigateway.amazonaws.com"}}
    ).values()
    assert permissions  # the deployed stage, and the console's test-invoke stage
    for permission in permissions:
        assert refs(permission["Properties"]["FunctionName"]) == {webhook_id}
        assert join_literal(permission["Properties"]["SourceArn"]).endswith("/POST/webhook")


def test_api_validates_logs_traces_and_the_passphrase_rotates(synth: Synth) -> None:
    _, method = only(synth.template.find_resources("AWS::ApiGateway::Method"))
    props = method["Properties"]
    validator = synth.resources[props["RequestValidatorId"]["Ref"]]["Properties"]
    assert validator["ValidateRequestBody"] is True
    model = synth.resources[props["RequestModels"]["application/json"]["Ref"]]["Properties"]
    assert model["Schema"]["required"] == ["passphrase"]
    _, stage = only(synth.template.find_resources("AWS::ApiGateway::Stage"))
    stage_props = stage["Properties"]
    assert stage_props["TracingEnabled"] is True
    access_log = stage_props["AccessLogSetting"]
    assert refs(access_log["DestinationArn"]) == {
        synth.logical_id(synth.stack.webhook_api.access_logs)
    }
    assert "$context.status" in access_log["Format"]
    (settings,) = stage_props["MethodSettings"]
    assert settings["LoggingLevel"] == "ERROR" and settings["DataTraceEnabled"] is False
    _, rotation = only(synth.template.find_resources("AWS::SecretsManager::RotationSchedule"))
    rotation_props = rotation["Properties"]
    assert refs(rotation_props["SecretId"]) == {
        synth.logical_id(synth.stack.functions.passphrase_secret)
    }
    assert rotation_props["RotationRules"]["ScheduleExpression"] == "rate(180 days)"
    assert refs(rotation_props["RotationLambdaARN"]) == {
        synth.logical_id(synth.stack.functions.rotation)
    }
    _, flow_log = only(synth.template.find_resources("AWS::EC2::FlowLog"))
    assert flow_log["Properties"]["TrafficType"] == "REJECT"


def test_functions_carry_the_contracted_environment(synth: Synth) -> None:
    s, f, d = synth, synth.stack.functions, synth.stack.data
    expected = {
        f.webhook: {
            "SECRET_ARN": {"Ref": s.logical_id(f.passphrase_secret)},
            "IDEMPOTENCY_TABLE": {"Ref": s.logical_id(d.idempotency)},
            "RISK_FUNCTION_NAME": {"Ref": s.logical_id(f.risk)},
            "ALERT_MAX_AGE_S": "60",
            "ALERT_MAX_SKEW_S": "5",
            "POWERTOOLS_SERVICE_NAME": "esml-webhook",
            "POWERTOOLS_METRICS_NAMESPACE": "esml",
        },
        f.risk: {
            "RISK_STATE_TABLE": {"Ref": s.logical_id(d.risk_state)},
            "ROUTER_FUNCTION_NAME": {"Ref": s.logical_id(f.router)},
            "ALERT_MIN_CONFIDENCE": "0.87",
            "POWERTOOLS_SERVICE_NAME": "esml-risk",
            "POWERTOOLS_METRICS_NAMESPACE": "esml",
        },
        f.router: {
            "ORDERS_TABLE": {"Ref": s.logical_id(d.orders)},
            "FILLS_TABLE": {"Ref": s.logical_id(d.fills)},
            "RISK_STATE_TABLE": {"Ref": s.logical_id(d.risk_state)},
            "TRADOVATE_SECRET_ARN": {"Ref": s.logical_id(f.tradovate_secret)},
            "POWERTOOLS_SERVICE_NAME": "esml-router",
            "POWERTOOLS_METRICS_NAMESPACE": "esml",
        },
    }
    layer_id = s.logical_id(f.layer)
    for function, variables in expected.items():
        props = s.resources[s.logical_id(function)]["Properties"]
        assert props["Environment"]["Variables"] == variables
        assert props["Runtime"] == "python3.14"
        assert props["Handler"] == "handler.lambda_handler"
        assert props["Layers"] == [{"Ref": layer_id}]


def test_passphrase_is_generated_and_tradovate_secret_is_kept(synth: Synth) -> None:
    functions = synth.stack.functions
    passphrase = synth.resources[synth.logical_id(functions.passphrase_secret)]
    generator = passphrase["Properties"]["GenerateSecretString"]
    assert generator["GenerateStringKey"] == "passphrase"
    assert json.loads(generator["SecretStringTemplate"]) == {}
    tradovate = synth.resources[synth.logical_id(functions.tradovate_secret)]
    assert tradovate["DeletionPolicy"] == "Retain"
    template = json.loads(tradovate["Properties"]["GenerateSecretString"]["SecretStringTemplate"])
    generated = tradovate["Properties"]["GenerateSecretString"]["GenerateStringKey"]
    assert set(template) | {generated} == {
        "name", "password", "appId", "appVersion", "cid", "sec", "deviceId", "env"
    }  # fmt: skip
    assert template["env"] == "demo"


def test_each_function_may_touch_only_its_own_resources(synth: Synth) -> None:
    """Least privilege, and invocation points down the chain: webhook -> risk -> router."""
    s, f, d = synth, synth.stack.functions, synth.stack.data
    webhook, risk, router = (s.logical_id(fn) for fn in (f.webhook, f.risk, f.router))
    webhook_role, risk_role, router_role = (role_of_function(s, i) for i in (webhook, risk, router))

    assert granted(s, webhook_role, "lambda:InvokeFunction") == {risk}
    assert granted(s, risk_role, "lambda:InvokeFunction") == {router}
    assert granted(s, router_role, "lambda:") == set()

    assert granted(s, webhook_role, "dynamodb:") == {s.logical_id(d.idempotency)}
    assert table_actions(s, risk_role) == {
        s.logical_id(d.risk_state): {"dynamodb:GetItem", "dynamodb:PutItem"}
    }
    # The router: claims and updates orders; reads which fills it has and writes each new
    # fill's row with the account item (one TransactWriteItems: PutItem on each table).
    assert table_actions(s, router_role) == {
        s.logical_id(d.orders): {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        s.logical_id(d.fills): {"dynamodb:BatchGetItem", "dynamodb:PutItem"},
        s.logical_id(d.risk_state): {"dynamodb:GetItem", "dynamodb:PutItem"},
    }

    assert granted(s, webhook_role, "secretsmanager:") == {s.logical_id(f.passphrase_secret)}
    assert granted(s, risk_role, "secretsmanager:") == set()
    assert granted(s, router_role, "secretsmanager:") == {s.logical_id(f.tradovate_secret)}


def test_router_stops_before_risk_gives_up_and_before_its_reservations_are_released(
    synth: Synth,
) -> None:
    """Risk reads the router's answer for 60 s (lambdas/risk/handler.py); a sync leaves a
    reservation alone for IN_FLIGHT_S after it was made: a router must be over by then."""
    from esml.decision.broker_sync import IN_FLIGHT_S

    f = synth.stack.functions
    timeout = {fn: synth.resources[synth.logical_id(fn)]["Properties"]["Timeout"]
               for fn in (f.webhook, f.risk, f.router)}  # fmt: skip
    assert timeout[f.router] < 60 and timeout[f.router] < IN_FLIGHT_S
    assert timeout[f.router] < timeout[f.risk] < timeout[f.webhook] < 29  # API Gateway's limit


def test_router_syncs_the_account_every_minute(synth: Synth) -> None:
    from lambdas.messages import SyncRequest

    router_id = synth.logical_id(synth.stack.functions.router)
    rule_id = synth.logical_id(synth.stack.functions.sync_schedule)
    rule = synth.resources[rule_id]["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert refs(target["Arn"]) == {router_id}
    assert json.loads(target["Input"]) == {"op": "sync"}
    assert SyncRequest.model_validate(json.loads(target["Input"])).op == "sync"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0
    permissions = synth.template.find_resources(
        "AWS::Lambda::Permission", {"Properties": {"Principal": "events.amazonaws.com"}}
    ).values()
    (permission,) = [p for p in permissions if refs(p["Properties"]["FunctionName"]) == {router_id}]
    assert refs(permission["Properties"]["SourceArn"]) == {rule_id}


def test_chosen_settings_reach_the_functions_and_one_config_reaches_risk_and_router(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """esml:esmlConfig and the alert keys, as a deploy with them set would synthesise them
    (the order path alone, in a stack of its own)."""
    from esml_cdk.data import DataStore
    from esml_cdk.order_functions import OrderFunctions

    monkeypatch.setenv("CDK_DOCKER", "/bin/false")
    context = {**OFFLINE, "esml:esmlConfig": {"risk": {"max_position": 2}},
               "esml:alertMaxAgeS": 30, "esml:alertMaxSkewS": "2.5",
               "esml:alertMinConfidence": 0.9}  # fmt: skip
    settings = Settings.from_context(context_of(context), {})
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Probe", env=cdk.Environment(account=settings.account,
                                                         region=settings.region))  # fmt: skip
    f = OrderFunctions(
        stack, "OrderPath", repo_root=REPO_ROOT, data=DataStore(stack, "Data"), settings=settings
    )
    resources = Template.from_stack(stack).to_json()["Resources"]

    def env(fn: Any) -> dict[str, Any]:
        logical_id = stack.get_logical_id(fn.node.default_child)
        return resources[logical_id]["Properties"]["Environment"]["Variables"]

    config = '{"risk":{"max_position":2}}'
    assert env(f.risk)["ESML_CONFIG"] == env(f.router)["ESML_CONFIG"] == config
    assert "ESML_CONFIG" not in env(f.webhook)
    assert (env(f.webhook)["ALERT_MAX_AGE_S"], env(f.webhook)["ALERT_MAX_SKEW_S"]) == ("30", "2.5")
    assert env(f.risk)["ALERT_MIN_CONFIDENCE"] == "0.9"


def test_function_assets_hold_handler_esml_and_lambdas_without_caches(synth: Synth) -> None:
    for folder, function in [("webhook", synth.stack.functions.webhook),
                             ("risk", synth.stack.functions.risk),
                             ("router", synth.stack.functions.router)]:  # fmt: skip
        code = synth.resources[synth.logical_id(function)]["Properties"]["Code"]
        asset = synth.asset_dir(code["S3Key"].removesuffix(".zip"))
        handler = REPO_ROOT / "lambdas" / folder / "handler.py"
        assert (asset / "handler.py").read_bytes() == handler.read_bytes()
        assert (asset / "esml" / "__init__.py").is_file()
        assert (asset / "lambdas" / "__init__.py").is_file()
        assert not [p for p in asset.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]


def test_layer_holds_linux_wheels_for_python_3_14(synth: Synth) -> None:
    layer = synth.resources[synth.logical_id(synth.stack.functions.layer)]["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.14"]
    site = synth.asset_dir(layer["Content"]["S3Key"].removesuffix(".zip")) / "python"
    assert (site / "aws_lambda_powertools").is_dir()
    assert (site / "requests").is_dir()
    binaries = list((site / "pydantic_core").glob("*.so"))
    assert binaries and all("cpython-314-x86_64-linux-gnu" in b.name for b in binaries)


def test_layer_cache_is_reused_without_pip(synth: Synth, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = REPO_ROOT / "lambdas" / "requirements.txt"
    cache_root = REPO_ROOT / "build" / "lambda-layer"
    assert (cache_root / layer_cache_key(requirements)).is_dir()  # built by the synth

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran although the layer was cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert ensure_layer_packages(requirements, cache_root) == cache_root / layer_cache_key(
        requirements
    )


def test_layer_cache_key_follows_the_requirements(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    second = tmp_path / "b.txt"
    first.write_text("requests==2.34.2\n")
    second.write_text("requests==2.34.1\n")
    assert layer_cache_key(first) != layer_cache_key(second)
    assert layer_cache_key(first) == layer_cache_key(first)


LAMBDA_RUNTIME_MODULES = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "six",
    "urllib3",
)
"""What the python3.14 Lambda runtime provides besides the standard library."""


@pytest.fixture(scope="module")
def lambda_runtime_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site-packages holding only the runtime's own modules (linked from this .venv)."""
    site = tmp_path_factory.mktemp("lambda-runtime")
    for name in LAMBDA_RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (site / source.name).symlink_to(source)
    return site


@pytest.mark.skipif(sys.version_info[:2] != (3, 14), reason="the layer holds CPython 3.14 wheels")
@pytest.mark.parametrize("function", ["webhook", "risk", "router", "retrain_verdict"])
def test_handler_imports_with_only_the_layer_and_the_lambda_runtime(
    synth: Synth, lambda_runtime_site: Path, function: str
) -> None:
    """Import each handler with the runtime's search path: the asset, the layer, then the
    runtime's boto3; no site-packages of this machine. A failure names a module missing
    from lambdas/requirements.txt."""
    fn = (
        synth.stack.retraining.verdict
        if function == "retrain_verdict"
        else getattr(synth.stack.functions, function)
    )
    code = synth.resources[synth.logical_id(fn)]["Properties"]["Code"]
    layer = synth.resources[synth.logical_id(synth.stack.functions.layer)]["Properties"]
    asset = synth.asset_dir(code["S3Key"].removesuffix(".zip"))
    site = synth.asset_dir(layer["Content"]["S3Key"].removesuffix(".zip")) / "python"
    probe = (
        "import sys\n"
        f"sys.path[:0] = [{str(asset)!r}, {str(site)!r}]\n"
        f"sys.path.append({str(lambda_runtime_site)!r})\n"
        "import handler\n"
        "assert callable(handler.lambda_handler)\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_DEFAULT_REGION": "us-east-1",
        "HOME": str(lambda_runtime_site),
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe], env=env, cwd=asset, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------- trading service


def test_tick_engine_runs_as_a_single_fargate_task(synth: Synth) -> None:
    service_id = synth.logical_id(synth.stack.trading.service)
    props = synth.resources[service_id]["Properties"]
    assert props["DesiredCount"] == 1
    assert props["LaunchType"] == "FARGATE"
    deployment = props["DeploymentConfiguration"]
    assert deployment["MinimumHealthyPercent"] == 0
    assert deployment["MaximumPercent"] == 100
    assert props["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "ENABLED"
    synth.template.resource_count_is("AWS::EC2::NatGateway", 0)
    (sg_ref,) = props["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    security_group = synth.resources[sg_ref["Fn::GetAtt"][0]]["Properties"]
    assert "SecurityGroupIngress" not in security_group


def test_tick_engine_image_is_built_from_its_dockerfile(synth: Synth) -> None:
    task_id = synth.resources[synth.logical_id(synth.stack.trading.service)]["Properties"][
        "TaskDefinition"
    ]["Ref"]
    (container,) = synth.resources[task_id]["Properties"]["ContainerDefinitions"]
    image_hash = container["Image"]["Fn::Sub"].rsplit(":", 1)[1]
    image = synth.assets["dockerImages"][image_hash]["source"]
    assert image["dockerFile"] == "containers/tick_engine/Dockerfile"
    assert image["platform"] == "linux/amd64"
    d, f = synth.stack.data, synth.stack.functions
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    # The resources it reaches (it reserves on the shared account in process: no risk
    # function), and the prefixes and metrics namespace the rest of the stack agrees on.
    assert {k: v for k, v in environment.items() if isinstance(v, dict)} == {
        "ORDERS_TABLE": {"Ref": synth.logical_id(d.orders)},
        "FILLS_TABLE": {"Ref": synth.logical_id(d.fills)},
        "RISK_STATE_TABLE": {"Ref": synth.logical_id(d.risk_state)},
        "MODEL_BUCKET": {"Ref": synth.logical_id(d.model_bucket)},
        "TRADOVATE_SECRET_ARN": {"Ref": synth.logical_id(f.tradovate_secret)},
    }
    assert environment["MODEL_PREFIX"] == "models/" and environment["DATA_PREFIX"] == "data/"
    assert environment["ESML_METRICS_NAMESPACE"] == NAMESPACE
    log_group = synth.resources[container["LogConfiguration"]["Options"]["awslogs-group"]["Ref"]]
    assert log_group["Properties"]["RetentionInDays"] > 0


def test_tick_engine_task_role_reaches_models_captures_and_tables_only(synth: Synth) -> None:
    task_id = synth.resources[synth.logical_id(synth.stack.trading.service)]["Properties"][
        "TaskDefinition"
    ]["Ref"]
    role = synth.resources[task_id]["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    s, d = synth, synth.stack.data
    assert granted(s, role, "lambda:") == set()
    assert granted(s, role, "dynamodb:") == {
        s.logical_id(d.orders), s.logical_id(d.fills), s.logical_id(d.risk_state)
    }  # fmt: skip
    s3_statements = [st for st in statements_of(s, role) if actions(st)[0].startswith("s3:")]
    bucket = f"<{s.logical_id(d.model_bucket)}>"
    writes = {
        join_literal(r)
        for st in s3_statements
        if any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for a in actions(st))
        for r in resources(st)
    }
    assert writes == {f"{bucket}/data/live/*"}  # the captured market data, nothing else
    assert not any(a.startswith("s3:Delete") for st in s3_statements for a in actions(st))
    objects = {join_literal(r) for st in s3_statements for r in resources(st)}
    assert f"{bucket}/models/*" in objects


# ---------------------------------------------------------------- retraining


@pytest.fixture(scope="module")
def definition(synth: Synth) -> dict[str, Any]:
    machine = synth.resources[synth.logical_id(synth.stack.retraining.state_machine)]
    return json.loads(join_literal(machine["Properties"]["DefinitionString"]))


def job_role(synth: Synth, state: dict[str, Any]) -> str:
    return state["Parameters"]["RoleArn"].strip("<>").split(",")[0]


def test_each_job_runs_to_completion_on_the_training_image(
    synth: Synth, definition: dict[str, Any]
) -> None:
    states = definition["States"]
    bucket = f"<{synth.logical_id(synth.stack.data.model_bucket)}>"
    image_hash = states["Train"]["Parameters"]["AlgorithmSpecification"]["TrainingImage"]
    image = synth.assets["dockerImages"][image_hash.rsplit(":", 1)[1]]["source"]
    assert image["dockerFile"] == "containers/training/Dockerfile"
    expected = {
        "Train": ("train", "retraining/challengers/", {"data": f"s3://{bucket}/data/"}),
        "Evaluate": ("evaluate", "retraining/evaluations/",
                     {"data": f"s3://{bucket}/data/", "challenger": "$.train.modelArtifacts"}),
        "Promote": ("promote", "retraining/promotions/",
                    {"challenger": "$.train.modelArtifacts"}),
    }  # fmt: skip
    for name, (step, output, channels) in expected.items():
        state = states[name]
        assert state["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
        params = state["Parameters"]
        assert params["HyperParameters"]["esml_step"] == step
        assert params["AlgorithmSpecification"]["TrainingImage"] == image_hash
        assert params["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/{output}"
        assert "States.UUID()" not in params["TrainingJobName.$"]  # named by the run's id
        assert f"esml-{step}-" in params["TrainingJobName.$"]
        seen = {
            c["ChannelName"]: c["DataSource"]["S3DataSource"].get("S3Uri")
            or c["DataSource"]["S3DataSource"]["S3Uri.$"]
            for c in params["InputDataConfig"]
        }
        assert seen == channels
        metrics = params["AlgorithmSpecification"]["MetricDefinitions"]
        assert [m["Name"] for m in metrics] == JOB_METRICS[step]
        assert state["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    evaluate = states["Evaluate"]["Parameters"]["HyperParameters"]
    assert evaluate["promotion_metrics"] == "log_loss,brier"
    assert float(evaluate["margin_vs_champion"]) == 0.0


def test_the_choice_promotes_only_on_the_verdict_and_every_path_is_recorded(
    definition: dict[str, Any],
) -> None:
    states = definition["States"]
    assert definition["StartAt"] == "Name the run"
    verdict = states["Verdict"]
    assert verdict["Resource"].endswith(":states:::lambda:invoke")
    choice = states[verdict["Next"]]
    (promote,) = choice["Choices"]
    assert promote == {
        "Variable": "$.verdict.decision", "StringEquals": "promote", "Next": "Promote"
    }  # fmt: skip
    assert choice["Default"] == "Keep the challenger as rejected"
    catches = {states[n]["Catch"][0]["Next"] for n in ("Train", "Evaluate", "Verdict", "Promote")}
    assert catches == {"Training failed", "Evaluation failed", "Promotion failed"}
    for end in (*catches, "Promoted", "Keep the challenger as rejected"):
        assert states[end]["Next"] == "Record the run"
    assert states["Record the run"]["Resource"].endswith(":states:::dynamodb:putItem")
    assert states["Publish the outcome"]["Resource"].endswith(
        ":states:::aws-sdk:cloudwatch:putMetricData"
    )
    assert states[states["Run succeeded?"]["Default"]]["Type"] == "Fail"


def test_both_variants_come_from_one_definition() -> None:
    """The tested poll variant has every state of the deployed one, with the same requests,
    the same Choice and Catches: only each `.sync` task became create, wait, describe."""
    graphs = {}
    for variant in ("sync", "poll"):
        stack = cdk.Stack(cdk.App(), "Variant")
        targets = FlowTargets(
            bucket="b", training_image="i", train_role_arn="t", evaluate_role_arn="e",
            promote_role_arn="p", verdict_function_arn="v", runs_table="r",
        )  # fmt: skip
        chain = retraining_definition(stack, targets, variant)  # type: ignore[arg-type]
        graphs[variant] = sfn.StateGraph(chain.start_state, variant).to_graph_json()["States"]
    sync, poll = graphs["sync"], graphs["poll"]
    assert set(sync) < set(poll)
    for name, state in sync.items():
        twin = poll[name]
        if state.get("Resource", "").endswith(".sync"):
            assert twin["Resource"].endswith(":aws-sdk:sagemaker:createTrainingJob")
            assert twin["Parameters"] == state["Parameters"]
            assert twin["Catch"] == state["Catch"]
        else:
            assert twin == state, name


def test_only_the_promote_job_writes_the_champion(synth: Synth, definition: dict[str, Any]) -> None:
    bucket = f"<{synth.logical_id(synth.stack.data.model_bucket)}>"
    writes: dict[str, set[str]] = {}
    reads: dict[str, set[str]] = {}
    for name in ("Train", "Evaluate", "Promote"):
        role = job_role(synth, definition["States"][name])
        principal = synth.resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert principal[0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
        assert not synth.resources[role]["Properties"].get("ManagedPolicyArns")
        for st in statements_of(synth, role):
            acts = actions(st)
            targets = {join_literal(r) for r in (st["Resource"] if isinstance(st["Resource"], list)
                                                 else [st["Resource"]])}  # fmt: skip
            if "s3:PutObject" in acts:
                writes.setdefault(name, set()).update(targets)
            if "s3:GetObject" in acts:
                reads.setdefault(name, set()).update(targets)
            assert not any(a.startswith("s3:Delete") for a in acts)
    assert writes == {
        "Train": {f"{bucket}/retraining/challengers/*"},
        "Evaluate": {f"{bucket}/retraining/evaluations/*"},
        "Promote": {f"{bucket}/retraining/promotions/*", f"{bucket}/models/*"},
    }
    assert reads["Train"] == {f"{bucket}/data/*"}
    assert f"{bucket}/models/*" in reads["Evaluate"]
    # SageMaker lists each input channel's prefix before downloading it
    for name in ("Train", "Evaluate", "Promote"):
        state = definition["States"][name]
        role = job_role(synth, state)
        listable = [
            st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
            for st in statements_of(synth, role)
            if actions(st) == ["s3:ListBucket"]
        ]
        for channel in state["Parameters"]["InputDataConfig"]:
            source = channel["DataSource"]["S3DataSource"]
            prefix = {"data": "data/", "challenger": "retraining/challengers/"}[
                channel["ChannelName"]
            ]
            assert None in listable or any(f"{prefix}*" in p for p in listable), (name, source)
    # A missing models/champion (the first run) must answer 404, not 403: S3 does so only
    # to a role that may list the bucket, with no prefix condition.
    evaluate_role = job_role(synth, definition["States"]["Evaluate"])
    assert any(
        actions(st) == ["s3:ListBucket"] and "Condition" not in st
        for st in statements_of(synth, evaluate_role)
    )
    # nobody else in the stack may write the champion
    champion_writers = {
        role_id
        for role_id, r in synth.resources.items()
        if r["Type"] == "AWS::IAM::Role"
        for st in statements_of(synth, role_id)
        if st["Effect"] == "Allow"
        and any(a.startswith(("s3:Put", "s3:Delete", "s3:*")) for a in actions(st))
        and any("/models/" in join_literal(r) for r in (st["Resource"] if isinstance(
            st["Resource"], list) else [st["Resource"]]))
    }  # fmt: skip
    assert champion_writers == {job_role(synth, definition["States"]["Promote"])}


def test_state_machine_logs_everything_and_is_traced(synth: Synth) -> None:
    props = synth.resources[synth.logical_id(synth.stack.retraining.state_machine)]["Properties"]
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert props["TracingConfiguration"] == {"Enabled": True}


def test_schedule_and_drift_alarm_start_the_state_machine(synth: Synth) -> None:
    machine_id = synth.logical_id(synth.stack.retraining.state_machine)
    rules = synth.template.find_resources("AWS::Events::Rule")
    starting = {
        rule_id: rule["Properties"]
        for rule_id, rule in rules.items()
        if any(t["Arn"] == {"Ref": machine_id} for t in rule["Properties"]["Targets"])
    }
    weekly = synth.resources[synth.logical_id(synth.stack.retraining.schedule)]["Properties"]
    assert weekly["ScheduleExpression"] == "cron(0 12 ? * SUN *)"
    drift = synth.resources[synth.logical_id(synth.stack.drift_trigger)]["Properties"]
    assert len(starting) == 2
    pattern = drift["EventPattern"]
    assert pattern["detail-type"] == ["CloudWatch Alarm State Change"]
    assert pattern["detail"] == {"state": {"value": ["ALARM"]}}
    assert refs(pattern["resources"]) == {synth.logical_id(synth.stack.monitoring.drift_alarm)}
    for props in starting.values():
        (target,) = props["Targets"]
        assert json.loads(target["Input"])["trigger"] in ("weekly-schedule", "drift-alarm")
        events_role = target["RoleArn"]["Fn::GetAtt"][0]
        assert granted(synth, events_role, "states:StartExecution") == {machine_id}


# ---------------------------------------------------------------- monitoring


def alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    props = alarm["Properties"]
    if "MetricName" in props:
        return [props]
    return [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]


def test_alarms_watch_the_api_functions_service_and_retraining(synth: Synth) -> None:
    alarms = synth.template.find_resources("AWS::CloudWatch::Alarm")
    topic = {"Ref": synth.logical_id(synth.stack.monitoring.topic)}
    assert all(a["Properties"]["AlarmActions"] == [topic] for a in alarms.values())
    watched: dict[tuple[str, str], set[str]] = {}
    for alarm in alarms.values():
        for metric in alarm_metrics(alarm):
            key = (metric["Namespace"], metric["MetricName"])
            watched.setdefault(key, set()).update(refs(metric.get("Dimensions", [])))
    f = synth.stack.functions
    assert watched[("AWS/Lambda", "Errors")] == {
        synth.logical_id(fn) for fn in (f.webhook, f.risk, f.router)
    }
    assert watched[("AWS/ApiGateway", "5XXError")] == set()  # keyed by the API's name
    assert (
        synth.logical_id(synth.stack.trading.service)
        in watched[("ECS/ContainerInsights", "RunningTaskCount")]
    )
    machine = synth.logical_id(synth.stack.retraining.state_machine)
    assert watched[("AWS/States", "ExecutionsFailed")] == {machine}
    (not_running,) = [
        a for a in alarms.values()
        if any(m["MetricName"] == "RunningTaskCount" for m in alarm_metrics(a))
    ]  # fmt: skip
    props = not_running["Properties"]
    assert props["ComparisonOperator"] == "LessThanThreshold" and props["Threshold"] == 1
    assert props["TreatMissingData"] == "breaching"


def esml_alarm_metrics(synth: Synth) -> dict[str, set[tuple[str, ...]]]:
    """Metric name -> the dimension sets esml's alarms watch it with (namespace esml)."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for alarm in synth.template.find_resources("AWS::CloudWatch::Alarm").values():
        for metric in alarm_metrics(alarm):
            if metric["Namespace"] == NAMESPACE:
                dims = tuple(sorted(f"{d['Name']}={d['Value']}" for d in metric["Dimensions"]))
                found.setdefault(metric["MetricName"], set()).add(dims)
    return found


def test_alarms_watch_esml_metrics_by_the_agreed_names_and_services(synth: Synth) -> None:
    watched = esml_alarm_metrics(synth)
    for name, services in EMITTERS.items():
        assert watched[name] == {(f"service={s}",) for s in services}, name
    assert watched["RetrainingRun"] == {
        (f"outcome={o}", "service=esml-retraining")
        for o in ("training_failed", "evaluation_failed", "promotion_failed")
    }
    assert watched["ProposalRejected"] == {("gate=daily_loss", "service=esml-risk")}
    assert watched["DriftLogLossExcess"] == {("service=esml-drift",)}
    assert watched["DriftCalibrationError"] == {("service=esml-drift",)}
    drift = synth.resources[synth.logical_id(synth.stack.monitoring.drift_alarm)]["Properties"]
    (expression,) = [m["Expression"] for m in drift["Metrics"] if "Expression" in m]
    settings = synth.stack.settings
    assert f"excess > {settings.drift_max_log_loss_excess}" in expression
    assert f"calibration > {settings.drift_max_calibration_error}" in expression


def test_daily_loss_alarm_names_the_risk_gate() -> None:
    from esml.decision.gates import DailyLossGate

    assert DailyLossGate(1.0).name == DAILY_LOSS_GATE


def test_tick_engine_alarms_reach_the_topic_and_the_dashboard(synth: Synth) -> None:
    """The engine's alarms (defined with its service) watch what esml.engine.emf emits."""
    from esml.engine.emf import COUNTS, UNITS

    topic = {"Ref": synth.logical_id(synth.stack.monitoring.topic)}
    engine_alarms = synth.stack.trading.alarms
    assert engine_alarms
    for alarm in engine_alarms.values():
        props = synth.resources[synth.logical_id(alarm)]["Properties"]
        assert props["AlarmActions"] == [topic] and props["OKActions"] == [topic]
        assert props["MetricName"] in (*COUNTS, *UNITS, "PositionMismatch")
        assert {d["Name"] for d in props["Dimensions"]} == {"Service", "Instrument"}


def test_alarms_reach_the_required_email_subscriber(synth: Synth) -> None:
    _, subscription = only(synth.template.find_resources("AWS::SNS::Subscription"))
    props = subscription["Properties"]
    assert props["Protocol"] == "email"
    assert props["Endpoint"] == ALARM_EMAIL_PLACEHOLDER  # cdk.json's, offline only
    assert refs(props["TopicArn"]) == {synth.logical_id(synth.stack.monitoring.topic)}


def test_api_5xx_alarm_names_the_webhook_api(synth: Synth) -> None:
    api_name = synth.resources[synth.logical_id(synth.stack.webhook_api.api)]["Properties"]["Name"]
    alarms = synth.template.find_resources(
        "AWS::CloudWatch::Alarm", {"Properties": {"MetricName": "5XXError"}}
    )
    _, alarm = only(alarms)
    assert alarm["Properties"]["Dimensions"] == [{"Name": "ApiName", "Value": api_name}]


def test_dashboard_shows_every_alarm_and_function(synth: Synth) -> None:
    _, dashboard = only(synth.template.find_resources("AWS::CloudWatch::Dashboard"))
    body = json.loads(join_literal(dashboard["Properties"]["DashboardBody"]))
    shown_alarms = {
        alarm.strip("<>")
        for widget in body["widgets"]
        for alarm in widget["properties"].get("alarms", [])
    }
    assert shown_alarms == set(synth.template.find_resources("AWS::CloudWatch::Alarm"))
    graphed = json.dumps(body["widgets"])
    f = synth.stack.functions
    for construct in (f.webhook, f.risk, f.router, synth.stack.retraining.state_machine):
        assert f"<{synth.logical_id(construct)}>" in graphed
    names = (*EMITTERS, "ProposalRejected", "RetrainingRun", "DriftLogLossExcess", "DataAge")
    for name in (*names, "DriftHitRate"):
        assert f'"{name}"' in graphed, name


# ---------------------------------------------------------------- template lint


def test_cdk_nag_fails_an_unacknowledged_wildcard_and_passes_an_acknowledged_one(
    tmp_path: Path,
) -> None:
    """The check the synth fixture relies on can fail: a wildcard policy in a probe stack."""
    from aws_cdk import aws_iam as iam
    from esml_cdk.nag import acknowledge

    outcomes = []
    for acknowledged in (False, True):
        app = cdk.App(outdir=str(tmp_path / str(acknowledged)))
        stack = cdk.Stack(app, "Probe")
        role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"]))
        if acknowledged:
            acknowledge(role, "AwsSolutions-IAM5", "Resource::*", "probe: a written reason")
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        try:
            app.synth()
            outcomes.append([])
        except RuntimeError as e:
            outcomes.append(nag_findings(str(e)))
    assert outcomes == [["AwsSolutions-IAM5[Resource::*] Probe/Role/DefaultPolicy/Resource"], []]


def test_cfn_lint_finds_no_errors(synth: Synth) -> None:
    from cfnlint.api import ManualArgs, lint

    template = (synth.assembly_dir / synth.stack.template_file).read_text()
    matches = lint(template, config=ManualArgs(regions=[synth.stack.region]))
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


# ---------------------------------------------------------------- settings


def context_of(values: dict[str, Any]) -> Any:
    return lambda key: values.get(key)


OFFLINE = {
    "esml:offlineAccount": "123456789012",
    "esml:offlineRegion": "us-east-1",
    "esml:alarmEmail": ALARM_EMAIL_PLACEHOLDER,
}


def test_alarm_email_is_required_and_the_placeholder_only_offline() -> None:
    with pytest.raises(SettingsError, match="esml:alarmEmail is required"):
        Settings.from_context(context_of({**OFFLINE, "esml:alarmEmail": None}), {})
    real = {"CDK_DEFAULT_ACCOUNT": "111111111111", "CDK_DEFAULT_REGION": "us-west-2"}
    with pytest.raises(SettingsError, match="still the placeholder"):
        Settings.from_context(context_of(OFFLINE), real)
    chosen = Settings.from_context(
        context_of({**OFFLINE, "esml:alarmEmail": "ops@example.com"}), real
    )
    assert chosen.alarm_email == "ops@example.com"


def test_promotion_and_drift_settings_are_read_and_checked() -> None:
    settings = Settings.from_context(
        context_of({**OFFLINE, "esml:promotionMetrics": "log_loss,accuracy",
                    "esml:marginVsChampion": "0.01", "esml:driftWindowHours": 48}), {}
    )  # fmt: skip
    assert settings.promotion_metrics == ("log_loss", "accuracy")
    assert settings.margin_vs_champion == 0.01
    assert settings.drift_window_hours == 48
    with pytest.raises(SettingsError, match="esml:promotionMetrics"):
        Settings.from_context(context_of({**OFFLINE, "esml:promotionMetrics": "sharpe"}), {})
    with pytest.raises(SettingsError, match="esml:driftMaxCalibrationError"):
        Settings.from_context(context_of({**OFFLINE, "esml:driftMaxCalibrationError": 2}), {})


def test_settings_prefer_explicit_context_then_credentials_then_offline() -> None:
    explicit = Settings.from_context(
        context_of(
            {
                **OFFLINE,
                "esml:account": "210987654321",
                "esml:region": "eu-west-1",
                "esml:alarmEmail": "ops@example.com",
            }
        ),
        {"CDK_DEFAULT_ACCOUNT": "111111111111", "CDK_DEFAULT_REGION": "us-west-2"},
    )
    assert (explicit.account, explicit.region, explicit.offline) == (
        "210987654321",
        "eu-west-1",
        False,
    )
    cli = Settings.from_context(
        context_of({**OFFLINE, "esml:alarmEmail": "ops@example.com"}),
        {"CDK_DEFAULT_ACCOUNT": "111111111111", "CDK_DEFAULT_REGION": "us-west-2"},
    )
    assert (cli.account, cli.region, cli.offline) == ("111111111111", "us-west-2", False)
    with pytest.raises(SettingsError, match="esml:region"):
        Settings.from_context(context_of({**OFFLINE, "esml:account": "210987654321"}), {})
    # A region alone (no credentials) must not be paired with the placeholder account.
    offline = Settings.from_context(context_of(OFFLINE), {"CDK_DEFAULT_REGION": "eu-central-1"})
    assert (offline.account, offline.region, offline.offline) == ("123456789012", "us-east-1", True)


def test_alert_settings_are_read_and_checked() -> None:
    defaults = Settings.from_context(context_of(OFFLINE), {})
    assert (defaults.alert_max_age_s, defaults.alert_max_skew_s) == (60.0, 5.0)
    assert defaults.alert_min_confidence == 0.87
    chosen = Settings.from_context(
        context_of({**OFFLINE, "esml:alertMaxAgeS": "30", "esml:alertMaxSkewS": 2,
                    "esml:alertMinConfidence": "0.9"}), {}
    )  # fmt: skip
    assert (chosen.alert_max_age_s, chosen.alert_max_skew_s) == (30.0, 2.0)
    assert chosen.alert_min_confidence == 0.9
    for key, value in (("esml:alertMinConfidence", 1.5), ("esml:alertMaxAgeS", 0),
                       ("esml:alertMaxSkewS", "soon")):  # fmt: skip
        with pytest.raises(SettingsError, match=re.escape(key)):
            Settings.from_context(context_of({**OFFLINE, key: value}), {})


def test_offline_placeholder_has_cached_availability_zones() -> None:
    context = cli_context()
    key = (
        f"availability-zones:account={context['esml:offlineAccount']}"
        f":region={context['esml:offlineRegion']}"
    )
    assert len(context[key]) >= 2


def test_esml_config_is_validated_with_the_risk_lambdas_loader() -> None:
    good = Settings.from_context(
        context_of({**OFFLINE, "esml:esmlConfig": '{"risk": {"max_daily_loss": 500}}'}), {}
    )
    assert json.loads(good.esml_config_json or "") == {"risk": {"max_daily_loss": 500}}
    with pytest.raises(SettingsError, match="esml:esmlConfig"):
        Settings.from_context(
            context_of({**OFFLINE, "esml:esmlConfig": {"risk": {"max_dailyloss": 1}}}), {}
        )
    with pytest.raises(SettingsError, match="not valid JSON"):
        Settings.from_context(context_of({**OFFLINE, "esml:esmlConfig": "{risk"}), {})


@pytest.mark.parametrize(
    ("key", "value"),
    [("esml:account", "12345"), ("esml:alarmEmail", "ops"),
     ("esml:tradovateBaseUrl", "http://demo.tradovateapi.com/v1"),
     ("esml:trainingInstanceType", "m5.xlarge"), ("esml:marginVsBaselines", "lots")],
)  # fmt: skip
def test_malformed_settings_name_their_key(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(key)):
        Settings.from_context(context_of({**OFFLINE, "esml:region": "us-east-1", key: value}), {})


# ---------------------------------------------------------------- container images


def dockerfile_copy_sources(dockerfile: Path) -> list[str]:
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


@pytest.mark.parametrize("image", ["tick_engine", "training"])
def test_image_build_context_holds_every_copy_source_and_nothing_heavy(
    synth: Synth, image: str
) -> None:
    """The staged asset is exactly what `docker build` will see at deploy."""
    dockerfile = f"containers/{image}/Dockerfile"
    (context_dir,) = [
        synth.assembly_dir / a["source"]["directory"]
        for a in synth.assets["dockerImages"].values()
        if a["source"]["dockerFile"] == dockerfile
    ]
    assert (context_dir / dockerfile).is_file()
    sources = dockerfile_copy_sources(REPO_ROOT / dockerfile)
    assert sources
    missing = [src for src in sources if not (context_dir / src).exists()]
    assert missing == []
    for heavy in (".venv", "node_modules", "cdk.out", "tests", "build", ".git"):
        assert not (context_dir / heavy).exists(), heavy
    shipped = [p.relative_to(context_dir).as_posix()
               for p in (context_dir / "data").rglob("*") if p.is_file()]  # fmt: skip
    assert shipped == ["data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"]  # the real hour
    assert [p.name for p in (context_dir / "lambdas").iterdir()] <= ["__init__.py", "drift"]
    assert not list(context_dir.rglob("__pycache__"))


def test_tick_engine_image_runs_main_as_a_non_root_user() -> None:
    text = (REPO_ROOT / "containers" / "tick_engine" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert text.strip().splitlines()[-1] == 'CMD ["python", "containers/tick_engine/main.py"]'
    assert installed_extras(text) <= {"service"}  # boto3 for the S3 model sync; no torch


def installed_extras(dockerfile_text: str) -> set[str]:
    """The esml extras a Dockerfile's `pip install /tmp/src[...]` installs."""
    (extras,) = re.findall(r"pip install [^\n]*?/tmp/src(?:\[([\w,]+)\])?", dockerfile_text)
    return set(filter(None, extras.split(",")))


def install_closure(distribution: str, extras: set[str]) -> set[str]:
    """Every distribution `pip install distribution[extras]` brings in, by canonical name."""
    seen: set[str] = set()
    todo = [(distribution, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in seen:
            continue
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here, so nothing here can have been imported from it
        seen.add(key)
        for line in requires:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in wanted or {""}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


IMAGE_IMPORT_PROBE = """\
import importlib.metadata, importlib.util, json, re, sys
allowed = set(json.loads(sys.argv[2]))
owners = importlib.metadata.packages_distributions()

class NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.partition(".")[0])
        if dists and not any(re.sub(r"[-_.]+", "-", d).lower() in allowed for d in dists):
            raise ModuleNotFoundError(f"No module named {name!r} in the image", name=name)
        return None

sys.meta_path.insert(0, NotInTheImage())
for k, path in enumerate(sys.argv[1].split(",")):  # one interpreter: torch imports once
    spec = importlib.util.spec_from_file_location(f"image_entry_{k}", path)
    module = sys.modules[f"image_entry_{k}"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
"""


def pinned_installs(dockerfile_text: str) -> set[str]:
    """Distributions a Dockerfile installs by pin (`RUN pip install name==version ...`)."""
    lines = re.findall(r"^RUN pip install ((?:[\w.-]+==\S+\s*)+)$", dockerfile_text, re.M)
    return {pin.split("==")[0] for line in lines for pin in line.split()}


@pytest.mark.parametrize(
    ("image", "entry"),
    [("tick_engine", ["containers/tick_engine/main.py"]),
     ("training", ["training/train.py", "training/retrain_steps.py", "lambdas/drift/handler.py"])],
)  # fmt: skip
def test_image_entry_imports_with_only_what_its_dockerfile_installs(
    image: str, entry: list[str]
) -> None:
    """No Docker here: import the entry point in this .venv with every distribution the
    image's `pip install` would not bring in made unimportable, as it is in the image
    (optional imports such as numba's yaml then fail quietly, as they do there)."""
    text = (REPO_ROOT / "containers" / image / "Dockerfile").read_text()
    installs = install_closure("esml", installed_extras(text))
    for pinned in pinned_installs(text):
        installs |= install_closure(pinned, set())
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            IMAGE_IMPORT_PROBE,
            ",".join(str(REPO_ROOT / e) for e in entry),
            json.dumps(sorted(installs)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------- training entry point


RECORDING_TRAIN_SCRIPT = """\
import json, os, sys
out = os.path.join(os.environ["SM_MODEL_DIR"], "seen.json")
json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
           if k.startswith("SM_")}}, open(out, "w"))
"""


@pytest.fixture
def ml_root(tmp_path: Path) -> Path:
    """An /opt/ml as SageMaker lays it out for a job with one `train` channel."""
    root = tmp_path / "opt-ml"
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (root / "input" / "data" / "train").mkdir(parents=True)
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {"train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}
        )
    )
    (config / "hyperparameters.json").write_text(json.dumps({"seed": "11", "instrument": '"MES"'}))
    return root


def test_entrypoint_maps_sagemaker_layout_onto_train_py(ml_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(RECORDING_TRAIN_SCRIPT)
    status = training_entrypoint.run_training(
        ["train"], ml_root=ml_root, train_script=script, environ={"PATH": os.environ["PATH"]}
    )
    assert status == 0
    seen = json.loads((ml_root / "model" / "seen.json").read_text())
    assert seen["argv"] == ["--instrument", "MES", "--seed", "11"]
    assert seen["env"]["SM_CHANNEL_TRAIN"] == str(ml_root / "input" / "data" / "train")
    assert seen["env"]["SM_MODEL_DIR"] == str(ml_root / "model")
    assert seen["env"]["SM_OUTPUT_DATA_DIR"] == str(ml_root / "output" / "data")
    assert json.loads(seen["env"]["SM_CHANNELS"]) == ["train"]
    assert not (ml_root / "output" / "failure").exists()


def test_entrypoint_runs_the_retraining_step_a_job_names(ml_root: Path, tmp_path: Path) -> None:
    """A job with `esml_step` (every job of the state machine) runs training/retrain_steps.py
    with its hyper-parameters; without it, training/train.py as before."""
    (ml_root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"esml_step": "evaluate", "margin_vs_champion": "0.01"})
    )
    (tmp_path / "retrain_steps.py").write_text(RECORDING_TRAIN_SCRIPT)
    (tmp_path / "train.py").write_text("raise SystemExit('the step script must run')\n")
    status = training_entrypoint.run_training(
        ["train"], ml_root=ml_root, train_script=tmp_path / "train.py",
        environ={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert status == 0
    seen = json.loads((ml_root / "model" / "seen.json").read_text())
    assert seen["argv"] == ["--esml_step", "evaluate", "--margin_vs_champion", "0.01"]
    assert training_entrypoint.RETRAIN_SCRIPT.is_file()


def test_entrypoint_reports_a_failed_training_run(ml_root: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\nprint('no MBO files under the train channel', file=sys.stderr)\nsys.exit(3)\n"
    )
    status = training_entrypoint.run_training(
        ["train"], ml_root=ml_root, train_script=script, environ={"PATH": os.environ["PATH"]}
    )
    assert status == 3
    failure = (ml_root / "output" / "failure").read_text()
    assert "exited with status 3" in failure
    assert "no MBO files under the train channel" in failure


def test_entrypoint_refuses_other_commands_and_bad_hyperparameters(
    ml_root: Path, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text("raise SystemExit('must not run')\n")
    assert training_entrypoint.run_training(["serve"], ml_root=ml_root, train_script=script) == 2
    assert not (ml_root / "model").exists()
    (ml_root / "input" / "config" / "hyperparameters.json").write_text("[1, 2]")
    assert training_entrypoint.run_training(["train"], ml_root=ml_root, train_script=script) == 2
    assert "must hold a JSON object" in (ml_root / "output" / "failure").read_text()
    assert not (ml_root / "model").exists()
