"""``assets.extra/tf_serving_warmup_requests``: TF Serving replays these ``PredictionLog``
records when it loads a version, before marking it AVAILABLE, so the first live request does not
pay for graph optimisation / lazy initialisation.

The requests are built from real validation examples (``DATA_DIR/valid-*.tfrecord.gz``),
reduced to the serving features (labels, context and metadata are dropped, as in a live
request), at batch sizes 1, 16 and 128 (clipped to the examples available), for both signatures.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from ctrcore.schema import FeatureSpec
from serving import client
from serving.signatures import EXAMPLES_INPUT, SIGNATURE_DEFAULT, SIGNATURE_PREDICT, strict_parse_spec

WARMUP_FILENAME = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"
DEFAULT_BATCH_SIZES = (1, 16, 128)
MAX_RECORDS = 1000  # TF Serving reads at most this many warmup records


def read_examples(data_dir: str, split: str = "valid", limit: int = 128) -> List[bytes]:
    """The first ``limit`` serialized examples of ``DATA_DIR/{split}-*.tfrecord.gz``."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*.tfrecord*")))
    if not files:
        raise FileNotFoundError(f"no {split}-*.tfrecord* under {data_dir} for warmup requests")
    comp = "GZIP" if files[0].endswith(".gz") else ""
    ds = tf.data.TFRecordDataset(files, compression_type=comp).take(limit)
    return [r.numpy() for r in ds]


def to_serving_examples(serialized: Sequence[bytes], spec: FeatureSpec) -> List[bytes]:
    """Keep only the serving features of each example (what a live request carries)."""
    keep = set(spec.serving_features)
    out = []
    for s in serialized:
        ex = tf.train.Example.FromString(s if isinstance(s, bytes) else s.SerializeToString())
        for k in list(ex.features.feature.keys()):
            if k not in keep:
                del ex.features.feature[k]
        out.append(ex.SerializeToString())
    return out


def parse_serving_arrays(serialized: Sequence[bytes], spec: FeatureSpec) -> dict:
    """Parse serialized examples with the strict serving parse spec -> numpy arrays."""
    parsed = tf.io.parse_example(tf.constant(list(serialized), tf.string), strict_parse_spec(spec))
    return {k: v.numpy() for k, v in parsed.items()}


def warmup_logs(examples: Sequence[bytes], spec: FeatureSpec, model_name: str,
                batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                signatures: Sequence[str] = (SIGNATURE_DEFAULT, SIGNATURE_PREDICT)):
    """``PredictionLog`` records (``predict_log.request`` only) for each signature and batch size."""
    from tensorflow_serving.apis import prediction_log_pb2

    examples = to_serving_examples(examples, spec)
    if not examples:
        raise ValueError("no examples for warmup requests")
    sizes = sorted({min(int(b), len(examples)) for b in batch_sizes if int(b) > 0})
    logs = []
    for sig in signatures:
        for b in sizes:
            batch = examples[:b]
            if sig == SIGNATURE_DEFAULT:
                arrays = {EXAMPLES_INPUT: np.array(batch, dtype=object)}
            else:
                arrays = parse_serving_arrays(batch, spec)
            req = client.predict_request_from_arrays(arrays, model_name, sig)
            logs.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)))
    return logs[:MAX_RECORDS]


def write_warmup_file(export_dir: str, logs: Iterable) -> str:
    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILENAME)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as w:
        for log in logs:
            w.write(log.SerializeToString())
    return path


def read_warmup_file(path: str) -> list:
    from tensorflow_serving.apis import prediction_log_pb2

    if tf.io.gfile.isdir(path):
        path = os.path.join(path, ASSETS_EXTRA, WARMUP_FILENAME)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def replay(loaded, logs) -> List[dict]:
    """Run each warmup request through a loaded SavedModel (what TF Serving does at load)."""
    outs = []
    for log in logs:
        req = log.predict_log.request
        arrays = client.request_to_arrays(req)
        outs.append(client.run_arrays_locally(loaded, arrays, req.model_spec.signature_name or SIGNATURE_DEFAULT))
    return outs


def examples_for_warmup(data_dir: Optional[str], limit: int = max(DEFAULT_BATCH_SIZES)) -> Optional[List[bytes]]:
    return read_examples(data_dir, "valid", limit) if data_dir else None
