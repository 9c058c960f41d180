"""The generic training loop: config -> datasets -> model -> ``fit`` -> best weights.

Model-agnostic: the caller passes ``model_fn(spec, stats) -> keras.Model`` (a
``ctrcore.model.CTRModel``; ``ccn.models.model_factory`` builds one from a ``--model`` name), so
``ctrcore`` never imports ``ccn`` / ``aqcl``.

Run directory (``MODEL_DIR``)::

    train_config.json   every option, the model-specific options (run_info), data digest, seed,
                        command line, versions; checked on resume (a different config fails)
    backup/             keras BackupAndRestore: a run killed at any moment resumes from the last
                        backup (every --backup_every_steps steps and at every epoch end) when the
                        same command is run again
    best/weights.*      weights with the best validation AUC (+ best/best.json)
    tb/                 TensorBoard: train/ (every loss term: ce, ccn_*, aqcl, ..., total) and
                        validation/ (val_auc, val_logloss, val_gauc, val_page_auc)
    history.json        per-epoch train losses, validation metrics, timings; completed flag;
                        runtime summed over (resumed) sessions

Validation is an exact AUC over the whole validation split (``ctrcore.metrics``), computed by one
prediction pass per epoch; early stopping and the best checkpoint follow it.

Learning-rate schedule: ``InverseTimeDecay`` (``lr / (1 + rate * step / decay_steps)``), the
"decays over time as the training progresses" of the CCN paper (Sec. 4.1, AdaGrad, 0.001).
Optimizers are the Keras 2 *legacy* ones (sparse row updates for embedding gradients; also the
only kind ``tfrs.experimental.optimizers.CompositeOptimizer`` accepts).

Data order on resume: the input pipeline restarts from the beginning of a (reshuffled) pass;
the step and epoch counters, weights and optimizer slots continue from the backup.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ctrcore import metrics as metrics_lib
from ctrcore import schema
from ctrcore.config import ConfigError, TrainConfig
from ctrcore.data import in_memory_dataset, load_columns, make_dataset

log = logging.getLogger("ctrcore.trainer")

CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"
BEST_DIR = "best"
BEST_PREFIX = os.path.join(BEST_DIR, "weights")
BEST_INFO = os.path.join(BEST_DIR, "best.json")
BACKUP_DIR = "backup"
TB_DIR = "tb"

#: config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"model_dir", "epochs", "train_steps", "verbose", "overwrite", "export_base",
                     "model_name", "early_stopping_patience", "eval_split", "eval_batch_size",
                     "tb_update_freq", "backup_every_steps", "data_dir",
                     # how the input is fed, not what is trained (the first two: older names)
                     "cache_train_input", "in_memory_train_input", "lookup_in_input",
                     "train_input", "in_memory_max_mb"}


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def write_json(path: str, obj) -> None:
    """Atomic JSON write (tmp file + rename), strict JSON (nan -> null)."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as fh:
        json.dump(metrics_lib.to_jsonable(obj), fh, indent=1, sort_keys=True, allow_nan=False)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path: str, default=None):
    if not tf.io.gfile.exists(path):
        return default
    with tf.io.gfile.GFile(path) as fh:
        return json.load(fh)


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


def is_chief() -> bool:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task", {})
    if not task:
        return True
    t, i = task.get("type"), int(task.get("index", 0))
    has_chief = "chief" in tf_config.get("cluster", {})
    return t == "chief" or (not has_chief and t == "worker" and i == 0)


