"""Deployment settings read from CDK context, validated before any resource is defined.

A typo in `-c esml:...` or cdk.json must stop the synth with a message that names the key,
never deploy a stack with a silently defaulted value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from esml.config import ConfigError, load_config

ContextLookup = Callable[[str], Any]

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")


class SettingsError(ValueError):
    """A context value is missing or malformed; the message names the context key."""


@dataclass(frozen=True)
class Settings:
    account: str
    region: str
    offline: bool
    """True when no AWS account is known and the placeholder from cdk.json is used."""
    alarm_email: str | None = None
    esml_config_json: str | None = None
    """EsmlConfig fields as JSON for the risk Lambda and the tick engine (one set of limits)."""
    tradovate_base_url: str | None = None
    training_instance_type: str = "ml.m5.xlarge"

    @classmethod
    def from_context(cls, context: ContextLookup, environ: Mapping[str, str]) -> Settings:
        account, region, offline = _resolve_environment(context, environ)
        return cls(
            account=account,
            region=region,
            offline=offline,
            alarm_email=_optional_match(context, "esml:alarmEmail", _EMAIL, "an e-mail address"),
            esml_config_json=_esml_config_json(context("esml:esmlConfig")),
            tradovate_base_url=_https_url(context("esml:tradovateBaseUrl")),
            training_instance_type=_optional_match(
                context,
                "esml:trainingInstanceType",
                _INSTANCE_TYPE,
                "a SageMaker type like ml.m5.xlarge",
            )
            or cls.training_instance_type,
        )


def _resolve_environment(
    context: ContextLookup, environ: Mapping[str, str]
) -> tuple[str, str, bool]:
    """Pick (account, region, offline): explicit context, else the CLI's credentials, else
    the offline placeholder whose availability zones cdk.json's neighbour cdk.context.json
    holds, so `cdk synth` works without credentials and `cdk deploy` targets the real account.

    Account and region travel as a pair: a real region with the placeholder account would
    need an availability-zone lookup that cannot run without credentials.
    """
    explicit = context("esml:account")
    if explicit is not None:
        region = context("esml:region") or environ.get("CDK_DEFAULT_REGION")
        if not region:
            raise SettingsError("esml:account is set but neither esml:region nor an AWS region is")
        return _account(explicit, "esml:account"), _region(region, "esml:region"), False
    if environ.get("CDK_DEFAULT_ACCOUNT"):
        region = environ.get("CDK_DEFAULT_REGION")
        if not region:
            raise SettingsError(
                "AWS credentials found but no region: set AWS_REGION or esml:region"
            )
        return (
            _account(environ["CDK_DEFAULT_ACCOUNT"], "CDK_DEFAULT_ACCOUNT"),
            _region(region, "CDK_DEFAULT_REGION"),
            False,
        )
    account = context("esml:offlineAccount")
    region = context("esml:offlineRegion")
    if account is None or region is None:
        raise SettingsError(
            "no AWS account: give -c esml:account=... -c esml:region=..., configure AWS "
            "credentials, or keep esml:offlineAccount/esml:offlineRegion in cdk.json"
        )
    return _account(account, "esml:offlineAccount"), _region(region, "esml:offlineRegion"), True


def _account(value: object, key: str) -> str:
    text = str(value)
    if not _ACCOUNT.match(text):
        raise SettingsError(f"{key} must be a 12-digit AWS account id, not {value!r}")
    return text


def _region(value: object, key: str) -> str:
    text = str(value)
    if not _REGION.match(text):
        raise SettingsError(f"{key} must be an AWS region like us-east-1, not {value!r}")
    return text


def _optional_match(
    context: ContextLookup, key: str, pattern: re.Pattern[str], what: str
) -> str | None:
    value = context(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise SettingsError(f"{key} must be {what}, not {value!r}")
    return value


def _https_url(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^https://[^\s/]+(/\S*)?$", value):
        raise SettingsError(f"esml:tradovateBaseUrl must be an https:// URL, not {value!r}")
    return value.rstrip("/")


def _esml_config_json(value: object) -> str | None:
    """Validate with the same loader the risk Lambda uses, so a bad config fails here,
    at synth, not at the Lambda's cold start in the middle of a session."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise SettingsError(f"esml:esmlConfig is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise SettingsError(
            f"esml:esmlConfig must be a JSON object of EsmlConfig fields, not {value!r}"
        )
    try:
        load_config(**value)
    except ConfigError as e:
        raise SettingsError(f"esml:esmlConfig: {e}") from e
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
