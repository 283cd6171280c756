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
_METRICS = ("accuracy", "macro_f1", "log_loss", "brier")
ALARM_EMAIL_PLACEHOLDER = "alarms@example.invalid"
"""cdk.json's esml:alarmEmail: enough for `make synth` and the tests (no account), refused
by any synth against a real account, so no deploy can leave the alarms without a reader."""


class SettingsError(ValueError):
    """A context value is missing or malformed; the message names the context key."""


@dataclass(frozen=True)
class Settings:
    account: str
    region: str
    offline: bool
    """True when no AWS account is known and the placeholder from cdk.json is used."""
    alarm_email: str = ALARM_EMAIL_PLACEHOLDER
    """Every alarm's e-mail subscriber; required, the placeholder only offline."""
    esml_config_json: str | None = None
    """EsmlConfig fields as JSON for the risk Lambda and the tick engine (one set of limits)."""
    tradovate_base_url: str | None = None
    training_instance_type: str = "ml.m5.xlarge"
    promotion_metrics: tuple[str, ...] = ("log_loss", "brier")
    """Metrics on which a challenger must beat the champion and every baseline."""
    margin_vs_champion: float = 0.0
    """The lower end of the challenger's 95% improvement interval over the champion must
    exceed this (in the metric's own units) on every promotion metric."""
    margin_vs_baselines: float = 0.0
    drift_window_hours: int = 24
    drift_max_log_loss_excess: float = 0.05
    """Drift alarm: the rolling live log loss exceeds the champion's held-out one by this."""
    drift_max_calibration_error: float = 0.10
    alert_max_age_s: float = 60.0
    """The webhook refuses an alert whose `time` is older than this (ALERT_MAX_AGE_S)."""
    alert_max_skew_s: float = 5.0
    """... or further ahead of the server's clock than this (ALERT_MAX_SKEW_S)."""
    alert_min_confidence: float = 0.87
    """Risk refuses an alert whose `confidence` is below this (ALERT_MIN_CONFIDENCE)."""

    @classmethod
    def from_context(cls, context: ContextLookup, environ: Mapping[str, str]) -> Settings:
        account, region, offline = _resolve_environment(context, environ)
        return cls(
            account=account,
            region=region,
            offline=offline,
            alarm_email=_alarm_email(context("esml:alarmEmail"), offline),
            esml_config_json=_esml_config_json(context("esml:esmlConfig")),
            tradovate_base_url=_https_url(context("esml:tradovateBaseUrl")),
            training_instance_type=_optional_match(
                context,
                "esml:trainingInstanceType",
                _INSTANCE_TYPE,
                "a SageMaker type like ml.m5.xlarge",
            )
            or cls.training_instance_type,
            promotion_metrics=_metric_list(context("esml:promotionMetrics"))
            or cls.promotion_metrics,
            margin_vs_champion=_number(context, "esml:marginVsChampion", cls.margin_vs_champion),
            margin_vs_baselines=_number(context, "esml:marginVsBaselines", cls.margin_vs_baselines),
            drift_window_hours=int(
                _number(context, "esml:driftWindowHours", cls.drift_window_hours, low=1, high=168)
            ),
            drift_max_log_loss_excess=_number(
                context, "esml:driftMaxLogLossExcess", cls.drift_max_log_loss_excess, low=0.0
            ),
            drift_max_calibration_error=_number(
                context,
                "esml:driftMaxCalibrationError",
                cls.drift_max_calibration_error,
                low=0.0,
                high=1.0,
            ),
            alert_max_age_s=_number(
                context, "esml:alertMaxAgeS", cls.alert_max_age_s, low=1.0, high=3600.0
            ),
            alert_max_skew_s=_number(
                context, "esml:alertMaxSkewS", cls.alert_max_skew_s, low=0.0, high=60.0
            ),
            alert_min_confidence=_number(
                context, "esml:alertMinConfidence", cls.alert_min_confidence, low=0.0, high=1.0
            ),
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


def _alarm_email(value: object, offline: bool) -> str:
    if value is None:
        raise SettingsError(
            "esml:alarmEmail is required: alarms must reach someone "
            "(-c esml:alarmEmail=you@example.com, or set it in cdk.json)"
        )
    if not isinstance(value, str) or not _EMAIL.match(value):
        raise SettingsError(f"esml:alarmEmail must be an e-mail address, not {value!r}")
    if value == ALARM_EMAIL_PLACEHOLDER and not offline:
        raise SettingsError(
            f"esml:alarmEmail is still the placeholder {ALARM_EMAIL_PLACEHOLDER}: give the "
            "address that must receive esml's alarms (-c esml:alarmEmail=you@example.com)"
        )
    return value


def _number(
    context: ContextLookup,
    key: str,
    default: float,
    *,
    low: float | None = None,
    high: float | None = None,
) -> float:
    value = context(key)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{key} must be a number, not {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise SettingsError(f"{key} must be within [{low}, {high}], not {value!r}")
    return number


def _metric_list(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise SettingsError(f"esml:promotionMetrics must be a list of metrics, not {value!r}")
    metrics = tuple(str(n).strip() for n in names if str(n).strip())
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown or not metrics:
        raise SettingsError(
            f"esml:promotionMetrics: {unknown or 'empty'}; choose from {list(_METRICS)}"
        )
    return metrics


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
