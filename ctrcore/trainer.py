"""The generic training loop: config -> datasets -> model -> ``fit`` -> best weights.

Model-agnostic: the caller passes ``model_fn(spec, stats) -> keras.Model`` (a
``ctrcore.model.CTRModel``; ``ccn.models.model_factory`` builds one from a ``--model`` name), so
``ctrcore`` never imports ``ccn`` / ``aqcl``. :func:`train` reads as the steps of a run; each
step lives in a module named for what it holds:

* ``ctrcore.record``      the run record (prepare, data digest, step plan, resume check)
* ``ctrcore.rundir``      the run directory's files (``RunDir``; layout in its docstring)
* ``ctrcore.runtime``     chief detection, seeds / precision, the ``tf.distribute`` strategy
* ``ctrcore.optimizer``   the optimizer, learning-rate schedule and loss scaling
* ``ctrcore.train_input`` the training input (``--train_input``)
* ``ctrcore.callbacks``   backup, validation / best weights / early stopping, TensorBoard
* ``ctrcore.evaluation``  prediction and metrics of a split

Data order on resume: the input pipeline restarts from the beginning of a (reshuffled) pass;
the step and epoch counters, weights and optimizer slots continue from the backup.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ctrcore import schema
# names marked F401 are re-exported: callers (benchmarks, tests) import them from here
from ctrcore.callbacks import InterruptAfterSteps, ValidationCallback, backup_step, run_callbacks  # noqa: F401
from ctrcore.config import TrainConfig
from ctrcore.data import make_dataset
from ctrcore.evaluation import evaluate_split, serving_inputs  # noqa: F401
from ctrcore.optimizer import loss_scaled, make_optimizer
from ctrcore.record import check_resume, data_digest, prepare  # noqa: F401
from ctrcore.rundir import RunDir
from ctrcore.runtime import code_version, is_chief, make_strategy, setup_runtime, versions
from ctrcore.train_input import (make_train_input, parsed_bytes_per_example,  # noqa: F401
                                 resolve_train_input)

log = logging.getLogger("ctrcore.trainer")


class TrainResult(dict):
    """``{model, spec, stats, plan, history, best, skipped, predict_fn}`` (a dict with attribute
    access; ``predict_fn`` is the traced prediction function of the validation, reusable)."""

    __getattr__ = dict.__getitem__


def build_compiled(cfg: TrainConfig, model_fn, spec, stats, strategy=None):
    """Build, call once on a validation batch (creates the variables) and compile the model."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = model_fn(spec, stats)
        if not model.built:  # CTRModel builds its backbone in __init__; others: one small batch
            sample = next(iter(make_dataset(cfg.data_dir, cfg.valid_split, 2, spec=spec,
                                            shuffle=False, deterministic=True)))
            model(serving_inputs(sample, spec), training=False)
        model.compile(optimizer=loss_scaled(cfg, make_optimizer(cfg, model)), jit_compile=cfg.jit_compile,
                      steps_per_execution=cfg.steps_per_execution)
    return model


def open_run_dir(cfg: TrainConfig, record: Dict[str, Any], chief: bool) -> RunDir:
    """The run directory of ``cfg``: emptied first with ``--overwrite`` (the chief), created, and
    checked to hold no run of another configuration."""
    run = RunDir(cfg.model_dir)
    if cfg.overwrite and chief and run.exists():
        log.warning("--overwrite: deleting %s", run.path)
        run.remove()
    run.create()
    check_resume(run, record)
    return run


def write_record(run: RunDir, record: Dict[str, Any]) -> None:
    """The run record with the library versions, the code version (``code``: the git commit of
    the first session; ``code_sessions``: every session's, when a resumed session ran other code)
    and the first session's start time."""
    code = code_version()
    record = dict(record, versions=versions(), started=time.strftime("%Y-%m-%dT%H:%M:%S"), code=code)
    old = run.read_config(default=None) or {}
    if "started" in old:
        record["started"] = old["started"]
    if "code" in old:
        record["code"] = old["code"]
        sessions = old.get("code_sessions") or [old["code"]]
        record["code_sessions"] = sessions + ([code] if code != sessions[-1] else [])
        if len(record["code_sessions"]) == 1:
            del record["code_sessions"]
    run.write_config(record)


