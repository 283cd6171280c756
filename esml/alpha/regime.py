"""The regime classifier: trend / range / none over the next five minutes.

The label is `esml.features.labels.regime_labels` (efficiency ratio and range against the
window's own volatility; read its docstring for the exact rule). The classifier is two
"hemispheres" of three models each: gradient-boosted trees, a logistic regression and a
small MLP. The left hemisphere sees how price moved (returns, volatility, session and time
context); the right sees who is trading (order flow, book imbalance, spread, intensity).
Two views of the same moment, so the hemispheres err differently.

Each model votes its most probable class. A hemisphere polls its three: the class with
most votes wins, and a three-way split goes to the class with the highest summed
confidence (the winners' probabilities). When the hemispheres agree, that is the regime;
when they disagree, the hemisphere whose backing models sum to the higher confidence
wins, and an exact tie goes to "none". The published probabilities are the mean of the
six models'.

The whole thing, feature views and poll included, exports to one ONNX graph (trees via
`esml.alpha.onnx_export`, the linear and MLP models as dense layers computed in double),
checked against this module's own predictions before it is returned.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import xgboost as xgb
from onnx import TensorProto, helper, numpy_helper
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from esml.alpha.manifest import INPUT_NAME, OUTPUT_NAME
from esml.alpha.onnx_export import PARITY_TOLERANCE, booster_to_onnx
from esml.alpha.regime_config import RegimeConfig
from esml.features.labels import REGIME_NONE, REGIMES

REGIME_OUTPUT = "regime"
N_REGIMES = len(REGIMES)
HEMISPHERES = ("left", "right")
FAMILIES = ("trees", "logistic", "mlp")
_TIE_MARGIN = 1e-4  # rows this close to a tie may round either way in float32
_FLOW_KEYS = (
    "imbalance", "flow", "ofi", "vpin", "spread", "micro", "depth", "queue", "trade",
    "volume", "intensity", "surge",
)  # fmt: skip
_PRICE_KEYS = (
    "ret_", "vol", "momentum", "accel", "range", "vwap", "high", "low", "rsi", "macd",
    "boll", "atr", "pso", "sin", "cos", "minute", "rth", "eth", "day", "release", "open",
    "close", "session",
)  # fmt: skip


@dataclass(frozen=True)
class RegimePrediction:
    regime: np.ndarray  # [n] int8 index into REGIMES
    proba: np.ndarray  # [n, 3] mean of the six models
    left: np.ndarray  # [n] the left hemisphere's poll
    right: np.ndarray  # [n] the right hemisphere's poll
    margin: np.ndarray  # [n] the narrowest gap behind any vote or poll in the row

    @property
    def agreed(self) -> np.ndarray:
        return self.left == self.right


@dataclass(frozen=True)
class _Member:
    """One of the six models: its family, its feature columns and its fitted estimator."""

    hemisphere: str
    family: Literal["trees", "logistic", "mlp"]
    columns: np.ndarray
    model: xgb.Booster | Pipeline

    @property
    def name(self) -> str:
        return f"{self.hemisphere}.{self.family}"

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        view = x[:, self.columns]
        if isinstance(self.model, xgb.Booster):
            return self.model.predict(xgb.DMatrix(view)).astype(np.float64)
        return self.model.predict_proba(view.astype(np.float64))  # as the ONNX graph: in double


class RegimeClassifier:
    """The six fitted models, their feature views and the poll; `to_onnx` serves it."""

    def __init__(self, feature_names: Sequence[str], members: Sequence[_Member]) -> None:
        self.feature_names = list(feature_names)
        self._members = list(members)

    @property
    def members(self) -> list[str]:
        return [m.name for m in self._members]

    def predict(self, x: np.ndarray) -> RegimePrediction:
        """Regimes of feature rows [n, f] (finite values only)."""
        x = _check_x(x, len(self.feature_names))
        return _poll([m.predict_proba(x) for m in self._members])

    def to_onnx(self) -> onnx.ModelProto:
        """float32 "features" [N, f] → "probabilities" [N, 3] and "regime" [N] (int64)."""
        nodes: list[onnx.NodeProto] = []
        inits: list[TensorProto] = []
        outputs = []
        for m in self._members:
            prefix = m.name.replace(".", "_") + "_"
            inits.append(numpy_helper.from_array(m.columns.astype(np.int64), prefix + "cols"))
            view = prefix + INPUT_NAME
            nodes.append(helper.make_node("Gather", [INPUT_NAME, prefix + "cols"], [view], axis=1))
            if isinstance(m.model, xgb.Booster):
                part = onnx.compose.add_prefix(booster_to_onnx(m.model, len(m.columns)), prefix)
                nodes.extend(part.graph.node)
                inits.extend(part.graph.initializer)
                outputs.append(prefix + OUTPUT_NAME)
            else:
                outputs.append(_dense_nodes(m.model, view, prefix, nodes, inits))
        _poll_nodes(outputs, nodes, inits)
        n_in = len(self.feature_names)
        graph = helper.make_graph(
            nodes,
            "esml_regime",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_in])],
            [
                helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, N_REGIMES]),
                helper.make_tensor_value_info(REGIME_OUTPUT, TensorProto.INT64, [None]),
            ],
            initializer=inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
            ir_version=10,
            producer_name="esml.alpha.regime",
        )
        helper.set_model_props(
            model,
            {"classes": json.dumps(REGIMES), "feature_names": json.dumps(self.feature_names)},
        )
        return model

    def export_onnx(self, check_rows: np.ndarray) -> bytes:
        """The serialised graph, verified on `check_rows`: probabilities within 1e-5 and the
        same regime on every row not within a rounding error of a tie."""
        rows = _check_x(check_rows, len(self.feature_names)).astype(np.float32)
        if len(rows) == 0:
            raise ValueError("check_rows must hold at least one row")
        model = self.to_onnx()
        onnx.checker.check_model(model, full_check=True)
        data = model.SerializeToString()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        proba, regime = session.run([OUTPUT_NAME, REGIME_OUTPUT], {INPUT_NAME: rows})
        want = self.predict(rows)
        worst = float(np.max(np.abs(proba - want.proba)))
        clear = want.margin > _TIE_MARGIN
        wrong = int(np.count_nonzero((regime != want.regime) & clear))
        if not worst <= PARITY_TOLERANCE or wrong:
            raise ValueError(
                f"the ONNX regime graph disagrees with the classifier: probabilities by up to "
                f"{worst:.3g} (tolerance {PARITY_TOLERANCE}), regimes on {wrong} rows"
            )
        return data


def default_views(feature_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(left, right): price-path and context features vs order-flow and book features, by
    name; a feature that names neither goes to both."""
    left, right = [], []
    for name in feature_names:
        low = name.lower()
        if any(k in low for k in _FLOW_KEYS):
            right.append(name)
        elif any(k in low for k in _PRICE_KEYS):
            left.append(name)
        else:
            left.append(name)
            right.append(name)
    return left, right


