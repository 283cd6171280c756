"""The names of esml's own CloudWatch metrics: the one place emitters and alarms agree on.

Every esml metric lives in namespace `esml` and carries exactly one dimension, `service`,
whose value is the emitter's Powertools service name (POWERTOOLS_SERVICE_NAME; the Lambdas
set it to `esml-<folder>`). Powertools' EMF metrics add that dimension by themselves, so
an emitter only has to use the names below; an alarm matches a metric only when
namespace, name and every dimension are equal. The retraining run outcome adds a second
dimension, `outcome` (one of RETRAINING_OUTCOMES).

| metric | unit | emitted by (service) | alarm |
| --- | --- | --- | --- |
| BrokerError | Count | esml-router, esml-tick-engine | >= 1 in 5 min |
| OrderRejected | Count | esml-router, esml-tick-engine | >= 1 in 5 min |
| AlertUnauthorized | Count | esml-webhook | >= 3 in 5 min |
| MarketDataStale | Count | esml-tick-engine | >= 1 in 5 min |
| DailyLossBreached | Count | esml-risk, esml-tick-engine | >= 1 in 5 min |
| RetrainingRun | Count | esml-retraining (outcome=...) | failed outcomes >= 1 |
| DriftLogLossExcess, DriftCalibrationError | None | esml-drift | either over its threshold |
| DriftHitRate, DriftLogLoss, DriftSignals | None, Count | esml-drift | (dashboard) |
"""

from __future__ import annotations

NAMESPACE = "esml"
SERVICE_DIMENSION = "service"
OUTCOME_DIMENSION = "outcome"

WEBHOOK_SERVICE = "esml-webhook"
RISK_SERVICE = "esml-risk"
ROUTER_SERVICE = "esml-router"
TICK_ENGINE_SERVICE = "esml-tick-engine"
RETRAINING_SERVICE = "esml-retraining"
DRIFT_SERVICE = "esml-drift"

BROKER_ERROR = "BrokerError"
ORDER_REJECTED = "OrderRejected"
ALERT_UNAUTHORIZED = "AlertUnauthorized"
MARKET_DATA_STALE = "MarketDataStale"
DAILY_LOSS_BREACHED = "DailyLossBreached"
RETRAINING_RUN = "RetrainingRun"

DRIFT_SIGNALS = "DriftSignals"
DRIFT_HIT_RATE = "DriftHitRate"
DRIFT_LOG_LOSS = "DriftLogLoss"
DRIFT_LOG_LOSS_EXCESS = "DriftLogLossExcess"
"""The live rolling log loss minus the champion's held-out log loss: > 0 is worse than
the champion was when it was judged."""
DRIFT_CALIBRATION_ERROR = "DriftCalibrationError"

RETRAINING_OUTCOMES = (
    "promoted",
    "rejected",
    "training_failed",
    "evaluation_failed",
    "promotion_failed",
)
FAILED_OUTCOMES = ("training_failed", "evaluation_failed", "promotion_failed")

EMITTERS: dict[str, tuple[str, ...]] = {
    BROKER_ERROR: (ROUTER_SERVICE, TICK_ENGINE_SERVICE),
    ORDER_REJECTED: (ROUTER_SERVICE, TICK_ENGINE_SERVICE),
    ALERT_UNAUTHORIZED: (WEBHOOK_SERVICE,),
    MARKET_DATA_STALE: (TICK_ENGINE_SERVICE,),
    DAILY_LOSS_BREACHED: (RISK_SERVICE, TICK_ENGINE_SERVICE),
}
"""Which services emit each trading metric; its alarm sums them all."""
