"""The training input: how the training split is fed (``--train_input``: stream, ids, cache,
memory, or auto) and the dataset that parses only what a train step reads.

``make_train_input(cfg, spec, model)`` parses ``model.train_feature_names()`` (the backbone's
inputs + the label + what each aux loss declares) and, with ``--lookup_in_input``, maps
``backbone.lookup`` (string -> int32 ids) on the input threads. ``auto`` becomes ``memory`` when
the parsed split fits ``--in_memory_max_mb`` and a quarter of MemAvailable, the lookups run in the
input and the strategy is none/mirrored; else ``ids`` when the split's id shards
(:mod:`ctrcore.idshards`, ``python -m pipelines.id_shards``) are valid; else ``stream``.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from ctrcore import idshards, schema
from ctrcore.config import TrainConfig
from ctrcore.data import in_memory_dataset, load_columns, make_dataset

log = logging.getLogger("ctrcore.trainer")


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


def _split_rows(cfg: TrainConfig, stats: Optional[dict]) -> Optional[int]:
    """The training split's row count from ``stats`` (stats.json when None; no file: None, a
    broken one raises)."""
    if stats is None:
        try:
            stats = schema.load_stats(cfg.data_dir)
        except FileNotFoundError:
            return None
    rows = (stats.get("examples") or {}).get(cfg.train_split)
    return None if rows is None else int(rows)


def resolve_train_input(cfg: TrainConfig, spec, names=None, lookup=None,
                        stats: Optional[dict] = None) -> Tuple[str, str]:
    """``(mode, reason)``: the training input ``--train_input`` asks for; ``auto`` becomes
    ``memory`` when the parsed training split fits (``--in_memory_max_mb`` and a quarter of the
    available RAM, from the split's row count in stats.json), the lookups can run in the input
    and the strategy is none or mirrored; else ``ids`` when the id shards pass
    :func:`ctrcore.idshards.check`; else ``stream``. ``--train_input=ids`` raises ValueError
    with the check's reason when they do not."""
    if cfg.train_input == "ids":
        problem = idshards.check(cfg.data_dir, spec, cfg.train_split, examples=_split_rows(cfg, stats))
        if problem is not None:
            raise ValueError(f"--train_input=ids: {problem}")
        return "ids", "--train_input"
    if cfg.train_input != "auto":
        return cfg.train_input, "--train_input"
    if cfg.distribution not in ("none", "mirrored"):
        return "stream", f"auto: --distribution={cfg.distribution} streams per worker"
    if lookup is None or not cfg.lookup_in_input:
        return "stream", "auto: the string lookups do not run in the input"
    rows = _split_rows(cfg, stats)
    if not rows:
        return "stream", f"auto: stats.json gives no row count of split {cfg.train_split!r}"
    if rows < cfg.batch_size:
        return "stream", f"auto: {rows} rows < one batch of {cfg.batch_size}"
    mb = rows * parsed_bytes_per_example(spec, names, looked_up=True) / 2 ** 20
    avail = available_memory_bytes()
    limit = float(cfg.in_memory_max_mb)
    if avail is not None:
        limit = min(limit, avail / 4 / 2 ** 20)
    if mb <= limit:
        return "memory", f"auto: {rows} rows, ~{mb:.0f} MiB parsed <= {limit:.0f} MiB"
    why = f"auto: {rows} rows, ~{mb:.0f} MiB parsed > {limit:.0f} MiB"
    problem = idshards.check(cfg.data_dir, spec, cfg.train_split, examples=rows)
    if problem is None:
        return "ids", why + "; the id shards are valid"
    return "stream", f"{why}; {problem}"


def make_train_input(cfg: TrainConfig, spec, model, start_step: int = 0):
    """The training input of ``model``: shuffled, repeated, parsing only what a train step reads
    (``model.train_feature_names()``: backbone inputs, label, aux-loss needs) and, with
    ``cfg.lookup_in_input``, the string -> id lookups mapped on the input threads; streamed,
    cached or held in memory as ``--train_input`` says (:func:`resolve_train_input`). A
    ``DatasetCreator`` (per-worker pipelines, no input-side lookup) for parameter_server.

    ``start_step``: the global step a resumed run restarts at (:func:`ctrcore.callbacks.backup_step`).
    The in-memory input then continues its stream there (the batches the interrupted run would
    have trained on next); a streamed input restarts at its beginning (its shuffle is not
    replayable), which is logged."""
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
        if start_step:
            log.info("resumed at global step %d: the in-memory input continues from there", start_step)
        return in_memory_dataset(cols, cfg.batch_size, seed=cfg.seed, start_step=start_step)
    if start_step:
        log.info("resumed at global step %d: the %s input restarts at its beginning (a streamed "
                 "shuffle is not replayable)", start_step, mode)
    ds = make_dataset(cfg.data_dir, cfg.train_split, cfg.batch_size, spec=spec, shuffle=True,
                      repeat=True, deterministic=cfg.deterministic, seed=cfg.seed,
                      shuffle_buffer=cfg.shuffle_buffer, features=train_names,
                      cache=mode == "cache", id_shards=mode == "ids")
    if lookup is not None and (cfg.lookup_in_input or mode == "ids"):
        # string -> int32 ids on the input threads, overlapping the step; the step's own lookup
        # is then a no-op cast (Backbone.lookup is idempotent on ints). Id shards: a cast of
        # their int32 ids (and the numeric features passed through)
        ds = ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=cfg.deterministic).prefetch(tf.data.AUTOTUNE)
    return ds