def fit_regime_classifier(
    x: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    cfg: RegimeConfig,
    views: tuple[Sequence[str], Sequence[str]] | None = None,
) -> RegimeClassifier:
    """Fit the six models on labelled rows (regime labels of valid rows only), each with
    class-balanced sample weights, so the rare regime is not simply never predicted."""
    names = list(feature_names)
    if len(set(names)) != len(names):
        raise ValueError("feature names must be unique")
    x = _check_x(x, len(names))
    labels = np.asarray(y)
    if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must be {len(x)} integer regime labels, got {labels.shape}")
    counts = np.bincount(labels.clip(0), minlength=N_REGIMES)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= N_REGIMES or np.any(counts == 0):
        raise ValueError(
            f"regime labels must cover all of {REGIMES} (0..2); got counts {counts.tolist()}"
        )
    weight = (len(labels) / (N_REGIMES * counts))[labels]
    left, right = views if views is not None else default_views(names)
    members = []
    for hemisphere, view in zip(HEMISPHERES, (left, right), strict=True):
        unknown = [f for f in view if f not in names]
        if not view or unknown:
            raise ValueError(f"the {hemisphere} view must name known features; unknown {unknown}")
        cols = np.array([names.index(f) for f in view], np.int64)
        for family in FAMILIES:
            model = _fit_family(family, x[:, cols].astype(np.float64), labels, weight, cfg)
            members.append(_Member(hemisphere, family, cols, model))
    return RegimeClassifier(names, members)


# ---------------------------------------------------------------------------- internals


