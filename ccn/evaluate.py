"""Evaluate a trained run: best weights -> predictions -> metrics.json + metrics.md.

    python -m ccn.evaluate --model_dir=runs/synthetic/ccn/seed0 [--split=test]
                           [--data_dir=OTHER_DATA] [--base_run=runs/synthetic/tan/seed0]

The model is rebuilt from ``MODEL_DIR/train_config.json`` (same ``--model``, aux losses and
hyper-parameters, vocabularies of the *training* data directory) and the best weights
(``MODEL_DIR/best/``, by validation AUC) are loaded. ``--data_dir`` evaluates the examples of
another preprocessed directory with the training vocabularies.

Outputs (``test`` split -> ``metrics.json`` / ``metrics.md``; any other split ->
``metrics_<split>.json`` / ``.md``): AUC, LogLoss, GAUC (impression-weighted over users with
both labels), page AUC, overall and per activeness group (stats.json thresholds), plus model,
run key, seed, split, n, data_dir, data digest, best epoch and, with ``--base_run``, RelaImpr
(AQCL Eq. 9) of every AUC against the base run's metrics of the same split.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from absl import app, flags

from ccn import models
from ccn.cli import checked_call
from ctrcore import metrics as metrics_lib
from ctrcore.config import ConfigError, TrainConfig, check_data_dir
from ctrcore.rundir import RunDir

GROUP_TITLES = {"non_active": "non-active", "slightly_active": "slightly active",
                "highly_active": "highly active"}


def load_record(model_dir: str) -> Dict[str, Any]:
    """The run record of ``model_dir`` (``RunFileMissing``, naming the file, if it has none)."""
    return RunDir(model_dir).read_config()


def config_of(record: Dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(record["config"])


def rebuild(model_dir: str):
    """``(model, spec, stats, record)`` with the best weights loaded."""
    from ctrcore import runtime, schema

    record = load_record(model_dir)
    cfg = config_of(record)
    lp = record.get("run_info", {}).get("loss_params", {})
    data_dir = cfg.data_dir
    if not os.path.exists(os.path.join(data_dir, schema.SPEC_FILENAME)):
        alt = record.get("data", {}).get("data_dir")
        if alt and os.path.exists(os.path.join(alt, schema.SPEC_FILENAME)):
            data_dir = alt
        else:
            raise FileNotFoundError(f"training data {cfg.data_dir} (vocabularies) not found")
    spec = schema.load_spec(data_dir)
    stats = schema.load_stats(data_dir)
    runtime.setup_runtime(cfg)
    model = models.build_model(cfg, lp, spec, stats)
    RunDir(model_dir).load_best(model)
    return model, spec, stats, record


def relaimpr_block(m: Dict[str, Any], base: Dict[str, Any]) -> Dict[str, Any]:
    out = {"auc": metrics_lib.relaimpr(m.get("auc"), base.get("auc")), "groups": {}}
    for g in metrics_lib.GROUP_NAMES:
        a = (m.get("groups") or {}).get(g, {}).get("auc")
        b = (base.get("groups") or {}).get(g, {}).get("auc")
        out["groups"][g] = metrics_lib.relaimpr(a, b)
    return out


def _fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v):
    return "-" if v is None or v != v else f"{v:+.2f}%"


def metrics_markdown(res: Dict[str, Any]) -> str:
    base = res.get("relaimpr")
    lines = [f"# {res.get('display', res.get('model'))} - {res['split']} split",
             "",
             f"* run: `{res['model_dir']}` (model `{res.get('run_key')}`, seed {res.get('seed')}, "
             f"best epoch {res.get('best_epoch')}, best val AUC {_fmt(res.get('best_val_auc'))})",
             f"* data: `{res['data_dir']}` ({res['n']} examples, source {res.get('data', {}).get('source')}, "
             f"activeness thresholds {res.get('thresholds')})",
             f"* GAUC: per-user AUC weighted by the user's impressions, over users with both labels "
             f"({res.get('gauc_groups')} users); page AUC: unweighted mean over pages with both labels "
             f"({res.get('page_auc_groups')} pages)"]
    if base:
        lines.append(f"* RelaImpr (AQCL Eq. 9) vs `{base['base_run']}` ({base.get('base_model')})")
    lines += ["", "| users | n | AUC | LogLoss | GAUC | page AUC |" + (" RelaImpr |" if base else ""),
              "|---|---:|---:|---:|---:|---:|" + ("---:|" if base else "")]
    rows = [("all", res, base["auc"] if base else None)]
    for g in metrics_lib.GROUP_NAMES:
        if g in (res.get("groups") or {}):
            rows.append((GROUP_TITLES[g], res["groups"][g], base["groups"].get(g) if base else None))
    for name, m, ri in rows:
        lines.append(f"| {name} | {m.get('n')} | {_fmt(m.get('auc'))} | {_fmt(m.get('logloss'))} | "
                     f"{_fmt(m.get('gauc'))} | {_fmt(m.get('page_auc'))} |" + (f" {_pct(ri)} |" if base else ""))
    return "\n".join(lines) + "\n"


def evaluate_run(model_dir: str, *, split: str = "test", data_dir: Optional[str] = None,
                 base_run: Optional[str] = None, model=None, spec=None, stats=None,
                 batch_size: Optional[int] = None, write: bool = True, predict_fn=None) -> Dict[str, Any]:
    """Evaluate ``model_dir``'s best weights on ``split``; write metrics(.json|.md). ``model``,
    ``spec`` and ``stats`` may be passed in (end of ``ccn.train``) to skip the rebuild."""
    from ctrcore import evaluation, record as record_lib, schema

    run = RunDir(model_dir)
    record = load_record(model_dir)
    cfg = config_of(record)
    if model is None:
        model, spec, stats, record = rebuild(model_dir)
    eval_dir = data_dir or cfg.data_dir
    if data_dir:
        problems = [p for p in check_data_dir(data_dir, [split]) if "stats.json" not in p]
        if problems:
            raise FileNotFoundError("; ".join(problems))
        eval_stats = schema.load_stats(data_dir) if os.path.exists(os.path.join(data_dir, "stats.json")) else stats
    else:
        eval_stats = stats
    thresholds = eval_stats.get("activeness_thresholds") or stats.get("activeness_thresholds")
    t0 = time.time()
    res = evaluation.evaluate_split(model, spec, eval_dir, split, batch_size or cfg.eval_batch_size,
                                    thresholds, predict_fn=predict_fn)
    info = record.get("run_info", {})
    best = run.read_best_info(default={})
    res.update({
        "model": cfg.model, "aux_losses": list(cfg.aux_losses), "run_key": info.get("run_key",
                                                                                    models.run_key(cfg.model, cfg.aux_losses)),
        "display": info.get("display"), "seed": cfg.seed, "split": split, "model_dir": model_dir,
        "data_dir": eval_dir, "data": record_lib.data_digest(eval_dir) if data_dir else record.get("data", {}),
        "best_epoch": best.get("epoch"), "best_val_auc": best.get("val_auc"),
        "eval_seconds": time.time() - t0, "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    if base_run:
        base = RunDir(base_run)
        if not base.has_metrics(split):
            raise FileNotFoundError(f"--base_run: {base.metrics_path(split)} not found (evaluate the "
                                    f"base run on split {split} first)")
        bm = base.read_metrics(split)
        res["relaimpr"] = dict(relaimpr_block(res, bm), base_run=base_run, base_model=bm.get("run_key", bm.get("model")),
                               base_auc=bm.get("auc"))
    if write:
        run.write_metrics(split, res, metrics_markdown(metrics_lib.to_jsonable(res)))
    return res


FLAGS = flags.FLAGS


def _define_flags():
    """Flags of the command line (defined only when run as a program: ccn.train owns
    --model_dir / --data_dir / --batch_size in a process that imports both)."""
    flags.DEFINE_string("model_dir", None, "Run directory written by ccn.train.")
    flags.DEFINE_string("data_dir", None, "Evaluate this preprocessed directory instead of the "
                                          "training one (vocabularies stay the training ones).")
    flags.DEFINE_string("split", "test", "Split to evaluate (test -> metrics.json, else metrics_<split>.json).")
    flags.DEFINE_string("base_run", None, "Another run dir: add RelaImpr of every AUC vs its metrics.")
    flags.DEFINE_integer("batch_size", 0, "Prediction batch size (0 = the run's --eval_batch_size).")


def main(argv):
    res = checked_call(
        "ccn.evaluate", argv, {"model_dir": FLAGS.model_dir},
        lambda: evaluate_run(FLAGS.model_dir, split=FLAGS.split, data_dir=FLAGS.data_dir or None,
                             base_run=FLAGS.base_run or None,
                             batch_size=FLAGS.batch_size or None),
        (FileNotFoundError, ConfigError))
    print(metrics_markdown(metrics_lib.to_jsonable(res)))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
