"""The names of esml's own CloudWatch metrics: the one place emitters and alarms agree on.

Every esml metric lives in namespace `esml` and carries exactly one dimension, `service`,
whose value is the emitter's Powertools service name (POWERTOOLS_SERVICE_NAME; the Lambdas
set it to `esml-<folder>`). Powertools' EMF metrics add that dimension by themselves, so
an emitter only has to use the names below; an alarm matches a metric only when
namespace, name and every dimension are equal. The retraining run outcome adds a second
dimension, `outcome` (one of RETRAINING_OUTCOMES).

| metric | unit | emitted by (service) | alarm |
| --- | --- | --- | --- |
| OrderOutcomeUnknown | Count | esml-router (the broker's answer was lost) | >= 1 in 5 min |
| OrderRejected | Count | esml-router | >= 1 in 5 min |
| Alert401 | Count | esml-webhook (a missing or wrong passphrase) | >= 3 in 5 min |
| WebhookMisconfigured | Count | esml-webhook (its secret or settings unusable) | >= 1 in 5 min |
| ProposalRejected | Count | esml-risk, second dimension gate=daily_loss | >= 1 in 5 min |
| RetrainingRun | Count | esml-retraining (outcome=...) | failed outcomes >= 1 |
| DriftLogLossExcess, DriftCalibrationError | None | esml-drift | either over its threshold |
| DriftHitRate, DriftLogLoss, DriftSignals | None, Count | esml-drift | (dashboard) |

The tick engine's EMF metrics (`esml.engine.emf`: DataAge, BrokerErrors, PositionMismatch,
RealizedPnL...) carry two other dimensions, `Service=tick-engine` and `Instrument`; their
alarms are defined next to the service (`trading_service.py`) and routed to the same topic.
"""

from __future__ import annotations

NAMESPACE = "esml"
SERVICE_DIMENSION = "service"
OUTCOME_DIMENSION = "outcome"

WEBHOOK_SERVICE = "esml-webhook"
RISK_SERVICE = "esml-risk"
ROUTER_SERVICE = "esml-router"
RETRAINING_SERVICE = "esml-retraining"
DRIFT_SERVICE = "esml-drift"

ORDER_OUTCOME_UNKNOWN = "OrderOutcomeUnknown"
ORDER_REJECTED = "OrderRejected"
ALERT_UNAUTHORIZED = "Alert401"
"""The webhook counts each refusal as `Alert<HTTP status>`; 401 is a wrong passphrase."""
WEBHOOK_MISCONFIGURED = "WebhookMisconfigured"
PROPOSAL_REJECTED = "ProposalRejected"
GATE_DIMENSION = "gate"
DAILY_LOSS_GATE = "daily_loss"
"""`esml.decision.gates.DailyLossGate.name`: risk counts each refusal by its gate."""
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
    ORDER_OUTCOME_UNKNOWN: (ROUTER_SERVICE,),
    ORDER_REJECTED: (ROUTER_SERVICE,),
    ALERT_UNAUTHORIZED: (WEBHOOK_SERVICE,),
    WEBHOOK_MISCONFIGURED: (WEBHOOK_SERVICE,),
}
"""Which services emit each order-path metric (dimension `service` only); its alarm sums
them all."""