def _fit_family(
    family: str, x: np.ndarray, y: np.ndarray, weight: np.ndarray, cfg: RegimeConfig
) -> xgb.Booster | Pipeline:
    if family == "trees":
        clf = xgb.XGBClassifier(
            objective="multi:softprob",
            tree_method="hist",
            n_estimators=cfg.tree_count,
            max_depth=cfg.tree_depth,
            learning_rate=cfg.tree_learning_rate,
            n_jobs=cfg.n_jobs,
            random_state=cfg.random_state,
        )
        clf.fit(x, y, sample_weight=weight, verbose=False)
        return clf.get_booster()
    if family == "logistic":
        head = LogisticRegression(C=cfg.logistic_c, max_iter=1000)
        pipe = Pipeline([("scale", StandardScaler()), ("head", head)])
        pipe.fit(x, y, head__sample_weight=weight)
        return pipe
    mlp = MLPClassifier(
        hidden_layer_sizes=(cfg.mlp_hidden,),
        activation="relu",
        alpha=cfg.mlp_alpha,
        max_iter=cfg.mlp_max_iter,
        random_state=cfg.random_state,
    )
    pipe = Pipeline([("scale", StandardScaler()), ("head", mlp)])
    with warnings.catch_warnings():
        # a fixed iteration budget is the design: not converging within it is expected
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(x, y, head__sample_weight=weight)
    return pipe


def _poll(probas: list[np.ndarray]) -> RegimePrediction:
    """The hemispheres' polls and their resolution, exactly as the ONNX graph computes it."""
    half = len(probas) // 2
    choices, backing, margins = [], [], []
    for group in (probas[:half], probas[half:]):
        count = np.zeros_like(group[0])
        conf = np.zeros_like(group[0])
        for p in group:
            vote = _one_hot(p.argmax(axis=1))
            count += vote
            conf += vote * p.max(axis=1, keepdims=True)
            margins.append(_gap(p))
        score = count + conf * 0.25  # summed confidence (< 1) only breaks a 1-1-1 split
        choice = score.argmax(axis=1)
        choices.append(choice)
        backing.append(np.sum(_one_hot(choice) * conf, axis=1, keepdims=True))
        margins.append(_gap(score))
    final = _one_hot(choices[0]) * backing[0] + _one_hot(choices[1]) * backing[1]
    margins.append(_gap(final))
    tie = (choices[0] != choices[1]) & (backing[0][:, 0] == backing[1][:, 0])
    return RegimePrediction(
        regime=np.where(tie, REGIME_NONE, final.argmax(axis=1)).astype(np.int8),
        proba=np.mean(probas, axis=0),
        left=choices[0].astype(np.int8),
        right=choices[1].astype(np.int8),
        margin=np.min(margins, axis=0),
    )


