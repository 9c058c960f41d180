#!/usr/bin/env python
"""Our DIN, DeepFM and W&D against DeepCTR 0.9.4's DIN, DeepFM and WDL on the same Beauty data.

    python scripts/compare_backbones_deepctr.py [--seeds=0,1,2] [--only=ours_din,deepctr_din]
        [--data_dir=out/beauty/data] [--runs_dir=out/beauty/backbones]
        [--results=results/backbones_beauty_vs_deepctr] [--report_only]

One run per (model, seed), one subprocess at a time, in ``RUNS_DIR/<model>/seed<k>``; a run whose
``metrics.json`` exists is skipped, so the same command resumes. Seed-major order (every model of
seed 0, then seed 1, ...). Finally (also with ``--report_only``) writes ``RESULTS.json`` and
``RESULTS.md``: test AUC mean ± std per model over its finished seeds, per-seed AUCs, best epochs,
the data digest and the command of every run, computed from the runs' files (nothing hard-coded).

Same setup for both libraries, read from our flag files ``configs/<model>_beauty.flags`` (the
DeepCTR runs take their sizes from the flag file of the matching model of ours):

* data: the same preprocessed TFRecords (``--data_dir``), the same vocabularies (DeepCTR's ids are
  ``benchmarks.peer_din.deepctr_inputs``: ``StringLookup`` on our vocabulary files), the same
  features: user id (+ profile), target item / category / seller, short history of the three
  sides (tables shared between target and history);
* embedding size, prediction-MLP units (relu), dropout, batch size, Adam (tf-keras legacy) and
  its learning rate, epochs, early stopping on validation AUC with the flag file's patience, the
  best epoch's weights evaluated on test; the training split read in memory and fully shuffled
  every epoch (``ctrcore.data.in_memory_dataset``, as our trainer's ``--train_input=memory``);
* the same metrics code (``ctrcore.evaluation.predict_split`` / ``compute_metrics``).

Differences that remain (each library's own model definition):

* DeepCTR's embedding L2 (``l2_reg_embedding``) regularises whole tables (it densifies the
  gradients); it is set to 0, and ``l2_reg_linear`` to 0. Ours: ``--l2_emb`` of the flag file on
  the gathered rows.
* DIN: DeepCTR's attention unit keeps its defaults (Dice, no softmax); no masked mean of the
  history in its MLP input (ours has one). Our DIN runs with ``configs/din_beauty.flags`` as it
  is (its attention / wide options are recorded in each run's ``train_config.json``).
* W&D: DeepCTR's WDL wide part is linear id weights only (user + target ids); ours adds the hashed
  target x history category cross.
* DeepFM: the same fields (user, target sides, mean-pooled history sides); DeepCTR's linear part
  over the user and target ids, as ours.
* Embedding init: DeepCTR's ``RandomNormal(0, 1e-4, seed=2020)`` (the same tables for every
  seed); ours uniform(-0.05, 0.05) from the run's seed. The extra row ``deepctr_din_uinit``
  (``--only=deepctr_din_uinit``) is DeepCTR's DIN with our init.

Also ``--ablations=<rows>|all``: the one-change-at-a-time runs of :data:`ABLATIONS` (our DIN / W&D
with one flag or the data changed), written to ``RESULTS_ablations.{json,md}`` with per-epoch
train / validation AUCs and what the trained attention units do (:func:`attention_diagnostics`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import ctrcore  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before any tensorflow import)
from ctrcore import reporting  # noqa: E402
from ctrcore.rundir import RunDir  # noqa: E402
from ctrcore.metrics import GROUP_NAMES  # noqa: E402

#: run name -> (library, our model / DeepCTR class, flag file, display name)
MODELS: Dict[str, tuple] = {
    "ours_din": ("ours", "din", "din_beauty", "DIN (ours)"),
    "ours_deepfm": ("ours", "deepfm", "deepfm_beauty", "DeepFM (ours)"),
    "ours_wide_deep": ("ours", "wide_deep", "wide_deep_beauty", "W&D (ours)"),
    "deepctr_din": ("deepctr", "DIN", "din_beauty", "DIN (DeepCTR 0.9.4)"),
    "deepctr_deepfm": ("deepctr", "DeepFM", "deepfm_beauty", "DeepFM (DeepCTR 0.9.4)"),
    "deepctr_wdl": ("deepctr", "WDL", "wide_deep_beauty", "WDL (DeepCTR 0.9.4)"),
    # not in the default order (--only): DeepCTR's DIN with our embedding init, uniform(-0.05, 0.05)
    # per seed, instead of DeepCTR's RandomNormal(0, 1e-4) with the fixed seed 2020
    "deepctr_din_uinit": ("deepctr", "DIN", "din_beauty", "DIN (DeepCTR 0.9.4), our embedding init"),
    # DeepCTR's own default L2 (whole-table l2_reg_embedding 1e-5 and l2_reg_linear 1e-5 for WDL /
    # DeepFM, 1e-6 for DIN) instead of 0
    "deepctr_wdl_defl2": ("deepctr", "WDL", "wide_deep_beauty", "WDL (DeepCTR 0.9.4), its default L2"),
    "deepctr_din_defl2": ("deepctr", "DIN", "din_beauty", "DIN (DeepCTR 0.9.4), its default L2"),
}
#: run order within a seed: DeepCTR first, then ours
ORDER = ["deepctr_din", "deepctr_deepfm", "deepctr_wdl", "ours_din", "ours_deepfm", "ours_wide_deep"]
#: rows reported when they have runs, run only when named by --only
EXTRA = ["deepctr_din_uinit", "deepctr_wdl_defl2", "deepctr_din_defl2"]

#: One-change-at-a-time experiments on our DIN / W&D (``--ablations``): name -> (label, flag file,
#: extra flags, data dir suffix ("" = ``--data_dir``, else ``--data_dir`` + suffix, another
#: preprocessed copy). The flag files as they were before issue 14 (sigmoid attention unit):
#: ``--din_att_activation=sigmoid`` is given explicitly so the rows stay what they were if the
#: flag files' choice changes.
SIG = "--din_att_activation=sigmoid"
ABLATIONS: Dict[str, tuple] = {
    "din": ("DIN (attention unit: sigmoid, the old default)", "din_beauty", [SIG], ""),
    "wd": ("W&D", "wide_deep_beauty", [], ""),
    "wd_nocross": ("W&D without the category cross (1 bucket: a constant)", "wide_deep_beauty",
                   ["--wide_buckets=1"], ""),
    "din_linear": ("DIN + first-order id weights", "din_beauty", [SIG, "--din_wide=linear"], ""),
    "din_widehead": ("DIN + the W&D wide head", "din_beauty", [SIG, "--din_wide=wide"], ""),
    "din_dice": ("DIN, attention unit Dice", "din_beauty", ["--din_att_activation=dice"], ""),
    "din_prelu": ("DIN, attention unit PReLU", "din_beauty", ["--din_att_activation=prelu"], ""),
    "din_relu": ("DIN, attention unit ReLU", "din_beauty", ["--din_att_activation=relu"], ""),
    "din_l2e4": ("DIN, l2_emb 1e-4", "din_beauty", [SIG, "--l2_emb=1e-4"], ""),
    "wd_l2e4": ("W&D, l2_emb 1e-4", "wide_deep_beauty", ["--l2_emb=1e-4"], ""),
    "din_short1": ("DIN, history of 1 item (short_len 1)", "din_beauty", [SIG], "_short1"),
    "wd_short1": ("W&D, history of 1 item (short_len 1)", "wide_deep_beauty", [], "_short1"),
}


def log(msg: str) -> None:
    print(f"{datetime.datetime.now():%H:%M:%S} {msg}", flush=True)


def flagfile_config(flagfile: str, data_dir: str):
    """Our ``TrainConfig`` from ``configs/<flagfile>.flags`` (parsed by ccn.train's flags)."""
    from absl import flags

    from ccn import train as T

    fv = flags.FlagValues()
    T.define_flags(fv)
    old = os.getcwd()
    os.chdir(ROOT)  # nested --flagfile paths are relative to the repository root
    try:
        fv(["ccn.train", f"--flagfile=configs/{flagfile}.flags", "--model_dir=/tmp/unused",
            f"--data_dir={data_dir}"])
    finally:
        os.chdir(old)
    return T.config_from_flags(fv)[0]


# ---------------------------------------------------------------------------------------------
# one DeepCTR run (in its own process: --worker)
# ---------------------------------------------------------------------------------------------
def build_deepctr(kind: str, dc: dict, cfg, seed: int, default_l2: bool = False):
    """DeepCTR's ``kind`` (DIN / DeepFM / WDL) on the columns of ``peer_din.deepctr_inputs``,
    with our flag file's MLP units and dropout; embedding / linear L2 0 (module docstring), or
    DeepCTR's defaults with ``default_l2``."""
    from deepctr.models import DIN, WDL, DeepFM

    from benchmarks.peer_din import HISTORY_SIDES

    common = dict(dnn_hidden_units=tuple(cfg.mlp_units), dnn_activation="relu", dnn_dropout=cfg.dropout,
                  seed=seed, task="binary")
    if default_l2:
        return {"DIN": DIN, "WDL": WDL, "DeepFM": DeepFM}[kind](
            *((dc["user"] + dc["target"] + dc["hist"], list(HISTORY_SIDES)) if kind == "DIN"
              else (dc["user"] + dc["target"], dc["user"] + dc["target"] + dc["hist"])), **common)
    common["l2_reg_embedding"] = 0.0
    if kind == "DIN":
        return DIN(dc["user"] + dc["target"] + dc["hist"], list(HISTORY_SIDES), **common)
    linear = dc["user"] + dc["target"]
    deep = dc["user"] + dc["target"] + dc["hist"]  # history: VarLenSparseFeat, combiner mean
    if kind == "DeepFM":
        return DeepFM(linear, deep, l2_reg_linear=0.0, **common)
    if kind == "WDL":
        return WDL(linear, deep, l2_reg_linear=0.0, **common)
    raise ValueError(f"unknown DeepCTR model {kind!r}")


def deepctr_run(a) -> None:
    """Train one DeepCTR model: our flag file's setup, early stopping on validation AUC, the best
    epoch's weights on test; writes ``metrics.json`` and ``history.json`` in ``--run_dir``."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from benchmarks.peer_din import deepctr_inputs
    from ctrcore import data, schema
    from ctrcore.evaluation import compute_metrics, predict_split
    from ctrcore.record import data_digest

    _, kind, flagfile, _ = MODELS[a.model]
    cfg = flagfile_config(flagfile, a.data_dir)
    spec, stats = schema.load_spec(a.data_dir), schema.load_stats(a.data_dir)
    keras.utils.set_random_seed(a.seed)
    init = keras.initializers.RandomUniform(-0.05, 0.05, seed=a.seed) if a.model.endswith("_uinit") else None
    dc = deepctr_inputs(spec, cfg.emb_dim, embeddings_initializer=init)
    model = build_deepctr(kind, dc, cfg, a.seed, default_l2=a.model.endswith("_defl2"))
    model.compile(keras.optimizers.legacy.Adam(cfg.learning_rate), "binary_crossentropy")
    label = spec.label

    def ids_and_label(f):
        out = dict(dc["to_ids"](f))
        out["__label__"] = tf.cast(f[label], tf.float32)
        return out

    t0 = time.time()
    cols = data.load_columns(a.data_dir, "train", spec=spec, features=dc["names"] + [label], map_fn=ids_and_label)
    n = len(cols["__label__"])
    steps = n // cfg.batch_size
    ds = data.in_memory_dataset(cols, cfg.batch_size, seed=a.seed, repeat=True)
    ds = ds.map(lambda b: ({k: v for k, v in b.items() if k != "__label__"}, b["__label__"][:, None]))
    load_s = time.time() - t0

    @tf.function
    def predict(batch):
        return tf.reshape(model(dc["to_ids"](batch), training=False), [-1])

    thresholds = stats.get("activeness_thresholds")
    epochs, best = [], {"epoch": 0, "val_auc": -1.0}
    best_weights = None

    class EvalCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            nonlocal best_weights
            train_s = time.time() - self.t
            t = time.time()
            val = compute_metrics(predict_split(None, spec, a.data_dir, "valid", cfg.eval_batch_size,
                                                predict_fn=predict), thresholds)
            epochs.append({"epoch": epoch + 1, "train": {"loss": float((logs or {}).get("loss", float("nan")))},
                           "val": {k: val[k] for k in ("auc", "gauc", "logloss")},
                           "train_seconds": train_s, "val_seconds": time.time() - t, "steps": steps})
            log(f"{a.model} seed{a.seed} epoch {epoch + 1}: val_auc={val['auc']:.4f} ({train_s:.0f}s train)")
            if val["auc"] > best["val_auc"]:
                best.update(epoch=epoch + 1, val_auc=val["auc"])
                best_weights = self.model.get_weights()
            elif cfg.early_stopping_patience and epoch + 1 - best["epoch"] >= cfg.early_stopping_patience:
                self.model.stop_training = True

    t_fit = time.time()
    model.fit(ds, steps_per_epoch=steps, epochs=cfg.epochs, verbose=0, callbacks=[EvalCallback()])
    fit_s = time.time() - t_fit
    model.set_weights(best_weights)
    # the kept weights are the best epoch's: their validation AUC again (a check, recorded)
    val_again = compute_metrics(predict_split(None, spec, a.data_dir, "valid", cfg.eval_batch_size,
                                              predict_fn=predict), thresholds)["auc"]
    if abs(val_again - best["val_auc"]) > 1e-6:
        raise RuntimeError(f"restored weights give val AUC {val_again}, best epoch had {best['val_auc']}")
    test = compute_metrics(predict_split(None, spec, a.data_dir, "test", cfg.eval_batch_size, predict_fn=predict),
                           thresholds)
    train_seconds = float(np.sum([e["train_seconds"] for e in epochs]))
    command = " ".join(["python", "scripts/compare_backbones_deepctr.py"] + [shlex.quote(x) for x in a.argv])
    metrics = dict(test, best_epoch=best["epoch"], best_val_auc=best["val_auc"], seed=a.seed,
                   data=data_digest(a.data_dir), data_dir=a.data_dir, model=f"deepctr.{kind}",
                   setup={"flagfile": f"configs/{flagfile}.flags", "emb_dim": cfg.emb_dim,
                          "mlp_units": list(cfg.mlp_units), "dropout": cfg.dropout, "batch_size": cfg.batch_size,
                          "optimizer": "adam (tf_keras legacy)", "learning_rate": cfg.learning_rate,
                          "epochs": cfg.epochs, "early_stopping_patience": cfg.early_stopping_patience,
                          "l2_reg_embedding": "DeepCTR default" if a.model.endswith("_defl2") else 0.0,
                          "train_examples": n, "steps_per_epoch": steps,
                          "embeddings_initializer": "uniform(-0.05, 0.05), seed = run seed" if init is not None
                          else "DeepCTR default: RandomNormal(0, 1e-4, seed=2020)"},
                   command=command)
    history = {"epochs": epochs, "best": best, "completed": True,
               "runtime": {"train_seconds": train_seconds, "wall_seconds": fit_s + load_s, "steps": steps * len(epochs)},
               "trainable_parameters": int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))}
    os.makedirs(a.run_dir, exist_ok=True)
    run = RunDir(a.run_dir)
    run.write_history(history)
    run.write_metrics("test", metrics)  # last: its presence marks the run as done
    log(f"{a.model} seed{a.seed}: test auc {test['auc']:.4f} (best epoch {best['epoch']})")


# ---------------------------------------------------------------------------------------------
# what the data rewards (no training): single-feature AUCs, history truncation
# ---------------------------------------------------------------------------------------------
def data_properties(data_dir: str, splits=("valid", "test")) -> dict:
    """Per split: the AUC of single hand-made scores that need no model, against the labels:

    * ``item_popularity``: the target item's count among the training *positives* (negatives are
      drawn uniformly from the items, positives by popularity);
    * ``category_match``: the share of the short history whose category is the target's (what
      W&D's hashed cross target x history category reads: the mean of its weights);
    * ``item_in_history``: whether the target item is in the short history;
    * ``user_ctr``: the user's training CTR (every user has as many sampled negatives as
      positives, so it carries nothing: the user id has nothing to learn but noise);

    and the history-length distribution: mean, the share of examples whose history is longer
    than the short sequence (``short_len``, truncated) and the share with an empty history."""
    import numpy as np

    from ctrcore import data, metrics, schema

    spec = schema.load_spec(data_dir)
    L = spec.config.short_len
    feats = ["label", "item_id", "category_id", "user_id", "short_item_ids", "short_category_ids", "history_length"]
    tr = data.load_columns(data_dir, "train", spec=spec, features=feats)
    pos = tr["label"] == 1
    items, counts = np.unique(tr["item_id"][pos], return_counts=True)
    pop = dict(zip(items.tolist(), counts.tolist()))
    users, upos = np.unique(tr["user_id"][pos], return_counts=True)
    _, uall = np.unique(tr["user_id"], return_counts=True)
    uctr = dict(zip(users.tolist(), (upos / uall[np.searchsorted(np.unique(tr["user_id"]), users)]).tolist()))
    out = {"short_len": L, "train_examples": int(len(tr["label"])),
           "train_user_ctr": {"min": float(min(uctr.values())), "max": float(max(uctr.values()))}}
    for split in splits:
        c = data.load_columns(data_dir, split, spec=spec, features=feats)
        y = c["label"]
        valid = c["short_item_ids"] != b""
        n_valid = np.maximum(valid.sum(1), 1)
        cat_match = ((c["short_category_ids"] == c["category_id"][:, None]) & valid).sum(1) / n_valid
        in_hist = ((c["short_item_ids"] == c["item_id"][:, None]) & valid).any(1)
        scores = {"item_popularity": np.array([pop.get(i, 0) for i in c["item_id"].tolist()], float),
                  "category_match": cat_match.astype(float), "item_in_history": in_hist.astype(float),
                  "user_ctr": np.array([uctr.get(u, 0.5) for u in c["user_id"].tolist()], float)}
        h = c["history_length"].astype(float)
        out[split] = {"auc": {k: float(metrics.auc(y, v)) for k, v in scores.items()},
                      "history_length": {"mean": float(h.mean()), "share_truncated": float((h > L).mean()),
                                         "share_empty": float((h == 0).mean()), "n": int(len(h))}}
    return out


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------
def run_dir(runs_dir: str, name: str, seed: int) -> str:
    return os.path.join(runs_dir, name, f"seed{seed}")


def command(name: str, seed: int, args) -> List[str]:
    """The command line of one run (relative paths: run from the repository root)."""
    lib, _, flagfile, _ = MODELS[name]
    rd = run_dir(args.runs_dir, name, seed)
    if lib == "ours":
        return [sys.executable, "-m", "ccn.train", f"--flagfile=configs/{flagfile}.flags", f"--seed={seed}",
                f"--model_dir={rd}", f"--data_dir={args.data_dir}"]
    return [sys.executable, "scripts/compare_backbones_deepctr.py", "--worker", f"--model={name}", f"--seed={seed}",
            f"--run_dir={rd}", f"--data_dir={args.data_dir}"]


def ablation_command(name: str, seed: int, args) -> List[str]:
    _, flagfile, extra, suffix = ABLATIONS[name]
    return [sys.executable, "-m", "ccn.train", f"--flagfile=configs/{flagfile}.flags", *extra, f"--seed={seed}",
            f"--model_dir={os.path.join(args.ablations_dir, name, f'seed{seed}')}",
            f"--data_dir={args.data_dir.rstrip('/') + suffix}"]


def write_ablations(args) -> dict:
    """``RESULTS_ablations.{json,md}`` from the runs under ``--ablations_dir`` (validation AUC
    decides; test AUC shown beside it)."""
    records = []
    for name in ABLATIONS:
        d = os.path.join(args.ablations_dir, name)
        for sd in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            rd = os.path.join(d, sd)
            m = RunDir(rd).read_metrics(default=None)
            if m and sd.startswith("seed"):
                rec = RunDir(rd).read_config(default=None)
                records.append({"dir": rd, "key": name, "seed": int(sd[4:]), "metrics": m, "record": rec,
                                "history": RunDir(rd).read_history(default=None)})
    summ = reporting.summarise(records, GROUP_NAMES)
    res = {"generated": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "ablations_dir": args.ablations_dir,
           "rows": {}}
    for name, (label, flagfile, extra, suffix) in ABLATIONS.items():
        rs = [r for r in records if r["key"] == name]
        if not rs:
            continue
        s = summ[name]
        res["rows"][name] = {
            "label": label, "flagfile": f"configs/{flagfile}.flags", "extra_flags": extra,
            "data_dir": args.data_dir.rstrip("/") + suffix, "seeds": s["seeds"],
            "best_val_auc": s["best_val_auc"], "test_auc": s["auc"], "best_epoch": s["best_epoch"],
            "data": s["data"],
            "runs": [{"seed": r["seed"], "dir": r["dir"], "command": (r["record"].get("run_info") or {}).get("command"),
                      "best_val_auc": r["metrics"].get("best_val_auc"), "test_auc": r["metrics"].get("auc"),
                      "best_epoch": r["metrics"].get("best_epoch"),
                      "per_epoch": [{"epoch": e["epoch"], "train_auc": e["train"].get("auc"), "val_auc": e["val"]["auc"]}
                                    for e in r["history"].get("epochs", [])],
                      "config": {k: (r["record"].get("config") or {}).get(k) for k in
                                 ("model", "din_att_activation", "din_wide", "wide_buckets", "l2_emb", "emb_dim",
                                  "mlp_units", "dropout", "batch_size", "learning_rate", "seed")}}
                     for r in sorted(rs, key=lambda r: r["seed"])]}
    diag_path = os.path.join(args.ablations_dir, "attention_diagnostics.json")
    diags = read_json(diag_path)
    for name in ("din", "din_dice", "din_prelu", "din_relu"):
        for r in res["rows"].get(name, {}).get("runs", [])[:2]:
            if r["dir"] not in diags:
                diags[r["dir"]] = dict(attention_diagnostics(r["dir"]), row=name, seed=r["seed"])
                with open(diag_path, "w") as f:
                    json.dump(diags, f, indent=1)
    res["attention_diagnostics"] = diags
    out = args.results + "_ablations"
    with open(out + ".json", "w") as f:
        json.dump(res, f, indent=1, default=float)
    lines = ["# Backbones on Amazon Beauty: one change at a time (validation decides)", "",
             f"Generated {res['generated']} by `scripts/compare_backbones_deepctr.py --ablations` from the runs' "
             f"`metrics.json` / `history.json` / `train_config.json` under `{args.ablations_dir}`. "
             "best val AUC: the kept (best) epoch's validation AUC, mean ± sample std over the seeds; "
             "test AUC: the same runs on test (shown, not used to choose). Train / val AUC per epoch: "
             "seed by seed.", "",
             "| Row | flags (besides the flag file) | seeds | best val AUC | test AUC | best epoch | train AUC / val AUC per epoch |",
             "|---|---|---|---:|---:|---:|---|"]
    for name, row in res["rows"].items():
        per = "<br>".join(f"s{r['seed']}: " + ", ".join(f"{e['train_auc']:.3f}/{e['val_auc']:.4f}" for e in r["per_epoch"])
                          for r in row["runs"])
        flags_ = " ".join(f"`{x}`" for x in row["extra_flags"]) or "-"
        if row["data_dir"] != args.data_dir:
            flags_ += f" data `{row['data_dir']}`"
        lines.append(f"| {row['label']} (`{name}`) | {flags_} | {','.join(map(str, row['seeds']))} | "
                     f"{reporting.fmt_ms(row['best_val_auc'])} | {reporting.fmt_ms(row['test_auc'])} | "
                     f"{reporting.fmt_ms(row['best_epoch'], 1)} | {per} |")
    if diags:
        lines += ["", "## What the attention unit learned (best weights, first 8192 validation examples)", "",
                  "Unnormalised weights of the unit over the valid history positions (`attention_diagnostics` "
                  "in the script). spread: median over examples (>= 2 history items) of std / |mean|; "
                  "same / other category: mean weight of the history items in / out of the target's category "
                  "(examples with both); difference: (same - other) / std of all weights.", "",
                  "| run | examples | mean weight | spread | same-category weight | other-category weight | difference |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for d in sorted(diags.values(), key=lambda d: (d["row"], d["seed"])):
            lines.append(f"| `{d['row']}` seed {d['seed']} | {d['examples']} | {d['weight_mean']:.3f} | "
                         f"{d['weight_spread_median']:.2f} | {d['weight_same_category']:.3f} | "
                         f"{d['weight_other_category']:.3f} | {d['same_minus_other_over_std']:+.2f} |")
    lines += ["", "## Commands", "",
              "Each row: `python -m ccn.train --flagfile=configs/<flag file> <flags> --seed=S "
              "--model_dir=<ablations dir>/<row>/seedS --data_dir=<data dir>`; the recorded command of every run:", ""]
    for name, row in res["rows"].items():
        for r in row["runs"]:
            lines.append(f"* `{name}` seed {r['seed']}: `{r['command']}`")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"wrote {out}.json / .md ({len(records)} runs)")
    return res


def attention_diagnostics(run_dir: str, n: int = 8192) -> dict:
    """What a trained DIN's attention unit does on the first ``n`` validation examples (best
    weights): per example with >= 2 history items, the spread of its (unnormalised) weights
    (std / |mean| over the valid positions; median over examples), and, over the examples whose
    history has items both in and out of the target's category, the mean weight of each kind and
    their difference in units of the weights' std (the sign is free: the pooled vector feeds an
    MLP)."""
    import numpy as np
    import tensorflow as tf

    from ccn.evaluate import rebuild
    from ctrcore import data
    from ctrcore.layers import matmul_last

    model, spec, _, record = rebuild(run_dir)
    bb = model.backbone
    ds = data.make_dataset(record["config"]["data_dir"], "valid", n, spec=spec, shuffle=False, deterministic=True)
    batch = next(iter(ds))
    ids = bb.lookup({k: v for k, v in batch.items() if k in spec.serving_features})
    x = bb.arch.embed(bb.front.begin(ids))
    att = bb.din_att
    d = int(x.short.shape[-1])
    w = att.mlp.first_kernel(4 * d)
    pre = (tf.matmul(x.target, w[:d] + w[2 * d:3 * d])[:, None, :] + matmul_last(x.short, w[d:2 * d] - w[2 * d:3 * d])
           + matmul_last(x.target[:, None, :] * x.short, w[3 * d:]))
    score = att._unit(pre, False).numpy()
    mask = x.short_mask.numpy().astype(bool)
    cat_name = bb.front.category_feature("short_")
    same = (ids[cat_name].numpy() == ids[bb.front.category_feature("")].numpy()[:, None]) & mask
    many = mask.sum(1) >= 2
    sc = np.where(mask, score, np.nan)[many]
    spread = np.nanstd(sc, axis=1) / np.maximum(np.abs(np.nanmean(sc, axis=1)), 1e-9)
    both = many & same.any(1) & (mask & ~same).any(1)
    w_same = np.array([score[i][same[i]].mean() for i in np.where(both)[0]])
    w_other = np.array([score[i][mask[i] & ~same[i]].mean() for i in np.where(both)[0]])
    return {"run_dir": run_dir, "examples": int(many.sum()), "weight_mean": float(np.nanmean(sc)),
            "weight_spread_median": float(np.median(spread)),
            "same_category_examples": int(both.sum()),
            "weight_same_category": float(w_same.mean()), "weight_other_category": float(w_other.mean()),
            "same_minus_other_over_std": float((w_same.mean() - w_other.mean()) / np.nanstd(sc))}


def shown(cmd: List[str]) -> str:
    return " ".join(["python"] + [shlex.quote(c) for c in cmd[1:]])


def _run_logged(cmd: List[str], run_dir: str, label: str) -> int:
    """Run ``cmd`` from the repository root, its output appended to ``run_dir/log.txt``."""
    os.makedirs(run_dir, exist_ok=True)
    log(f"start {label}: {shown(cmd)}")
    with open(os.path.join(run_dir, "log.txt"), "a") as fh:
        return subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)


def _done(run_dir: str) -> bool:
    """The run in ``run_dir`` has finished (its test metrics are written)."""
    return RunDir(run_dir).read_metrics(default=None) is not None


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def collect(args) -> List[dict]:
    """Run records (``ctrcore.reporting``) of every finished run under ``--runs_dir``."""
    out = []
    for name in ORDER + EXTRA:
        d = os.path.join(args.runs_dir, name)
        if not os.path.isdir(d):
            continue
        for sd in sorted(os.listdir(d)):
            rd = os.path.join(d, sd)
            m = RunDir(rd).read_metrics(default=None)
            if not m or not sd.startswith("seed"):
                continue
            seed = int(sd[4:])
            rec = RunDir(rd).read_config(default=None)
            if MODELS[name][0] == "deepctr":
                rec = {"run_info": {"command": m.get("command", "")}}
            else:
                rec = dict(rec, run_info=dict(rec.get("run_info") or {}, command=shown(command(name, seed, args))))
            out.append({"dir": rd, "key": name, "seed": seed, "metrics": m, "record": rec,
                        "history": RunDir(rd).read_history(default=None)})
    return out


def write_results(args, planned: List[tuple]) -> dict:
    records = collect(args)
    summ = reporting.summarise(records, GROUP_NAMES)
    digests = sorted({json.dumps({k: v for k, v in (r["metrics"].get("data") or {}).items()
                                  if k in ("feature_spec_sha256", "stats_sha256", "examples", "source")},
                                 sort_keys=True) for r in records})
    models = {}
    for name in ORDER + [e for e in EXTRA if e in summ]:
        s = summ.get(name)
        lib, kind, flagfile, label = MODELS[name]
        entry = {"label": label, "library": lib, "model": kind, "flagfile": f"configs/{flagfile}.flags",
                 "seeds": [], "auc_per_seed": {}, "runs": []}
        if s:
            entry.update(seeds=s["seeds"], auc_mean=s["auc"]["mean"], auc_std=s["auc"]["std"],
                         logloss_mean=s["logloss"]["mean"], gauc_mean=s["gauc"]["mean"],
                         best_epoch=s["best_epoch"], best_val_auc=s["best_val_auc"],
                         auc_per_seed={str(k): v for k, v in s["auc_per_seed"].items()},
                         train_seconds=s["runtime"]["train_seconds"]["mean"])
        for r in records:
            if r["key"] == name:
                entry["runs"].append({"seed": r["seed"], "dir": r["dir"], "command": r["record"]["run_info"]["command"],
                                      "auc": r["metrics"].get("auc"), "best_epoch": r["metrics"].get("best_epoch"),
                                      "val_auc_per_epoch": [e["val"]["auc"] for e in r["history"].get("epochs", [])],
                                      "hparams": {k: (r["record"].get("config") or {}).get(k) for k in
                                                  ("din_att_activation", "din_wide", "l2_emb", "emb_dim",
                                                   "mlp_units", "dropout", "batch_size", "learning_rate")}
                                      if lib == "ours" else (r["metrics"].get("setup") or {})})
        models[name] = entry
    pending = [f"{n}/seed{s}" for n, s in planned if not _done(run_dir(args.runs_dir, n, s))]
    res = {"generated": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "driver": driver_command(args),
           "data_dir": args.data_dir, "data_digests": [json.loads(d) for d in digests], "models": models,
           "relaimpr_din_over_wd": {lib: reporting.relaimpr(models[f"{lib}_din"].get("auc_mean", float("nan")),
                                                            models[f"{lib}_{wd}"].get("auc_mean", float("nan")))
                                    if models[f"{lib}_din"].get("auc_mean") and models[f"{lib}_{wd}"].get("auc_mean")
                                    else None
                                    for lib, wd in (("ours", "wide_deep"), ("deepctr", "wdl"))},
           "pending": pending, "data_properties": cached_data_properties(args)}
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results + ".json", "w") as f:
        json.dump(res, f, indent=1, default=float)
    with open(args.results + ".md", "w") as f:
        f.write(markdown(res, summ))
    log(f"wrote {args.results}.json / .md ({len(records)} runs, {len(pending)} pending)")
    return res


def cached_data_properties(args) -> dict:
    """:func:`data_properties` of ``--data_dir``, computed once into ``RUNS_DIR/data_properties.json``
    (recomputed when the data digest changes)."""
    from ctrcore.record import data_digest

    path = os.path.join(args.runs_dir, "data_properties.json")
    digest = {k: v for k, v in data_digest(args.data_dir).items() if k.endswith("sha256")}
    old = read_json(path)
    if old.get("digest") == digest:
        return old
    props = dict(data_properties(args.data_dir), digest=digest)
    os.makedirs(args.runs_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(props, f, indent=1)
    return props


def markdown(res: dict, summ: dict) -> str:
    layout = reporting.TableLayout(
        name="backbones_vs_deepctr", title="Test AUC per model (Amazon Beauty)",
        rows=tuple(reporting.Row(n, MODELS[n][3]) for n in ORDER + [e for e in EXTRA if e in summ]),
        columns=("n", "auc", "gauc", "logloss", "best_epoch", "best_val_auc", "train_time"), base=None,
        note="AUC = mean ± sample std over the seeds of each row (test split, the best validation "
             "epoch's weights); best val AUC: the kept epoch's validation AUC.")
    lines = ["# Backbones on Amazon Beauty: ours vs DeepCTR 0.9.4", "",
             f"Generated {res['generated']} by `scripts/compare_backbones_deepctr.py` from the runs' "
             "`metrics.json` / `history.json`. Same preprocessed TFRecords, vocabularies, features, "
             "embedding size, MLP, dropout, batch, optimizer, epochs and early stopping for both "
             "libraries (script docstring: what differs).", "",
             f"Data: `{res['data_dir']}`, digest " + "; ".join(
                 f"feature_spec {d.get('feature_spec_sha256')}, stats {d.get('stats_sha256')}, "
                 f"examples {d.get('examples')}" for d in res["data_digests"]) + ".", ""]
    lines += reporting.render_section(layout, summ, show_keys=True)
    lines += ["## DIN over W&D within each library", "",
              "| library | DIN AUC | W&D AUC | RelaImpr DIN vs W&D | DIN > W&D (paired seeds) |", "|---|---:|---:|---:|---:|"]
    for lib, wd in (("ours", "ours_wide_deep"), ("deepctr", "deepctr_wdl")):
        d, w = summ.get(f"{lib}_din"), summ.get(wd)
        if d and w:
            c = reporting.compare(d, w, ())
            lines.append(f"| {lib} | {reporting.fmt_ms(d['auc'])} | {reporting.fmt_ms(w['auc'])} | "
                         f"{reporting.fmt_pct(c['relaimpr']['auc'])} | {c['paired']['wins']}/{c['paired']['n']} |")
    lines += ["", "## Per seed", "", "| Model | seed | test AUC | best epoch | val AUC per epoch |", "|---|---:|---:|---:|---|"]
    for name in res["models"]:
        for r in res["models"][name]["runs"]:
            lines.append(f"| {MODELS[name][3]} | {r['seed']} | {r['auc']:.4f} | {r['best_epoch']} | "
                         + ", ".join(f"{v:.4f}" for v in r["val_auc_per_epoch"]) + " |")
    dp = res.get("data_properties") or {}
    splits = [k for k in ("valid", "test") if k in dp]
    if splits:
        lines += ["", "## What the data rewards (no model)", "",
                  "AUC of single hand-made scores (`data_properties` in the script): the target item's "
                  "count among the training positives (negatives are drawn uniformly), the share of the "
                  "short history in the target's category, the target item in the history, the user's "
                  f"training CTR (every user's is in [{dp['train_user_ctr']['min']}, {dp['train_user_ctr']['max']}]: "
                  "one sampled negative per positive). History: mean length, share longer than "
                  f"the short sequence ({dp['short_len']}: truncated).", "",
                  "| split | item popularity | category match | item in history | user CTR | mean history | truncated |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for sp in splits:
            a, h = dp[sp]["auc"], dp[sp]["history_length"]
            lines.append(f"| {sp} | {a['item_popularity']:.4f} | {a['category_match']:.4f} | {a['item_in_history']:.4f} | "
                         f"{a['user_ctr']:.4f} | {h['mean']:.2f} | {100 * h['share_truncated']:.1f}% |")
    lines += ["", "## Commands", "", f"Driver (resumable): `{res['driver']}`.", ""]
    for name in res["models"]:
        for r in res["models"][name]["runs"]:
            lines.append(f"* {MODELS[name][3]}, seed {r['seed']}: `{r['command']}`")
    if res["pending"]:
        lines += ["", "Not run yet: " + ", ".join(res["pending"]) + "."]
    return "\n".join(lines) + "\n"


def driver_command(args) -> str:
    out = ["python", "scripts/compare_backbones_deepctr.py", f"--seeds={','.join(map(str, args.seeds))}"]
    for k in ("data_dir", "runs_dir", "results"):
        out.append(f"--{k}={getattr(args, k)}")
    if args.only:
        out.append(f"--only={','.join(args.only)}")
    return " ".join(out)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default="out/beauty/data")
    ap.add_argument("--runs_dir", default="out/beauty/backbones")
    ap.add_argument("--results", default="results/backbones_beauty_vs_deepctr")
    ap.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",") if x])
    ap.add_argument("--only", default="", type=lambda s: [x for x in s.split(",") if x])
    ap.add_argument("--report_only", action="store_true")
    ap.add_argument("--ablations", default="", type=lambda s: [x for x in s.split(",") if x],
                    help="run these ABLATIONS rows (comma list, or 'all') instead of the comparison, then "
                         "write RESULTS_ablations.{json,md}")
    ap.add_argument("--ablations_dir", default="out/beauty/backbones_ablations")
    ap.add_argument("--dry_run", action="store_true", help="print the commands of the pending runs")
    # one DeepCTR run (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--run_dir", default="", help=argparse.SUPPRESS)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    os.chdir(ROOT)
    if args.worker:
        args.argv = argv
        deepctr_run(args)
        return 0
    if args.ablations:
        names = list(ABLATIONS) if args.ablations == ["all"] else args.ablations
        for n in names:
            if n not in ABLATIONS:
                raise SystemExit(f"--ablations: unknown row {n!r}; choose from {list(ABLATIONS)}")
        for seed in args.seeds:
            for name in names:
                rd = os.path.join(args.ablations_dir, name, f"seed{seed}")
                if args.report_only or _done(rd):
                    continue
                cmd = ablation_command(name, seed, args)
                if args.dry_run:
                    print(shown(cmd))
                    continue
                rc = _run_logged(cmd, rd, f"{name} seed{seed}")
                log(f"{name} seed{seed} rc={rc}")
        if not args.dry_run:
            write_ablations(args)
        return 0
    for n in args.only:
        if n not in MODELS:
            raise SystemExit(f"--only: unknown model {n!r}; choose from {ORDER}")
    planned = [(n, s) for s in args.seeds for n in ORDER + EXTRA if (n in args.only if args.only else n in ORDER)]
    failed = []
    if not args.report_only:
        for name, seed in planned:
            rd = run_dir(args.runs_dir, name, seed)
            if _done(rd):
                continue
            cmd = command(name, seed, args)
            if args.dry_run:
                print(shown(cmd))
                continue
            t = time.time()
            rc = _run_logged(cmd, rd, f"{name} seed{seed}")
            ok = rc == 0 and _done(rd)
            log(f"{'done' if ok else 'FAILED'} {name} seed{seed} rc={rc} in {time.time() - t:.0f}s")
            if not ok:
                failed.append(f"{name}/seed{seed}")
            else:
                write_results(args, planned)
    if not args.dry_run:
        write_results(args, planned)
    if failed:
        log(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
