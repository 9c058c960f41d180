"""Peer comparison: our DIN vs DeepCTR's DIN (deepctr 0.9.4), same data, same run.

    pip install deepctr            # or: pip install .[bench]  (not an install requirement)
    python -m benchmarks.peer_din --data_dir=out/bench/data [--epochs=6] [--steps_per_epoch=10]
                                  [--rounds=1]

DeepCTR 0.9.4 imports ``tensorflow.keras``; with ``TF_USE_LEGACY_KERAS=1`` (set by this script
and by every package of this repo) that *is* tf-keras 2.21, so it runs unchanged on TF 2.21.

Same model as far as the two libraries allow:

=============================== ============================== ================================
                                ours (``--model=din``)         DeepCTR ``DIN``
=============================== ============================== ================================
ids                             user, gender, age, item, category, seller; short history of
                                item/category/seller (20), tables shared target/history, dim 16
attention                       DIN local activation unit [q, k, q-k, q*k] -> 80 -> 40 -> 1,
                                sigmoid, no softmax (``att_activation="sigmoid"``,
                                ``att_weight_normalization=False``), padding masked
MLP                             200 -> 80 relu, dropout 0.2 -> 1 (``dnn_hidden_units=(200, 80)``)
extra                           + masked mean of the history   -
embedding l2                    0                              0 (``l2_reg_embedding=0``; its
                                                               default 1e-6 densifies the table
                                                               gradients)
optimizer                       legacy Adagrad 0.001 (acc 0.1) same
string -> id                    StringLookup in a tf.data map  the same (same vocabularies),
                                (``--lookup_in_input``, the    parallel to training
                                trainer's default)
parsed features                 what the step reads            the same set
=============================== ============================== ================================

Both read ``ctrcore.data.make_dataset(data_dir, "train", 1024, shuffle=True, repeat=True,
features=...)`` (ours through ``ctrcore.trainer.make_train_input``, exactly the trainer's input) and
are timed by the same callback inside one long ``fit()`` each (``benchmarks.train.time_fit``),
each in its own subprocess, in alternating order when ``--rounds`` > 1.
Ratio = our examples/s / DeepCTR's (target >= 1.0).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import List, Optional

from benchmarks.train import load_average, run_worker, time_fit

HISTORY_SIDES = ("item_id", "category_id", "seller_id")


def deepctr_inputs(spec, emb_dim: int, embeddings_initializer=None) -> dict:
    """DeepCTR's view of our examples: ``StringLookup``s on our vocabularies (padding -> 0, OOV
    -> 1, as ours), the feature columns and ``to_ids`` (a parsed batch -> DeepCTR's input dict).

    ``{"user", "target", "hist"}``: SparseFeat columns of the user features and of the target's
    sides, VarLenSparseFeat columns of the short history (named ``hist_<side>``, sharing the
    target's tables; maxlen ``short_len``); ``"to_ids"``; ``"names"``: the parsed features it
    reads (without the label). ``embeddings_initializer``: of every table (None: DeepCTR's default,
    ``RandomNormal(0, 1e-4, seed=2020)``)."""
    import tensorflow as tf
    import tf_keras as keras
    from deepctr.feature_column import SparseFeat, VarLenSparseFeat

    lookups = {v: keras.layers.StringLookup(vocabulary=spec.vocab_path(v), mask_token="",
                                            num_oov_indices=1) for v in spec.vocabularies}
    size = {v: int(l.vocabulary_size()) for v, l in lookups.items()}
    user_feats = ["user_id"] + [f"user_{p}" for p in spec.config.user_profile]
    L = spec.config.short_len
    init = {} if embeddings_initializer is None else {"embeddings_initializer": embeddings_initializer}
    user = [SparseFeat(n, size[spec.features[n].vocab], embedding_dim=emb_dim, **init) for n in user_feats]
    target = [SparseFeat(s, size[s], embedding_dim=emb_dim, **init) for s in HISTORY_SIDES]
    hist = [VarLenSparseFeat(SparseFeat(f"hist_{s}", size[s], embedding_dim=emb_dim, embedding_name=s, **init),
                             maxlen=L) for s in HISTORY_SIDES]

    def to_ids(f):
        x = {n: tf.cast(lookups[spec.features[n].vocab](f[n]), tf.int32)[:, None] for n in user_feats}
        for s in HISTORY_SIDES:
            x[s] = tf.cast(lookups[s](f[s]), tf.int32)[:, None]
            x[f"hist_{s}"] = tf.cast(lookups[s](f[f"short_{s}s"]), tf.int32)
        return x

    names = user_feats + list(HISTORY_SIDES) + [f"short_{s}s" for s in HISTORY_SIDES]
    return {"user": user, "target": target, "hist": hist, "to_ids": to_ids, "names": names}


def deepctr_worker(a) -> dict:
    import tensorflow as tf
    import tf_keras as keras
    from deepctr.models import DIN

    from ctrcore import schema
    from ctrcore.data import make_dataset

    spec = schema.load_spec(a.data_dir)
    keras.utils.set_random_seed(0)
    dc = deepctr_inputs(spec, a.emb_dim)
    model = DIN(dc["user"] + dc["target"] + dc["hist"], list(HISTORY_SIDES), dnn_hidden_units=(200, 80),
                dnn_activation="relu", att_hidden_size=(80, 40), att_activation="sigmoid",
                att_weight_normalization=False, l2_reg_embedding=0.0, dnn_dropout=0.2, task="binary")
    model.compile(keras.optimizers.legacy.Adagrad(0.001, initial_accumulator_value=0.1),
                  "binary_crossentropy")

    def to_ids(f):
        return dc["to_ids"](f), tf.cast(f[spec.label], tf.float32)[:, None]

    names = dc["names"] + [spec.label]
    ds = make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=True, repeat=True,
                      features=names)
    ds = ds.map(to_ids, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    load0 = load_average()
    res = time_fit(model, ds, a.epochs, a.warmup_epochs, a.steps_per_epoch)
    res.update(model="deepctr.DIN", batch_size=a.batch_size,
               examples_per_second=a.batch_size / res["step_s_median"],
               trainable_parameters=int(sum(tf.size(v).numpy() for v in model.trainable_variables)),
               load_average_start=load0, load_average_end=load_average())
    return res


def run(a) -> dict:
    common = [f"--data_dir={a.data_dir}", f"--batch_size={a.batch_size}", f"--epochs={a.epochs}",
              f"--warmup_epochs={a.warmup_epochs}", f"--steps_per_epoch={a.steps_per_epoch}"]
    try:
        import deepctr  # noqa: F401
    except ImportError as e:
        msg = f"deepctr is not installed ({e}); pip install deepctr"
        print(msg)
        return {"error": msg}
    runs = {"ours": [], "deepctr": []}
    for rnd in range(a.rounds):
        order = ["ours", "deepctr"] if rnd % 2 == 0 else ["deepctr", "ours"]
        for who in order:
            if who == "ours":
                r = run_worker("benchmarks.train", ["--model=din", "--optimizer=adagrad",
                                                    "--steps_per_execution=1", *common])
            else:
                r = run_worker("benchmarks.peer_din", common)
            runs[who].append(r)
            print(f"{who:8s} {r['examples_per_second']:9.0f} ex/s  step {1e3 * r['step_s_median']:7.1f} ms "
                  f"cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms/step cpu_util {r['cpu_util']:.2f}"
                  f"{' BIMODAL' if r['bimodal'] else ''} params {r['trainable_parameters']} "
                  f"load {r['load_average_start'][0]:.1f}", flush=True)
    step = {k: statistics.median(r["step_s_median"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_s_per_step_median"] for r in v) for k, v in runs.items()}
    ratio = step["deepctr"] / step["ours"]
    ratio_cpu = cpu["deepctr"] / cpu["ours"]
    print(f"ours / DeepCTR examples/s = {ratio:.2f} (wall), {ratio_cpu:.2f} (cpu-s) "
          f"({'OK' if ratio >= 1.0 else 'BELOW'} target 1.0)", flush=True)
    return {"ratio": ratio, "ratio_cpu": ratio_cpu, "step_seconds": step, "cpu_seconds_per_step": cpu,
            "examples_per_second": {k: a.batch_size / s for k, s in step.items()}, "runs": runs}


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--emb_dim", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--warmup_epochs", type=int, default=1)
    ap.add_argument("--steps_per_epoch", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    return ap


def main(argv: Optional[List[str]] = None):
    a = parser().parse_args(argv)
    if a.worker:
        print(json.dumps(deepctr_worker(a)), flush=True)
        return
    print(json.dumps({k: v for k, v in run(a).items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
