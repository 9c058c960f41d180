"""Prediction and evaluation of a split (the per-epoch validation and ``ccn.evaluate``).

Validation is an exact AUC over the whole split (``ctrcore.metrics``), computed by one prediction
pass over the serving inputs; the label is the spec's (``spec.label``).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ctrcore import metrics as metrics_lib
from ctrcore import schema
from ctrcore.data import make_dataset


def serving_inputs(features: Dict[str, tf.Tensor], spec: schema.FeatureSpec) -> Dict[str, tf.Tensor]:
    return {k: v for k, v in features.items() if k in spec.serving_features}


def make_predict_fn(model: keras.Model, spec: schema.FeatureSpec):
    @tf.function
    def predict(features):
        out = model(serving_inputs(features, spec), training=False)
        return tf.cast(tf.reshape(out["probabilities"], [-1]), tf.float32)
    return predict


def predict_split(model: keras.Model, spec: schema.FeatureSpec, data_dir: str, split: str,
                  batch_size: int, predict_fn=None, max_batches: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Probabilities for every example of ``split`` (file order) with the label and eval keys."""
    ds = make_dataset(data_dir, split, batch_size, spec=spec, shuffle=False, repeat=False,
                      deterministic=True)
    if max_batches:
        ds = ds.take(max_batches)
    predict_fn = predict_fn or make_predict_fn(model, spec)
    keys = [k for k in (spec.label, "user_id", "page_id", "history_length") if k in spec.features]
    cols: Dict[str, List[np.ndarray]] = {"prob": []}
    cols.update({k: [] for k in keys})
    for batch in ds:
        cols["prob"].append(predict_fn(batch).numpy())
        for k in keys:
            cols[k].append(batch[k].numpy())
    out = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    out["label"] = out.pop(spec.label)
    return out


def compute_metrics(pred: Dict[str, np.ndarray], thresholds: Optional[Sequence[float]]) -> dict:
    labels = pred["label"]
    probs = pred["prob"]
    if not np.all(np.isfinite(probs)):
        raise FloatingPointError(f"{int(np.sum(~np.isfinite(probs)))} non-finite predictions")
    return metrics_lib.evaluate_predictions(
        labels, probs, pred.get("user_id"), pred.get("page_id"), pred.get("history_length"),
        thresholds)


def evaluate_split(model, spec, data_dir, split, batch_size, thresholds=None, predict_fn=None,
                   max_batches=None) -> dict:
    t0 = time.time()
    pred = predict_split(model, spec, data_dir, split, batch_size, predict_fn, max_batches)
    res = compute_metrics(pred, thresholds)
    res["seconds"] = time.time() - t0
    return res
