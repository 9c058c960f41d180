"""The training callbacks: backups (resume), per-epoch validation with the best weights, early
stopping and ``history.json``, TensorBoard scalars, and a simulated interruption for tests.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ctrcore.config import TrainConfig
from ctrcore.evaluation import evaluate_split, make_predict_fn
from ctrcore.rundir import RunDir

log = logging.getLogger("ctrcore.trainer")


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore saving every N steps *and* at every epoch end (resume -> next epoch)."""

    def __init__(self, backup_dir: str, save_every: int, steps_per_epoch: int):
        super().__init__(backup_dir, save_freq=save_every if save_every else "epoch")
        self._spe = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            return super().on_epoch_end(epoch, logs)
        self._batches_count = 0
        self._backup(epoch=epoch, batch=self._spe - 1)


def backup_step(backup_dir: str) -> int:
    """The global step (optimizer iterations) of the newest backup under ``backup_dir`` that
    :class:`Backup` will restore (0 without one): the input of a resumed run starts there
    (:func:`ctrcore.train_input.make_train_input`). Read from the checkpoint itself, so it is
    the step of the weights that are restored."""
    if not tf.io.gfile.exists(backup_dir):
        return 0
    ckpts = [tf.train.latest_checkpoint(os.path.join(backup_dir, d)) for d in ("chief", "")]
    ckpts = [c for c in ckpts if c]
    if not ckpts:
        return 0
    reader = tf.train.load_checkpoint(ckpts[0])
    keys = [k for k in reader.get_variable_to_shape_map()
            if k.endswith(("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE",
                           "optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE"))]
    if len(keys) != 1:
        log.warning("backup %s: no single optimizer step among its variables (%s); the resumed "
                    "input starts at its beginning", ckpts[0], keys)
        return 0
    return int(reader.get_tensor(keys[0]))


