"""The run record (what ``train_config.json`` holds) and the checks made against it.

``prepare(cfg, run_info)`` validates the config, loads the data's spec and stats, plans the
steps and builds the record ``{config, run_info, seed, data (digest), plan}`` (the trainer adds
``versions`` and ``started`` when it writes it). A resumed run must have the same record
(:func:`check_resume`): only the fields of :data:`RESUMABLE_CHANGES`, the command line, and
parameters added by a newer version at their default may differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Dict, Optional

import tensorflow as tf

from ctrcore import schema
from ctrcore.config import ConfigError, TrainConfig
from ctrcore.rundir import RunDir

#: config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"model_dir", "epochs", "train_steps", "verbose", "overwrite", "export_base",
                     "model_name", "early_stopping_patience", "eval_split", "eval_batch_size",
                     "tb_update_freq", "backup_every_steps", "data_dir",
                     # how the input is fed, not what is trained (the first two: older names)
                     "cache_train_input", "in_memory_train_input", "lookup_in_input",
                     "train_input", "in_memory_max_mb"}


def data_digest(data_dir: str) -> Dict[str, Any]:
    """What identifies a dataset: hashes of feature_spec.json and stats.json + key statistics."""
    out: Dict[str, Any] = {"data_dir": os.path.abspath(data_dir) if "://" not in data_dir else data_dir}
    for fname in (schema.SPEC_FILENAME, schema.STATS_FILENAME):
        p = os.path.join(data_dir, fname)
        with tf.io.gfile.GFile(p, "rb") as fh:
            out[fname.split(".")[0] + "_sha256"] = hashlib.sha256(fh.read()).hexdigest()[:16]
    stats = schema.load_stats(data_dir)
    for k in ("source", "seed", "examples", "pages", "activeness_thresholds", "mean_history_length",
              "p_s_plus", "rows_used"):
        if k in stats:
            out[k] = stats[k]
    return out


def plan_steps(cfg: TrainConfig, stats: dict) -> Dict[str, int]:
    """Epochs and steps per epoch after applying --steps_per_epoch and the --train_steps cap."""
    n_train = (stats.get("examples") or {}).get(cfg.train_split)
    if cfg.steps_per_epoch:
        spe = cfg.steps_per_epoch
    else:
        if not n_train:
            raise ConfigError(f"stats.json has no examples[{cfg.train_split!r}]; pass --steps_per_epoch")
        spe = max(1, int(n_train) // cfg.batch_size)  # the repeated input drops the remainder
    epochs = cfg.epochs
    if cfg.train_steps is not None and cfg.train_steps < epochs * spe:
        if cfg.train_steps < spe:
            spe, epochs = cfg.train_steps, 1
        else:
            epochs = max(1, cfg.train_steps // spe)
    return {"epochs": int(epochs), "steps_per_epoch": int(spe), "total_steps": int(epochs * spe),
            "train_examples": int(n_train or 0)}


def check_resume(run: RunDir, new: Dict[str, Any]) -> None:
    """Raise :class:`ConfigError` listing the differences when ``run`` holds a record of another
    configuration than ``new`` (nothing when it holds none)."""
    old = run.read_config(default=None)
    if not old:
        return
    diffs = []
    # a field added by a newer version is absent from an older record: the same run when the new
    # value is that field's default
    defaults = TrainConfig.__dataclass_fields__
    missing = object()
    for k in sorted(set(old.get("config", {})) | set(new["config"])):
        if k in RESUMABLE_CHANGES:
            continue
        ov, nv = old.get("config", {}).get(k, missing), new["config"].get(k, missing)
        f = defaults.get(k)
        if ov is missing and f is not None and f.default is not dataclasses.MISSING and nv == f.default:
            continue
        if ov != nv:
            diffs.append(f"{k}: {old.get('config', {}).get(k)!r} -> {new['config'].get(k)!r}")
    for k in sorted(set(old.get("run_info", {})) | set(new.get("run_info", {}))):
        if k in ("command", "argv"):
            continue
        a, b = old.get("run_info", {}).get(k), new.get("run_info", {}).get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            # a parameter that is unset (None) on one side and absent on the other is the same
            # run: e.g. a loss parameter added by a newer version, left at its None default
            a = {x: v for x, v in a.items() if v is not None}
            b = {x: v for x, v in b.items() if v is not None}
        if a != b:
            diffs.append(f"{k}: {old.get('run_info', {}).get(k)!r} -> {new['run_info'].get(k)!r}")
    od, nd = old.get("data", {}), new["data"]
    for k in ("feature_spec_sha256", "stats_sha256"):
        if od.get(k) != nd.get(k):
            diffs.append(f"data {k}: {od.get(k)} -> {nd.get(k)}")
    if diffs:
        raise ConfigError(
            f"{run.path} holds a run with a different configuration:\n  - " +
            "\n  - ".join(diffs) + "\nuse another --model_dir, or --overwrite to start over")


def prepare(cfg: TrainConfig, run_info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Validate, load spec/stats, build the train_config record. No side effect on MODEL_DIR."""
    cfg.validate()
    spec = schema.load_spec(cfg.data_dir)
    stats = schema.load_stats(cfg.data_dir)
    plan = plan_steps(cfg, stats)
    record = {"config": cfg.to_dict(), "run_info": dict(run_info or {}), "seed": cfg.seed,
              "data": data_digest(cfg.data_dir), "plan": plan}
    return {"spec": spec, "stats": stats, "plan": plan, "record": record}