def _poll_nodes(outputs: list[str], nodes: list[onnx.NodeProto], inits: list[TensorProto]) -> None:
    """ONNX nodes of `_poll` over the members' probability outputs (left three, right three)."""
    inits += [
        numpy_helper.from_array(np.array([1], np.int64), "poll_axis"),
        numpy_helper.from_array(np.array(N_REGIMES, np.int64), "poll_depth"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "poll_onehot"),
        numpy_helper.from_array(np.array(0.25, np.float32), "poll_quarter"),
        numpy_helper.from_array(np.array(REGIME_NONE, np.int64), "poll_none"),
    ]

    def one_hot(index: str, out: str) -> None:
        nodes.append(helper.make_node("OneHot", [index, "poll_depth", "poll_onehot"], [out]))

    nodes.append(helper.make_node("Mean", outputs, [OUTPUT_NAME]))
    half = len(outputs) // 2
    picks = []
    for h, group in zip(HEMISPHERES, (outputs[:half], outputs[half:]), strict=True):
        votes, confs = [], []
        for out in group:
            nodes.append(helper.make_node("ArgMax", [out], [out + "_vote"], axis=1, keepdims=0))
            one_hot(out + "_vote", out + "_onehot")
            nodes.append(helper.make_node("ReduceMax", [out, "poll_axis"], [out + "_max"]))
            nodes.append(helper.make_node("Mul", [out + "_onehot", out + "_max"], [out + "_conf"]))
            votes.append(out + "_onehot")
            confs.append(out + "_conf")
        nodes += [
            helper.make_node("Sum", votes, [f"{h}_count"]),
            helper.make_node("Sum", confs, [f"{h}_conf"]),
            helper.make_node("Mul", [f"{h}_conf", "poll_quarter"], [f"{h}_tiebreak"]),
            helper.make_node("Add", [f"{h}_count", f"{h}_tiebreak"], [f"{h}_score"]),
            helper.make_node("ArgMax", [f"{h}_score"], [f"{h}_choice"], axis=1, keepdims=0),
        ]
        one_hot(f"{h}_choice", f"{h}_pick")
        nodes += [
            helper.make_node("Mul", [f"{h}_pick", f"{h}_conf"], [f"{h}_picked_conf"]),
            helper.make_node("ReduceSum", [f"{h}_picked_conf", "poll_axis"], [f"{h}_backing"]),
            helper.make_node("Mul", [f"{h}_pick", f"{h}_backing"], [f"{h}_final"]),
            helper.make_node(
                "ReduceSum", [f"{h}_picked_conf", "poll_axis"], [f"{h}_backing_1d"], keepdims=0
            ),
        ]
        picks.append(f"{h}_final")
    left, right = HEMISPHERES
    nodes += [
        helper.make_node("Add", picks, ["poll_final"]),
        helper.make_node("ArgMax", ["poll_final"], ["poll_best"], axis=1, keepdims=0),
        # hemispheres that disagree with exactly equal backing: no call, "none"
        helper.make_node("Equal", [f"{left}_choice", f"{right}_choice"], ["poll_agree"]),
        helper.make_node("Not", ["poll_agree"], ["poll_disagree"]),
        helper.make_node("Equal", [f"{left}_backing_1d", f"{right}_backing_1d"], ["poll_even"]),
        helper.make_node("And", ["poll_disagree", "poll_even"], ["poll_tie"]),
        helper.make_node("Where", ["poll_tie", "poll_none", "poll_best"], [REGIME_OUTPUT]),
    ]


def _dense_nodes(
    pipe: Pipeline, view: str, prefix: str, nodes: list[onnx.NodeProto], inits: list[TensorProto]
) -> str:
    """Standardise, the dense layers (ReLU between), softmax: in double, as sklearn computes."""
    scaler, head = pipe.named_steps["scale"], pipe.named_steps["head"]
    if isinstance(head, LogisticRegression):
        layers = [(head.coef_.T, head.intercept_)]
    else:
        if head.activation != "relu" or head.out_activation_ != "softmax":
            raise ValueError(
                f"an MLP with {head.activation}/{head.out_activation_} is not exported"
            )
        layers = list(zip(head.coefs_, head.intercepts_, strict=True))
    if layers[-1][0].shape[1] != N_REGIMES:
        raise ValueError(f"{prefix}: expected {N_REGIMES} outputs, got {layers[-1][0].shape[1]}")

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float64), prefix + name))
        return prefix + name

    mean, scale = const("mean", scaler.mean_), const("scale", scaler.scale_)
    nodes += [
        helper.make_node("Cast", [view], [prefix + "x64"], to=TensorProto.DOUBLE),
        helper.make_node("Sub", [prefix + "x64", mean], [prefix + "centred"]),
        helper.make_node("Div", [prefix + "centred", scale], [prefix + "h0"]),
    ]
    h = prefix + "h0"
    for k, (w, b) in enumerate(layers, start=1):
        out = f"{prefix}h{k}"
        nodes += [
            helper.make_node("MatMul", [h, const(f"w{k}", w)], [out + "_mm"]),
            helper.make_node("Add", [out + "_mm", const(f"b{k}", b)], [out]),
        ]
        if k < len(layers):
            nodes.append(helper.make_node("Relu", [out], [out + "_relu"]))
            out += "_relu"
        h = out
    nodes += [
        helper.make_node("Softmax", [h], [prefix + "p64"], axis=1),
        helper.make_node("Cast", [prefix + "p64"], [prefix + OUTPUT_NAME], to=TensorProto.FLOAT),
    ]
    return prefix + OUTPUT_NAME


def _one_hot(index: np.ndarray) -> np.ndarray:
    return np.eye(N_REGIMES)[index]


def _gap(score: np.ndarray) -> np.ndarray:
    """Top score minus the runner-up, per row."""
    top2 = np.sort(score, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _check_x(x: np.ndarray, n_features: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise ValueError(f"expected features of shape [n, {n_features}], got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("regime features must be finite (the linear and MLP models take no NaN)")
    return arr