def complete_history(cfg: TrainConfig, model: keras.Model, run: RunDir, plan: Dict[str, int],
                     val_cb: ValidationCallback, wall: float, n_params: int, chief: bool) -> dict:
    """The history after ``fit``: best weights (the final ones when no epoch had a finite
    validation AUC), completed flag and the runtime summed over sessions; written by the chief."""
    history = val_cb.history
    if model.stop_training and not history.get("stopped_early"):
        raise FloatingPointError("training stopped: a loss became NaN (TerminateOnNaN)")
    if val_cb.best is None:
        log.warning("no finite validation AUC in any epoch; keeping the final weights as best")
        val_cb.best = {"epoch": plan["epochs"], "global_step": int(model.optimizer.iterations.numpy()),
                       "val_auc": None}
        if chief:
            run.save_best(model, val_cb.best)
    sessions = history["sessions"]
    sessions[-1]["wall_seconds"] = wall
    history["best"] = val_cb.best
    history["completed"] = True
    history["runtime"] = {
        "train_seconds": sum(s.get("train_seconds", 0.0) for s in sessions),
        "val_seconds": sum(s.get("val_seconds", 0.0) for s in sessions),
        "wall_seconds": sum(s.get("wall_seconds", 0.0) for s in sessions),
        "steps": int(model.optimizer.iterations.numpy()),
        "sessions": len(sessions),
        "trainable_parameters": n_params,
    }
    rt = history["runtime"]
    rt["examples_per_second"] = (rt["steps"] * cfg.batch_size / rt["train_seconds"]
                                 if rt["train_seconds"] else None)
    steady = [e["steady_examples_per_second"] for e in history["epochs"]
              if e.get("steady_examples_per_second")]
    # median over epochs of the throughput without each epoch's first execution (PITFALLS: report
    # medians; the first step of a session includes tracing / XLA compilation)
    rt["median_steady_examples_per_second"] = float(np.median(steady)) if steady else None
    if chief:
        run.write_history(history)
    return history


def train(cfg: TrainConfig, model_fn: Callable[[schema.FeatureSpec, dict], keras.Model], *,
          run_info: Optional[Dict[str, Any]] = None, callbacks: Sequence[keras.callbacks.Callback] = (),
          prepared: Optional[Dict[str, Any]] = None) -> TrainResult:
    """Train (or resume, or skip a finished run) and return the model with its best weights."""
    prepared = prepared or prepare(cfg, run_info)
    spec, stats, plan, record = (prepared[k] for k in ("spec", "stats", "plan", "record"))
    chief = is_chief()
    run = open_run_dir(cfg, record, chief)
    history = run.read_history(default=None) or {}

    setup_runtime(cfg)
    strategy = make_strategy(cfg)
    if history.get("completed"):
        log.info("%s: training already completed (history.json); not retraining "
                 "(--overwrite to start over)", run.path)
        model = build_compiled(cfg, model_fn, spec, stats, strategy)
        run.load_best(model)
        return TrainResult(model=model, spec=spec, stats=stats, plan=plan, history=history,
                           best=history.get("best"), skipped=True, predict_fn=None)

    if chief:
        write_record(run, record)
    model = build_compiled(cfg, model_fn, spec, stats, strategy)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    log.info("model %s: %d trainable parameters; plan %s", cfg.model, n_params, plan)

    # a resumed run's input continues where the restored backup's step left it
    train_input = make_train_input(cfg, spec, model, start_step=backup_step(run.backup_dir))
    val_cb = ValidationCallback(cfg, spec, plan, stats.get("activeness_thresholds"), write=chief)
    t0 = time.time()
    model.fit(train_input, epochs=plan["epochs"], steps_per_epoch=plan["steps_per_epoch"],
              callbacks=run_callbacks(cfg, run, plan, val_cb, callbacks, chief), verbose=cfg.verbose)
    history = complete_history(cfg, model, run, plan, val_cb, time.time() - t0, n_params, chief)
    run.load_best(model)
    return TrainResult(model=model, spec=spec, stats=stats, plan=plan, history=history,
                       best=val_cb.best, skipped=False, predict_fn=val_cb._predict_fn)