def setup_runtime(cfg: TrainConfig) -> None:
    """Seeds, op determinism and the mixed-precision policy (before any model is built)."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(
        "float32" if cfg.mixed_precision == "none" else cfg.mixed_precision)


def make_strategy(cfg: TrainConfig, variable_partitioner=None) -> tf.distribute.Strategy:
    """The ``--distribution`` strategy. ``parameter_server``: variables are sharded across the ps
    tasks by ``variable_partitioner`` (default: ``MinSizePartitioner`` with 256 KiB shards, at
    most one shard per ps), so large embedding tables are spread over the parameter servers."""
    if cfg.distribution == "none":
        return tf.distribute.get_strategy()
    if cfg.distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cfg.distribution == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cfg.distribution == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        if resolver.task_type in ("worker", "ps"):
            # worker / ps processes only serve; the chief (coordinator) runs this trainer
            server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                          task_index=resolver.task_id, protocol="grpc", start=True)
            log.info("parameter_server: %s %d serving", resolver.task_type, resolver.task_id)
            server.join()
            sys.exit(0)
        num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
        if variable_partitioner is None and num_ps > 1:
            variable_partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
                min_shard_bytes=256 << 10, max_shards=num_ps)
        return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=variable_partitioner)
    raise ConfigError(f"unknown --distribution={cfg.distribution!r}")


def learning_rate(cfg: TrainConfig, lr: float):
    if cfg.lr_decay_steps and cfg.lr_decay_rate:
        return keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=cfg.lr_decay_steps,
                                                           decay_rate=cfg.lr_decay_rate)
    return lr


def embedding_variables(model: keras.Model) -> List[tf.Variable]:
    """The row-gathered tables: ``model.embedding_variables()`` (CTRModel) if the model has it,
    else the trainable variables of every ``keras.layers.Embedding`` inside ``model``."""
    if callable(getattr(model, "embedding_variables", None)):
        return list(model.embedding_variables())
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Embedding):
            for v in layer.trainable_weights:
                if v.ref() not in seen:
                    seen.add(v.ref())
                    out.append(v)
    return out


def loss_scaled(cfg: TrainConfig, optimizer):
    """mixed_float16 needs dynamic loss scaling (bfloat16 has float32's exponent range: none)."""
    if cfg.mixed_precision != "mixed_float16":
        return optimizer
    return keras.mixed_precision.LossScaleOptimizer(optimizer)


def make_optimizer(cfg: TrainConfig, model: keras.Model):
    legacy = keras.optimizers.legacy
    clip = {"global_clipnorm": cfg.clipnorm} if cfg.clipnorm else {}
    adagrad = lambda **kw: legacy.Adagrad(learning_rate(cfg, cfg.learning_rate),
                                          initial_accumulator_value=cfg.adagrad_initial_accumulator, **kw)
    if cfg.optimizer == "adagrad":
        return adagrad(**clip)
    if cfg.optimizer == "adam":
        return legacy.Adam(learning_rate(cfg, cfg.learning_rate), **clip)
    if cfg.optimizer == "composite":
        import tensorflow_recommenders as tfrs

        def emb_vars():
            return embedding_variables(model)

        def dense_vars():
            emb = {v.ref() for v in embedding_variables(model)}
            return [v for v in model.trainable_variables if v.ref() not in emb]

        return tfrs.experimental.optimizers.CompositeOptimizer([
            (adagrad(), emb_vars),
            (legacy.Adam(learning_rate(cfg, cfg.dense_learning_rate)), dense_vars)])
    raise ConfigError(f"unknown --optimizer={cfg.optimizer!r}")


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


# ---------------------------------------------------------------------------------------------
# prediction / evaluation (shared by validation and ccn.evaluate)
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------
class _Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore saving every N steps *and* at every epoch end (resume -> next epoch)."""

    def __init__(self, backup_dir: str, save_every: int, steps_per_epoch: int):
        super().__init__(backup_dir, save_freq=save_every if save_every else "epoch")
        self._spe = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            return super().on_epoch_end(epoch, logs)
        self._batches_count = 0
        self._backup(epoch=epoch, batch=self._spe - 1)


class ValidationCallback(keras.callbacks.Callback):
    """Per epoch: exact validation metrics -> logs (val_auc, ...) -> best weights, early stopping,
    history.json (persisted, so both survive a resume)."""

    def __init__(self, cfg: TrainConfig, spec, plan: Dict[str, int], thresholds, write: bool = True):
        super().__init__()
        self._supports_tf_logs = True  # batch logs are not read: no per-step host conversion
        self.cfg, self.spec, self.plan, self.thresholds, self.write = cfg, spec, plan, thresholds, write
        self.model_dir = cfg.model_dir
        self._predict_fn = None
        self._t_epoch = None
        self._it_epoch = 0
        self._session_start = None
        self.history = read_json(os.path.join(self.model_dir, HISTORY_FILE)) or {}
        self.history.setdefault("epochs", [])
        self.history.setdefault("sessions", [])
        self.history.setdefault("completed", False)
        self.best = read_json(os.path.join(self.model_dir, BEST_INFO))
        self._session: Dict[str, Any] = {}

    # -- helpers
    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _save_history(self):
        if self.write:
            write_json(os.path.join(self.model_dir, HISTORY_FILE), self.history)

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
                self.model.save_weights(os.path.join(self.model_dir, BEST_PREFIX))
                write_json(os.path.join(self.model_dir, BEST_INFO), self.best)
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


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
class TrainResult(dict):
    """``{model, spec, stats, plan, history, best, skipped, predict_fn}`` (a dict with attribute
    access; ``predict_fn`` is the traced prediction function of the validation, reusable)."""

    __getattr__ = dict.__getitem__


def _check_resume_config(path: str, new: Dict[str, Any]) -> None:
    old = read_json(path)
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
            f"{os.path.dirname(path)} holds a run with a different configuration:\n  - " +
            "\n  - ".join(diffs) + "\nuse another --model_dir, or --overwrite to start over")


def versions() -> Dict[str, str]:
    import tensorflow_recommenders as tfrs
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "tf_keras": keras.__version__, "tensorflow_recommenders": tfrs.__version__,
            "numpy": np.__version__}


def prepare(cfg: TrainConfig, run_info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Validate, load spec/stats, build the train_config record. No side effect on MODEL_DIR."""
    cfg.validate()
    spec = schema.load_spec(cfg.data_dir)
    stats = schema.load_stats(cfg.data_dir)
    plan = plan_steps(cfg, stats)
    record = {"config": cfg.to_dict(), "run_info": dict(run_info or {}), "seed": cfg.seed,
              "data": data_digest(cfg.data_dir), "plan": plan}
    return {"spec": spec, "stats": stats, "plan": plan, "record": record}


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


def parsed_bytes_per_example(spec, names=None, looked_up: bool = True) -> int:
    """Bytes per example of the parsed columns of ``names`` (None: every feature) as
    :func:`ctrcore.data.load_columns` holds them: string ids with a vocabulary as int32 when
    ``looked_up``, other strings as numpy objects (counted at 64 bytes), int64 8, float32 4."""
    total = 0
    for name, fd in spec.features.items():
        if names is not None and name not in names:
            continue
        n = 1
        for d in fd.shape:
            n *= int(d)
        if fd.dtype == "string":
            size = 4 if (looked_up and fd.vocab) else 64
        else:
            size = 8 if fd.dtype == "int64" else 4
        total += n * size
    return total


def available_memory_bytes() -> Optional[int]:
    """MemAvailable of /proc/meminfo (None where unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def resolve_train_input(cfg: TrainConfig, spec, names=None, lookup=None,
                        stats: Optional[dict] = None) -> Tuple[str, str]:
    """``(mode, reason)``: the training input ``--train_input`` asks for; ``auto`` becomes
    ``memory`` when the parsed training split fits (``--in_memory_max_mb`` and a quarter of the
    available RAM, from the split's row count in stats.json), the lookups can run in the input
    and the strategy is none or mirrored; else ``stream``."""
    if cfg.train_input != "auto":
        return cfg.train_input, "--train_input"
    if cfg.distribution not in ("none", "mirrored"):
        return "stream", f"auto: --distribution={cfg.distribution} streams per worker"
    if lookup is None or not cfg.lookup_in_input:
        return "stream", "auto: the string lookups do not run in the input"
    if stats is None:
        try:
            stats = schema.load_stats(cfg.data_dir)
        except FileNotFoundError:  # no stats.json: no row count, stream (a broken one raises)
            stats = {}
    rows = (stats.get("examples") or {}).get(cfg.train_split)
    if not rows:
        return "stream", f"auto: stats.json gives no row count of split {cfg.train_split!r}"
    if int(rows) < cfg.batch_size:
        return "stream", f"auto: {int(rows)} rows < one batch of {cfg.batch_size}"
    mb = int(rows) * parsed_bytes_per_example(spec, names, looked_up=True) / 2 ** 20
    avail = available_memory_bytes()
    limit = float(cfg.in_memory_max_mb)
    if avail is not None:
        limit = min(limit, avail / 4 / 2 ** 20)
    if mb <= limit:
        return "memory", f"auto: {int(rows)} rows, ~{mb:.0f} MiB parsed <= {limit:.0f} MiB"
    return "stream", f"auto: {int(rows)} rows, ~{mb:.0f} MiB parsed > {limit:.0f} MiB"


def make_train_input(cfg: TrainConfig, spec, model):
    """The training input of ``model``: shuffled, repeated, parsing only what a train step reads
    (``model.train_feature_names()``: backbone inputs, label, aux-loss needs) and, with
    ``cfg.lookup_in_input``, the string -> id lookups mapped on the input threads; streamed,
    cached or held in memory as ``--train_input`` says (:func:`resolve_train_input`). A
    ``DatasetCreator`` (per-worker pipelines, no input-side lookup) for parameter_server."""
    train_names = model.train_feature_names() if hasattr(model, "train_feature_names") else None
    if cfg.distribution == "parameter_server":
        return keras.utils.experimental.DatasetCreator(
            lambda ctx: make_dataset(cfg.data_dir, cfg.train_split,
                                     ctx.get_per_replica_batch_size(cfg.batch_size), spec=spec,
                                     shuffle=True, repeat=True, deterministic=cfg.deterministic,
                                     seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer,
                                     features=train_names).shard(
                ctx.num_input_pipelines, ctx.input_pipeline_id))
    lookup = getattr(getattr(model, "backbone", None), "lookup", None)
    mode, why = resolve_train_input(cfg, spec, train_names, lookup)
    log.info("training input: %s (%s)", mode, why)
    if mode == "memory":
        t0 = time.time()
        cols = load_columns(cfg.data_dir, cfg.train_split, spec=spec, features=train_names,
                            map_fn=lookup if cfg.lookup_in_input else None)
        log.info("in-memory training input: %d rows x %d features, %.1f MB, loaded in %.1fs",
                 len(next(iter(cols.values()))), len(cols), sum(v.nbytes for v in cols.values()) / 2 ** 20,
                 time.time() - t0)
        return in_memory_dataset(cols, cfg.batch_size, seed=cfg.seed)
    ds = make_dataset(cfg.data_dir, cfg.train_split, cfg.batch_size, spec=spec, shuffle=True,
                      repeat=True, deterministic=cfg.deterministic, seed=cfg.seed,
                      shuffle_buffer=cfg.shuffle_buffer, features=train_names,
                      cache=mode == "cache")
    if cfg.lookup_in_input and lookup is not None:
        # string -> int32 ids on the input threads, overlapping the step; the step's own lookup
        # is then a no-op cast (Backbone.lookup is idempotent on ints)
        ds = ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=cfg.deterministic).prefetch(tf.data.AUTOTUNE)
    return ds


def train(cfg: TrainConfig, model_fn: Callable[[schema.FeatureSpec, dict], keras.Model], *,
          run_info: Optional[Dict[str, Any]] = None, callbacks: Sequence[keras.callbacks.Callback] = (),
          prepared: Optional[Dict[str, Any]] = None) -> TrainResult:
    """Train (or resume, or skip a finished run) and return the model with its best weights."""
    prepared = prepared or prepare(cfg, run_info)
    spec, stats, plan, record = (prepared[k] for k in ("spec", "stats", "plan", "record"))
    md = cfg.model_dir
    chief = is_chief()
    if cfg.overwrite and chief and tf.io.gfile.exists(md):
        log.warning("--overwrite: deleting %s", md)
        tf.io.gfile.rmtree(md)
    tf.io.gfile.makedirs(os.path.join(md, BEST_DIR))
    cfg_path = os.path.join(md, CONFIG_FILE)
    _check_resume_config(cfg_path, record)
    history = read_json(os.path.join(md, HISTORY_FILE)) or {}

    setup_runtime(cfg)
    strategy = make_strategy(cfg)
    thresholds = stats.get("activeness_thresholds")
    if history.get("completed"):
        log.info("%s: training already completed (history.json); not retraining "
                 "(--overwrite to start over)", md)
        model = build_compiled(cfg, model_fn, spec, stats, strategy)
        load_best(model, md)
        return TrainResult(model=model, spec=spec, stats=stats, plan=plan, history=history,
                           best=history.get("best"), skipped=True, predict_fn=None)

    if chief:
        record = dict(record, versions=versions(), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        old = read_json(cfg_path) or {}
        if "started" in old:
            record["started"] = old["started"]
        write_json(cfg_path, record)

    model = build_compiled(cfg, model_fn, spec, stats, strategy)
    n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    log.info("model %s: %d trainable parameters; plan %s", cfg.model, n_params, plan)

    train_input = make_train_input(cfg, spec, model)

    val_cb = ValidationCallback(cfg, spec, plan, thresholds, write=chief)
    tb_dir = os.path.join(md, TB_DIR) if chief else os.path.join(md, TB_DIR, f"worker_{os.getpid()}")
    cbs: List[keras.callbacks.Callback] = [
        keras.callbacks.TerminateOnNaN(),
        val_cb,
        ScalarLogger(tb_dir, cfg.tb_update_freq),
        *callbacks,
        # last: its epoch-end backup follows the validation / best checkpoint of that epoch
        # (batch hooks run once per steps_per_execution steps: the save frequency counts those)
        _Backup(os.path.join(md, BACKUP_DIR),
                max(1, cfg.backup_every_steps // cfg.steps_per_execution) if cfg.backup_every_steps else 0,
                plan["steps_per_epoch"]),
    ]
    t0 = time.time()
    model.fit(train_input, epochs=plan["epochs"], steps_per_epoch=plan["steps_per_epoch"],
              callbacks=cbs, verbose=cfg.verbose)
    wall = time.time() - t0
    history = val_cb.history
    if model.stop_training and not history.get("stopped_early"):
        raise FloatingPointError("training stopped: a loss became NaN (TerminateOnNaN)")
    if val_cb.best is None:
        log.warning("no finite validation AUC in any epoch; keeping the final weights as best")
        val_cb.best = {"epoch": plan["epochs"], "global_step": int(model.optimizer.iterations.numpy()),
                       "val_auc": None}
        if chief:
            model.save_weights(os.path.join(md, BEST_PREFIX))
            write_json(os.path.join(md, BEST_INFO), val_cb.best)
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
        write_json(os.path.join(md, HISTORY_FILE), history)
    load_best(model, md)
    return TrainResult(model=model, spec=spec, stats=stats, plan=plan, history=history,
                       best=val_cb.best, skipped=False, predict_fn=val_cb._predict_fn)


def load_best(model: keras.Model, model_dir: str) -> None:
    prefix = os.path.join(model_dir, BEST_PREFIX)
    if not tf.io.gfile.exists(prefix + ".index"):
        raise FileNotFoundError(f"no best weights under {prefix} (did training finish an epoch?)")
    model.load_weights(prefix).expect_partial()
