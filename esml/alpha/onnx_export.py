"""XGBoost multi-class booster → ONNX, so the served model needs onnxruntime only.

Written against XGBoost's JSON model format (3.x) rather than onnxmltools: 1.16 imports
onnxconverter-common without declaring it, pulls in skl2onnx, and stops at opset 15. The
graph is `TreeEnsemble` (ai.onnx.ml 5, raw margins per class) + the base margins + Softmax,
which is exactly how XGBoost's `multi:softprob` predicts. Every export is checked against
the booster's own probabilities before it is returned, so a format change fails loudly.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import xgboost as xgb
from onnx import TensorProto, helper, numpy_helper

from esml.alpha.manifest import INPUT_NAME, OUTPUT_NAME

PARITY_TOLERANCE = 1e-5
# TreeEnsemble nodes_modes: the true branch is taken when x <= split (LightGBM's rule) or
# when x < split (XGBoost's: it goes left when x < split_condition)
BRANCH_LEQ, BRANCH_LT = 0, 1
_SUPPORTED_OBJECTIVES = ("multi:softprob", "multi:softmax")


class OnnxExportError(ValueError):
    """The booster cannot be represented, or its ONNX graph disagrees with XGBoost."""


def booster_to_onnx(booster: xgb.Booster, n_features: int) -> onnx.ModelProto:
    """An ONNX graph: float32 "features" [N, n_features] → "probabilities" [N, n_classes]."""
    learner = json.loads(booster.save_raw("json"))["learner"]
    objective = learner["objective"]["name"]
    if objective not in _SUPPORTED_OBJECTIVES:
        raise OnnxExportError(f"objective {objective!r} is not supported; train multi:softprob")
    if learner["gradient_booster"]["name"] != "gbtree":
        raise OnnxExportError(f"booster {learner['gradient_booster']['name']!r} is not gbtree")
    params = learner["learner_model_param"]
    n_classes = int(params["num_class"])
    if int(params["num_feature"]) != n_features:
        raise OnnxExportError(
            f"the booster was trained on {params['num_feature']} features, not {n_features}"
        )
    model = learner["gradient_booster"]["model"]
    nodes = _Nodes()
    for tree, target in zip(model["trees"], model["tree_info"], strict=True):
        nodes.add_tree(tree, int(target))
    if not nodes.roots:
        raise OnnxExportError("the booster has no trees")
    base = _base_margin(params["base_score"], n_classes)
    return tree_ensemble_model(
        nodes,
        n_features,
        n_classes,
        mode=BRANCH_LT,
        base_margin=base,
        graph_name="xgboost_direction",
        producer="esml.alpha.onnx_export",
    )


def export_onnx(booster: xgb.Booster, n_features: int, check_rows: np.ndarray) -> bytes:
    """Serialised ONNX model, verified on `check_rows` against `booster.predict`."""
    model = booster_to_onnx(booster, n_features)
    return checked_bytes(
        model, n_features, check_rows, lambda rows: booster.predict(xgb.DMatrix(rows)), "XGBoost"
    )


def checked_bytes(
    model: onnx.ModelProto,
    n_features: int,
    check_rows: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    library: str,
) -> bytes:
    """`model` serialised, once onnx's checker passes it and onnxruntime's probabilities on
    `check_rows` agree with `predict` (the training library's own) within PARITY_TOLERANCE:
    no export is written that serves other numbers than the ones that were scored."""
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    rows = np.ascontiguousarray(check_rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise OnnxExportError(f"check_rows must be a non-empty [n, {n_features}] array")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: rows})[0]
    worst = float(np.max(np.abs(got - predict(rows))))
    if not worst <= PARITY_TOLERANCE:
        raise OnnxExportError(
            f"ONNX probabilities differ from {library}'s by up to {worst:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); the export is wrong and was not written"
        )
    return data


def _base_margin(raw: str, n_classes: int) -> np.ndarray:
    """XGBoost 3.x stores the multi-class intercept as a margin vector "[a,b,c]"; 2.x as one
    scalar added to every class (which softmax then cancels)."""
    value = json.loads(raw.replace("E", "e")) if raw.startswith("[") else [float(raw)]
    base = np.asarray(value, dtype=np.float32)
    if base.size == 1:
        base = np.full(n_classes, base[0], dtype=np.float32)
    if base.shape != (n_classes,):
        raise OnnxExportError(f"base_score {raw!r} does not have {n_classes} entries")
    return base


class TreeArrays:
    """TreeEnsemble's flat arrays: interior nodes and leaves listed separately. A
    subclass reads one library's trees into them."""

    def __init__(self) -> None:
        self.roots: list[int] = []
        self.feature: list[int] = []
        self.split: list[float] = []
        self.missing_true: list[int] = []
        self.true_id: list[int] = []
        self.true_leaf: list[int] = []
        self.false_id: list[int] = []
        self.false_leaf: list[int] = []
        self.leaf_target: list[int] = []
        self.leaf_weight: list[float] = []

    def leaf(self, target: int, weight: float) -> int:
        """Index of a new leaf adding `weight` to class `target`'s margin."""
        self.leaf_target.append(target)
        self.leaf_weight.append(weight)
        return len(self.leaf_weight) - 1

    def interior(
        self,
        feature: int,
        split: float,
        missing_true: int,
        true: tuple[int, int],
        false: tuple[int, int],
    ) -> int:
        """Index of a new interior node; each branch is (index, 1 if a leaf else 0)."""
        self.feature.append(feature)
        self.split.append(split)
        self.missing_true.append(missing_true)
        self.true_id.append(true[0])
        self.true_leaf.append(true[1])
        self.false_id.append(false[0])
        self.false_leaf.append(false[1])
        return len(self.feature) - 1


class _Nodes(TreeArrays):
    """XGBoost's JSON trees as TreeEnsemble arrays."""

    def add_tree(self, tree: dict, target: int) -> None:
        if int(tree["tree_param"]["size_leaf_vector"]) > 1:
            raise OnnxExportError("vector-leaf trees (multi_strategy) are not supported")
        if any(int(t) != 0 for t in tree["split_type"]):
            raise OnnxExportError("categorical splits are not supported")
        if tree["left_children"][0] == -1:
            # a single-leaf tree: one interior node whose both branches reach the leaf
            leaf = self._leaf(tree, 0, target)
            self.roots.append(self.interior(0, 0.0, 1, (leaf, 1), (leaf, 1)))
            return
        self.roots.append(self._subtree(tree, 0, target))

    def _subtree(self, tree: dict, node: int, target: int) -> int:
        """Index of `node` (interior) after adding it and its descendants, depth first."""
        branches = []
        for child in (tree["left_children"][node], tree["right_children"][node]):
            if tree["left_children"][child] == -1:
                branches.append((self._leaf(tree, child, target), 1))
            else:
                branches.append((self._subtree(tree, child, target), 0))
        return self.interior(
            int(tree["split_indices"][node]),
            float(tree["split_conditions"][node]),
            int(tree["default_left"][node]),
            branches[0],
            branches[1],
        )

    def _leaf(self, tree: dict, node: int, target: int) -> int:
        return self.leaf(target, float(tree["split_conditions"][node]))  # leaf value lives here


def tree_ensemble_model(
    nodes: TreeArrays,
    n_features: int,
    n_classes: int,
    *,
    mode: int,
    graph_name: str,
    producer: str,
    base_margin: np.ndarray | None = None,
) -> onnx.ModelProto:
    """The served signature over a tree ensemble: float32 "features" [N, n_features] →
    summed per-class margins (+ `base_margin`, when the library has one) → Softmax →
    "probabilities" [N, n_classes]. `mode` is BRANCH_LT or BRANCH_LEQ for every node."""

    def f32(name: str, values: list[float] | np.ndarray) -> TensorProto:
        return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)

    tree_out = "margins" if base_margin is None else "tree_margins"
    trees = helper.make_node(
        "TreeEnsemble",
        [INPUT_NAME],
        [tree_out],
        domain="ai.onnx.ml",
        n_targets=n_classes,
        aggregate_function=1,  # SUM
        post_transform=0,  # NONE: any base margin is added, then the softmax is its own node
        tree_roots=nodes.roots,
        nodes_featureids=nodes.feature,
        nodes_splits=f32("nodes_splits", nodes.split),
        nodes_modes=numpy_helper.from_array(
            np.full(len(nodes.feature), mode, dtype=np.uint8), "nodes_modes"
        ),
        nodes_missing_value_tracks_true=nodes.missing_true,
        nodes_truenodeids=nodes.true_id,
        nodes_trueleafs=nodes.true_leaf,
        nodes_falsenodeids=nodes.false_id,
        nodes_falseleafs=nodes.false_leaf,
        leaf_targetids=nodes.leaf_target,
        leaf_weights=f32("leaf_weights", nodes.leaf_weight),
    )
    graph_nodes = [trees]
    initializer = []
    if base_margin is not None:
        graph_nodes.append(helper.make_node("Add", [tree_out, "base_margin"], ["margins"]))
        initializer.append(f32("base_margin", base_margin))
    graph_nodes.append(helper.make_node("Softmax", ["margins"], [OUTPUT_NAME], axis=1))
    graph = helper.make_graph(
        graph_nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, n_classes])],
        initializer=initializer,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
        ir_version=10,
        producer_name=producer,
    )