class ValidationCallback(keras.callbacks.Callback):
    """Per epoch: exact validation metrics -> logs (val_auc, ...) -> best weights, early stopping,
    history.json (persisted, so both survive a resume)."""

    def __init__(self, cfg: TrainConfig, spec, plan: Dict[str, int], thresholds, write: bool = True):
        super().__init__()
        self._supports_tf_logs = True  # batch logs are not read: no per-step host conversion
        self.cfg, self.spec, self.plan, self.thresholds, self.write = cfg, spec, plan, thresholds, write
        self.model_dir = cfg.model_dir
        self.run = RunDir(cfg.model_dir)
        self._predict_fn = None
        self._t_epoch = None
        self._it_epoch = 0
        self._session_start = None
        self.history = self.run.read_history(default=None) or {}
        self.history.setdefault("epochs", [])
        self.history.setdefault("sessions", [])
        self.history.setdefault("completed", False)
        self.best = self.run.read_best_info(default=None)
        self._session: Dict[str, Any] = {}

    # -- helpers
    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _save_history(self):
        if self.write:
            self.run.write_history(self.history)

    def _best_epoch_index(self) -> Optional[int]:
        vals = [(e.get("val", {}).get("auc"), e["epoch"]) for e in self.history["epochs"]]
        vals = [(v, e) for v, e in vals if v is not None and not math.isnan(v)]
        return max(vals)[1] if vals else None

    # -- hooks
    def on_train_begin(self, logs=None):
        self._session_start = time.time()
        self._session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "train_seconds": 0.0,
                         "val_seconds": 0.0, "steps": 0, "resumed_from": None}
        self.history["sessions"].append(self._session)
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        step = self._step()
        if self._first_epoch:
            self._first_epoch = False
            if step > 0:  # BackupAndRestore restored a previous session's state
                self._session["resumed_from"] = {"epoch": int(epoch), "global_step": step}
                log.info("resumed from backup: epoch %d, global step %d", epoch + 1, step)
        self._t_epoch = time.time()
        self._it_epoch = step
        self._first_batch = None  # (time, global step) after the epoch's first execution

    def on_train_batch_end(self, batch, logs=None):
        if self._first_batch is None:
            self._first_batch = (time.time(), self._step())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        train_s = time.time() - self._t_epoch
        step = self._step()
        steps = step - self._it_epoch
        t0 = time.time()
        if self._predict_fn is None:
            self._predict_fn = make_predict_fn(self.model, self.spec)
        val = evaluate_split(self.model, self.spec, self.cfg.data_dir, self.cfg.valid_split,
                             self.cfg.eval_batch_size, self.thresholds, self._predict_fn)
        val_s = time.time() - t0
        for k in ("auc", "logloss", "gauc", "page_auc"):
            logs[f"val_{k}"] = val[k]
        entry = {"epoch": int(epoch) + 1, "global_step": step, "steps": steps,
                 "train": {k: float(v) for k, v in logs.items() if not k.startswith("val_")
                           and np.ndim(np.asarray(v)) == 0},
                 "val": {k: val[k] for k in ("auc", "logloss", "gauc", "gauc_unweighted", "page_auc", "n")},
                 "train_seconds": train_s, "val_seconds": val_s,
                 "examples_per_second": steps * self.cfg.batch_size / train_s if train_s > 0 else None,
                 "steady_examples_per_second": None}
        if self._first_batch is not None:  # excludes the first execution (tracing, warm-up)
            t1, s1 = self._first_batch
            dt = t0 - t1  # t0: end of the epoch's training, before validation
            if step > s1 and dt > 0:
                entry["steady_examples_per_second"] = (step - s1) * self.cfg.batch_size / dt
        self.history["epochs"] = [e for e in self.history["epochs"] if e["epoch"] != entry["epoch"]]
        self.history["epochs"].append(entry)
        self._session["train_seconds"] += train_s
        self._session["val_seconds"] += val_s
        self._session["steps"] += steps
        auc = val["auc"]
        improved = (auc is not None and not math.isnan(auc)
                    and (self.best is None or auc > self.best["val_auc"]))
        if improved:
            self.best = {"epoch": int(epoch) + 1, "global_step": step, "val_auc": float(auc)}
            if self.write:
                self.run.save_best(self.model, self.best)
        self.history["best"] = self.best
        log.info("epoch %d: val_auc %.4f val_logloss %.4f val_gauc %.4f (%d steps, %.1fs train, %.1fs val)%s",
                 epoch + 1, auc, val["logloss"], val["gauc"], steps, train_s, val_s,
                 " *best*" if improved else "")
        print(f"epoch {epoch + 1}: val_auc={auc:.4f} val_logloss={val['logloss']:.4f} "
              f"val_gauc={val['gauc']:.4f} val_page_auc={val['page_auc']:.4f}"
              f"{' (best)' if improved else ''}", flush=True)
        patience = self.cfg.early_stopping_patience
        if patience and self.best is not None and epoch + 1 - self.best["epoch"] >= patience:
            log.info("early stopping: no val AUC improvement for %d epochs (best %.4f at epoch %d)",
                     patience, self.best["val_auc"], self.best["epoch"])
            self.history["stopped_early"] = {"epoch": int(epoch) + 1, "best_epoch": self.best["epoch"]}
            self.model.stop_training = True
        self._save_history()


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars without the ``tensorboard`` package (not a dependency here).

    Writes ``tf.summary`` events with the ``scalars`` plugin metadata (what
    ``tf.summary.scalar`` writes) to ``LOG_DIR/train`` (every loss term and the running train AUC,
    every ``update_freq`` global steps, and epoch means as ``epoch_<term>``) and
    ``LOG_DIR/validation`` (``epoch_auc``, ``epoch_logloss``, ``epoch_gauc``, ``epoch_page_auc``).
    The x axis is the optimizer's global step, so a resumed run continues its curves.
    """

    def __init__(self, log_dir: str, update_freq: int = 100):
        super().__init__()
        from tensorflow.core.framework import summary_pb2

        self._supports_tf_logs = True  # no per-batch host conversion of the logs
        self.log_dir, self.update_freq = log_dir, max(1, int(update_freq))
        self._last_batch_write = -1
        self._md = summary_pb2.SummaryMetadata()
        self._md.plugin_data.plugin_name = "scalars"
        self._writers: Dict[str, Any] = {}

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def _write(self, name: str, values: Dict[str, Any], step: int, prefix: str = ""):
        with self._writer(name).as_default():
            for k, v in values.items():
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    continue
                tf.summary.write(prefix + k, tf.constant(f, tf.float32), step=step, metadata=self._md)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if logs and step // self.update_freq != self._last_batch_write // self.update_freq:
            self._last_batch_write = step
            self._write("train", logs, step, "batch_")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self._step()
        self._write("train", {k: v for k, v in logs.items() if not k.startswith("val_")}, step, "epoch_")
        self._write("validation", {k[4:]: v for k, v in logs.items() if k.startswith("val_")}, step, "epoch_")
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.flush()


class InterruptAfterSteps(keras.callbacks.Callback):
    """Raise ``KeyboardInterrupt`` once the global step reaches ``n`` (tests: simulated kill)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.n:
            raise KeyboardInterrupt(f"simulated interruption at global step {self.n}")


def run_callbacks(cfg: TrainConfig, run: RunDir, plan: Dict[str, int], validation: ValidationCallback,
                  extra=(), chief: bool = True):
    """The callbacks of a training run, in order: NaN stop, validation (best weights, early
    stopping, history), TensorBoard scalars, the caller's ``extra``, and the backup last."""
    return [
        keras.callbacks.TerminateOnNaN(),
        validation,
        ScalarLogger(run.tb_dir(chief), cfg.tb_update_freq),
        *extra,
        # last: its epoch-end backup follows the validation / best checkpoint of that epoch
        # (batch hooks run once per steps_per_execution steps: the save frequency counts those)
        Backup(run.backup_dir,
               max(1, cfg.backup_every_steps // cfg.steps_per_execution) if cfg.backup_every_steps else 0,
               plan["steps_per_epoch"]),
    ]
