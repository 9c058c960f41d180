"""tf.data input driven entirely by the feature spec (no feature name is hard-coded here).

Pipeline: list_files -> interleave(TFRecordDataset GZIP) -> [shuffle] -> [repeat] -> batch ->
parse_example (after batching: ~8x faster than per-example parsing, see PITFALLS) -> [cache]
-> prefetch(AUTOTUNE). Each element is a ``dict[str, Tensor]`` with every feature of the
requested roles (or of the requested names), shapes ``[B] + spec shape``; the label is *not* split off (the model reads it
from the dict by name).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from ctrcore import idshards, schema
from ctrcore.schema import FeatureSpec

ALL_ROLES = ("serving", "train", "meta")
_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


def _default(fd: schema.FeatureDef):
    d = fd.default
    if d is None:
        d = "" if fd.dtype == "string" else 0
    if fd.shape:
        n = 1
        for s in fd.shape:
            n *= s
        return [d] * n
    return d


def parse_spec(spec: FeatureSpec, roles: Sequence[str] = ALL_ROLES,
               names: Optional[Sequence[str]] = None) -> Dict[str, tf.io.FixedLenFeature]:
    """``{name: tf.io.FixedLenFeature(shape, dtype, default)}`` for the features of ``roles``
    (restricted to ``names`` when given; a name not in the spec raises ``KeyError``).

    Missing features parse to their spec default ("" for ids, -1 for context labels, 0 else),
    so e.g. a serving request without a trigger item still parses.
    """
    feats = spec.by_role(*roles)
    if names is not None:
        wanted = set(names)
        missing = sorted(wanted - set(feats))
        if missing:
            raise KeyError(f"features {missing} are not in the feature spec (roles {list(roles)})")
        feats = {n: fd for n, fd in feats.items() if n in wanted}
    return {name: tf.io.FixedLenFeature(list(fd.shape), _DTYPES[fd.dtype], default_value=_default(fd))
            for name, fd in feats.items()}


def serving_parse_spec(spec: FeatureSpec) -> Dict[str, tf.io.FixedLenFeature]:
    """``parse_spec`` restricted to the ``serving`` role (the exported model's inputs)."""
    return parse_spec(spec, roles=("serving",))


def input_signature(spec: FeatureSpec, roles: Sequence[str] = ("serving",), batch_size=None):
    """``{name: tf.TensorSpec([batch] + shape, dtype)}`` for the features of ``roles``."""
    return {name: tf.TensorSpec([batch_size] + list(fd.shape), _DTYPES[fd.dtype], name=name)
            for name, fd in spec.by_role(*roles).items()}


def list_shards(data_dir: str, split: str) -> list:
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*.tfrecord.gz")))
    if not files:
        raise FileNotFoundError(f"no {split}-*.tfrecord.gz under {data_dir}")
    return files


def _records(files: Sequence[str], compression: str, shuffle: bool, deterministic: bool, seed: int,
             cycle_length: Optional[int]) -> tf.data.Dataset:
    """The records of ``files``, interleaved; the file order shuffled (every pass) with
    ``shuffle`` unless ``deterministic``."""
    n = len(files)
    files_ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle and n > 1 and not deterministic:
        files_ds = files_ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    read = lambda f: tf.data.TFRecordDataset(f, compression_type=compression, buffer_size=1 << 20)
    if n > 1:
        return files_ds.interleave(read, cycle_length=cycle_length or min(n, 8), block_length=1,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return read(files[0])


def make_dataset(data_dir: str, split: str, batch_size: int, *, spec: Optional[FeatureSpec] = None,
                 shuffle: bool = True, repeat: bool = False, deterministic: bool = False,
                 cache: bool = False, seed: int = 0, roles: Sequence[str] = ALL_ROLES,
                 drop_remainder: bool = False, shuffle_buffer: int = 10_000,
                 cycle_length: Optional[int] = None,
                 features: Optional[Sequence[str]] = None,
                 id_shards: bool = False) -> tf.data.Dataset:
    """Batched, parsed ``dict[str, Tensor]`` dataset of ``data_dir/{split}-*.tfrecord.gz``.

    * ``deterministic=True``: sequential shard order (no file shuffle), deterministic interleave
      and map; together with the fixed ``seed`` the element order is reproducible run to run.
    * ``shuffle``: shuffles shard order and records (``shuffle_buffer``), reshuffled each epoch.
    * ``cache``: with ``shuffle`` the *serialized records* are cached (before the shuffle, so
      every epoch is still reshuffled); without it the *parsed batches* are cached (eval sets).
    * ``repeat``: infinite dataset (use ``steps_per_epoch``).
    * ``features``: parse only these names (e.g. ``CTRModel.train_feature_names()``): parsing
      is most of the input cost, and a W&D step reads 67 of the 455 values of a benchmark example.
    * ``id_shards``: read the split's id shards instead (``data_dir/ids``; check them first with
      :func:`ctrcore.idshards.check`): :func:`block_dataset`, every vocabulary feature as its
      looked-up int32 ids. ``cache`` does not apply.
    """
    spec = spec or schema.load_spec(data_dir)
    features = parse_spec(spec, roles, names=features)
    if id_shards:
        return block_dataset(data_dir, split, batch_size, sorted(features), shuffle=shuffle,
                             repeat=repeat, deterministic=deterministic, seed=seed,
                             drop_remainder=drop_remainder, shuffle_buffer=shuffle_buffer,
                             cycle_length=cycle_length)
    ds = _records(list_shards(data_dir, split), "GZIP", shuffle, deterministic, seed, cycle_length)
    cache_parsed = cache and not shuffle
    if cache and shuffle:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat and not cache_parsed:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder or repeat)
    ds = ds.map(lambda x: tf.io.parse_example(x, features), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    if cache_parsed:
        ds = ds.cache()
        if repeat:
            ds = ds.repeat()
    opts = tf.data.Options()
    opts.deterministic = deterministic
    ds = ds.with_options(opts)
    return ds.prefetch(tf.data.AUTOTUNE)


def block_dataset(data_dir: str, split: str, batch_size: int, features: Sequence[str], *,
                  shuffle: bool = True, repeat: bool = False, deterministic: bool = False,
                  seed: int = 0, drop_remainder: bool = False, shuffle_buffer: int = 10_000,
                  cycle_length: Optional[int] = None) -> tf.data.Dataset:
    """Batches of ``features`` from the id shards of ``split`` (:mod:`ctrcore.idshards`: column
    blocks of ``block_rows`` examples; vocabulary features as int32 ids, the others as parsed
    from the string records).

    No per-example work is left: a block is one record frame and one ``decode_raw`` per column,
    and the examples are shuffled by windows. With ``shuffle``, the shard order and the blocks
    (a buffer of ``shuffle_buffer // block_rows`` blocks) are shuffled every pass, each pass's
    blocks are cut into windows of ``shuffle_buffer`` examples (the last one short), and each
    window's rows are permuted by ``argsort(stateless_uniform(seed=(seed, window number)))``,
    windows numbered over all passes, before they are cut into batches (with ``repeat``, as in
    the string input, a pass's last batch is completed from the next pass). An
    example therefore meets, in its batch, examples of up to ``shuffle_buffer / block_rows``
    blocks drawn from the buffer, as the record-level buffer of the string input draws from its
    ``shuffle_buffer`` records. Without ``shuffle`` the batches hold the shards' examples in
    order (the string input's order).
    """
    m = idshards.load_manifest(data_dir)
    block_rows = int(m["block_rows"])
    cols = m["columns"]
    compression = idshards.COMPRESSIONS[m["compression"]][0]
    files = idshards.shard_paths(m, data_dir, split)
    parse = {}  # the block's rows follow from each column's length: __rows is not read
    for name in features:
        parse[name] = (tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
                       if cols[name]["dtype"] == "string" else tf.io.FixedLenFeature([], tf.string))
    dtypes = {"int32": tf.int32, "int64": tf.int64, "float32": tf.float32}

    def decode(record):
        p = tf.io.parse_single_example(record, parse)
        out = {}
        for name in features:
            c = cols[name]
            v = p[name] if c["dtype"] == "string" else tf.io.decode_raw(p[name], dtypes[c["dtype"]])
            out[name] = tf.reshape(v, [-1] + list(c["shape"]))
        return out

    ds = _records(files, compression, shuffle, deterministic, seed, cycle_length)
    if shuffle:
        ds = ds.shuffle(max(1, shuffle_buffer // block_rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle:  # windows within a pass (the last one short), numbered over all passes
        ds = ds.rebatch(max(batch_size, shuffle_buffer))
    if repeat:
        ds = ds.repeat()
    if shuffle:
        def permute(i, w):
            n = tf.shape(w[features[0]])[0]
            perm = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), i])))
            return {k: tf.gather(v, perm) for k, v in w.items()}

        ds = ds.enumerate().map(permute, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.rebatch(batch_size, drop_remainder=drop_remainder or repeat)
    opts = tf.data.Options()
    opts.deterministic = deterministic
    return ds.with_options(opts).prefetch(tf.data.AUTOTUNE)


def load_columns(data_dir: str, split: str, *, spec: Optional[FeatureSpec] = None,
                 features: Optional[Sequence[str]] = None, map_fn: Optional[Callable] = None,
                 batch_size: int = 8192) -> Dict[str, np.ndarray]:
    """Every example of ``split`` (file order), parsed (only ``features`` when given) and mapped by
    ``map_fn`` (e.g. ``Backbone.lookup``: string ids -> int32), as one numpy array per feature
    (``[N] + shape``)."""
    ds = make_dataset(data_dir, split, batch_size, spec=spec, shuffle=False, deterministic=True,
                      features=features)
    if map_fn is not None:
        ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parts: Dict[str, list] = {}
    for batch in ds:
        for k, v in batch.items():
            parts.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def in_memory_dataset(columns: Dict[str, np.ndarray], batch_size: int, *, seed: int = 0,
                      repeat: bool = True, drop_remainder: bool = False, start_step: int = 0) -> tf.data.Dataset:
    """Shuffled batches gathered from in-memory ``columns`` (:func:`load_columns`).

    Pass ``e`` uses the permutation ``argsort(stateless_uniform([N], seed=(seed, e)))`` of all N
    rows (a full shuffle, not a buffer one; reproducible from ``seed``, different every pass),
    cut into batches of ``batch_size``; a batch is one ``tf.gather`` per feature. The
    permutation is made once per pass as one tensor, so no per-example work is left in the
    input. With ``repeat`` (training) every batch is full: each pass leaves out its last
    ``N mod batch_size`` rows of the permutation (different rows every pass).

    ``start_step`` (with ``repeat``): the stream from batch ``start_step`` on, i.e. pass
    ``start_step // (N // batch_size)`` from its batch ``start_step mod (N // batch_size)``: the
    batches a run resumed at that global step would have trained on next (no batch is made twice).
    """
    if not columns:
        raise ValueError("in_memory_dataset: no columns")
    sizes = {k: len(v) for k, v in columns.items()}
    n = next(iter(sizes.values()))
    if len(set(sizes.values())) != 1 or n == 0:
        raise ValueError(f"in_memory_dataset: columns must have the same, non-zero length, got {sizes}")
    full = drop_remainder or repeat
    if full and n < batch_size:
        raise ValueError(f"in_memory_dataset: {n} rows < batch_size {batch_size} with full batches")
    if start_step and not repeat:
        raise ValueError("in_memory_dataset: start_step needs repeat=True (a resumed training stream)")
    cols = {k: tf.constant(v) for k, v in columns.items()}
    nb = n // batch_size

    def one_pass(e):
        perm = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.constant(seed, tf.int64), e])))
        if full:
            return tf.data.Dataset.from_tensor_slices(tf.reshape(perm[:nb * batch_size], [nb, batch_size]))
        return tf.data.Dataset.from_tensor_slices(perm).batch(batch_size)

    first_pass, skip = divmod(int(start_step), nb) if repeat else (0, 0)
    passes = tf.data.Dataset.range(first_pass, 1 << 62) if repeat else tf.data.Dataset.range(1)
    ds = passes.flat_map(one_pass).skip(skip)  # skipping batches of indices: no gather is made
    ds = ds.map(lambda i: {k: tf.gather(c, i) for k, c in cols.items()},
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
