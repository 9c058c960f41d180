"""The process's runtime: chief detection (``TF_CONFIG``), seeds / determinism / the
mixed-precision policy, the ``--distribution`` strategy, and the library and code versions a run
records.

``make_strategy(parameter_server)`` never returns in a worker or ps process: those only serve
(``tf.distribute.Server.join``) and exit; the chief (coordinator) runs the trainer.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ctrcore.config import ConfigError, TrainConfig

log = logging.getLogger("ctrcore.trainer")


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


def code_version(root: Optional[str] = None) -> Dict[str, Any]:
    """``{"commit": <git HEAD>, "dirty": <tracked files differ from it>}`` of the checkout holding
    this code (``root``: another directory), or ``{"commit": None}`` outside a git checkout (an
    installed wheel) or without git. Two runs of the same seed on different commits may differ:
    a change that keeps the loss values may still change the gradients' summation order."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--verify", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0:
            return {"commit": None}
        top = subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
        if os.path.realpath(top) != os.path.realpath(root):  # root is not a checkout's top (e.g. site-packages)
            return {"commit": None}
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=60)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def versions() -> Dict[str, str]:
    import tensorflow_recommenders as tfrs
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "tf_keras": keras.__version__, "tensorflow_recommenders": tfrs.__version__,
            "numpy": np.__version__}
