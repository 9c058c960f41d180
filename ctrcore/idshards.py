"""Id shards: a split's examples again, in column blocks, every vocabulary feature already looked up.

The streamed training input spends its CPU per record and per value: GZIP inflation, one
``tf.train.Example`` parse per record (one allocation per value), the ``StringLookup`` hash of
every string id, every epoch. ``python -m pipelines.id_shards`` writes
``DATA/ids/<split>-SSSSS-of-NNNNN.tfrecord`` (the string shards' names; ``.tfrecord.gz`` with
``--compression=gzip``): the same examples in the same shards and order, cut into **blocks** of
``block_rows`` consecutive examples, one TFRecord per block. A block record is a
``tf.train.Example`` holding, per feature of the spec, the block's values as one column:

* a vocabulary feature: its ids exactly as :class:`ctrcore.layers.IdLookup` numbers them (0 the
  padding ``""``, 1 OOV, 2.. the vocabulary file's lines in order), as little-endian ``int32``
  bytes, ``[rows] + shape`` in C order;
* an ``int64`` / ``float32`` feature: its values as little-endian ``int64`` / ``float32`` bytes;
* a ``string`` feature without a vocabulary (e.g. ``page_id``): a ``bytes_list`` of its
  ``rows x values`` strings;
* ``__rows``: the rows in the block (the last block of a shard may be short).

Reading a block is then one record frame, one small parse and a ``decode_raw`` (a copy) per
feature: ``ctrcore.data.make_dataset(id_shards=True)`` (``--train_input=ids``, and ``auto`` when
the split is not held in memory). Measured per batch of 1,024 CCN examples on one core
(``benchmarks.input --model=ccn``, benchmarks/RESULTS.md section 11): string records + lookups
41 CPU-ms, the per-record id shards of format 1 (GZIP) 13, id blocks 3.6 uncompressed and 6.6
with ``--compression=gzip``. Uncompressed blocks take about 10x the disk of the GZIP string
shards (1.9 kB per benchmark example: every value 4-8 bytes).
Evaluation, export and serving keep the raw ids and the in-graph lookups.

``DATA/ids/manifest.json`` records the format, ``block_rows``, the compression, each feature's
column dtype and shape, per split the shards and the examples written, and the SHA-256 of every
vocabulary file the ids were made with: :func:`check` refuses shards made with another
vocabulary (a rerun of the preprocessing), another format, or a count that differs from
stats.json.

No TensorFlow here beyond ``tf.io.gfile`` in the trainer-side helpers; the encoding is protobuf
and NumPy.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ctrcore.schema import OOV_ID, PAD, PAD_ID, FeatureSpec

IDS_DIR = "ids"
MANIFEST = "manifest.json"
SUFFIX = ".tfrecord.gz"  # the string shards'
FORMAT_VERSION = 2
ROWS_KEY = "__rows"
DEFAULT_BLOCK_ROWS = 256
#: ``--compression`` -> (TFRecord compression type, id shard suffix)
COMPRESSIONS = {"none": ("", ".tfrecord"), "gzip": ("GZIP", ".tfrecord.gz")}
#: column dtype -> NumPy dtype of its bytes (little-endian); "string" columns are bytes_lists
NUMPY_DTYPES = {"int32": np.dtype("<i4"), "int64": np.dtype("<i8"), "float32": np.dtype("<f4")}
_LIST_KIND = {"int64": "int64_list", "float32": "float_list", "string": "bytes_list"}


class IdShardError(ValueError):
    """A record that cannot be encoded: names the file, the record's index and the feature."""


def vocab_lines(data: bytes) -> List[bytes]:
    """The ids of a vocabulary file's bytes, split the way the TF table initializer of
    ``StringLookup`` (and :func:`ctrcore.layers.check_vocabulary`) reads them: one id per line,
    the trailing newline and a line's trailing CR dropped."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def vocab_index(data: bytes) -> Dict[bytes, int]:
    """``{id: index}`` of a vocabulary file's bytes: line ``i`` (from 0) -> ``i + 2``, as
    ``IdLookup`` numbers them (0 = padding, 1 = OOV). A file of blank lines only is empty."""
    lines = vocab_lines(data)
    if not any(lines):
        return {}
    return {ln: i + 2 for i, ln in enumerate(lines)}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ids_dir(data_dir: str) -> str:
    return os.path.join(data_dir, IDS_DIR)


def manifest_path(data_dir: str) -> str:
    return os.path.join(ids_dir(data_dir), MANIFEST)


def column_dtype(fd) -> str:
    """The dtype of a feature's column in a block: ``int32`` ids for a vocabulary feature, else
    the spec's dtype."""
    return "int32" if fd.vocab else fd.dtype


def columns(spec: FeatureSpec) -> Dict[str, dict]:
    """``{feature: {"dtype": column dtype, "shape": spec shape}}`` of a block."""
    return {n: {"dtype": column_dtype(fd), "shape": [int(d) for d in fd.shape]}
            for n, fd in sorted(spec.features.items())}


def id_shard_name(string_shard_name: str, compression: str) -> str:
    """``train-00000-of-00004.tfrecord.gz`` -> its id shard's name under ``--compression``."""
    base = string_shard_name[:-len(SUFFIX)] if string_shard_name.endswith(SUFFIX) else string_shard_name
    return base + COMPRESSIONS[compression][1]


class Encoder:
    """Serialized string ``tf.train.Example`` -> its values per feature of ``spec`` (vocabulary
    features as looked-up ids); :meth:`block` packs a list of them into one block record.
    ``vocabs``: ``{vocab name: file bytes}``.

    A feature absent from the record takes its spec default (looked up for a vocabulary feature):
    what the string input would have parsed. Raises :class:`IdShardError`, naming ``where`` and
    the feature, for an unparsable record, a feature of another list kind than the spec's (a
    vocabulary feature must be a ``bytes_list`` of raw ids) or of another length."""

    def __init__(self, spec: FeatureSpec, vocabs: Mapping[str, bytes]):
        self.index = {v: vocab_index(vocabs[v]) for v in spec.vocabularies}
        self.features = {}  # name -> (vocab, values, default values, list kind, column dtype)
        for name, fd in sorted(spec.features.items()):
            n = 1
            for d in fd.shape:
                n *= int(d)
            default = fd.default
            if default is None:
                default = PAD if fd.dtype == "string" else 0
            if fd.vocab:
                default = [self.lookup(fd.vocab, str(default).encode("utf-8"))] * n
            elif fd.dtype == "string":
                default = [str(default).encode("utf-8")] * n
            else:
                default = [default] * n
            self.features[name] = (fd.vocab, n, default, _LIST_KIND[fd.dtype], column_dtype(fd))

    def lookup(self, vocab: str, value: bytes) -> int:
        if value == b"":
            return PAD_ID
        return self.index[vocab].get(value, OOV_ID)

    def values(self, record: bytes, where: str = "") -> Dict[str, list]:
        """``{feature: its values, flat}`` of one serialized record."""
        from tensorflow.core.example import example_pb2

        ex = example_pb2.Example()
        try:
            ex.ParseFromString(record)
        except Exception as e:  # protobuf's DecodeError
            raise IdShardError(f"{where}: not a tf.train.Example ({e})") from None
        feats = ex.features.feature
        out = {}
        for name, (vocab, n, default, kind, _) in self.features.items():
            if name not in feats:
                out[name] = default
                continue
            f = feats[name]
            got = f.WhichOneof("kind")
            if got != kind:
                what = f"raw ids (vocabulary {vocab!r})" if vocab else "its values"
                raise IdShardError(f"{where}: feature {name!r} is a {got}, expected a {kind} of {what}")
            vals = getattr(f, kind).value
            if len(vals) != n:
                raise IdShardError(f"{where}: feature {name!r} has {len(vals)} values, the spec "
                                   f"says {n}")
            if vocab:
                index = self.index[vocab]
                out[name] = [PAD_ID if s == b"" else index.get(s, OOV_ID) for s in vals]
            else:
                out[name] = list(vals)
        return out

    def block(self, rows: Sequence[Dict[str, list]]) -> bytes:
        """One block record (serialized ``tf.train.Example``) of ``rows`` (:meth:`values`)."""
        from tensorflow.core.example import example_pb2

        ex = example_pb2.Example()
        feats = ex.features.feature
        feats[ROWS_KEY].int64_list.value.append(len(rows))
        for name, (_, _, _, _, dtype) in self.features.items():
            if dtype == "string":
                bl = feats[name].bytes_list.value
                for r in rows:
                    bl.extend(r[name])
            else:
                col = np.asarray([r[name] for r in rows], dtype=NUMPY_DTYPES[dtype])
                feats[name].bytes_list.value.append(col.tobytes())
        return ex.SerializeToString()


def make_manifest(spec: FeatureSpec, vocabs: Mapping[str, bytes], splits: Mapping[str, dict],
                  block_rows: int = DEFAULT_BLOCK_ROWS, compression: str = "none") -> dict:
    """The manifest: ``splits`` = ``{split: {"shards": [names], "examples": n}}``."""
    return {"format_version": FORMAT_VERSION, "block_rows": int(block_rows), "compression": compression,
            "columns": columns(spec),
            "vocab_sha256": {v: digest(vocabs[v]) for v in sorted(spec.vocabularies)},
            "id_features": sorted(n for n, fd in spec.features.items() if fd.vocab),
            "splits": {k: dict(v) for k, v in splits.items()}}


# -- trainer side ----------------------------------------------------------------------------
def _read(path: str) -> bytes:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as fh:
        return fh.read()


def check(data_dir: str, spec: FeatureSpec, split: str, examples: Optional[int] = None,
          read: Callable[[str], bytes] = None) -> Optional[str]:
    """Why ``DATA/ids`` cannot feed ``split`` (``None`` when it can): no manifest, another
    format, the split not written, columns that differ from the feature spec, a shard missing, a vocabulary file changed since, or
    ``examples`` (stats.json's count, when given) not what was written."""
    read = read or _read
    import tensorflow as tf

    path = manifest_path(data_dir)
    fix = f"run `python -m pipelines.id_shards --data_dir={data_dir}`"
    if not tf.io.gfile.exists(path):
        return f"no id shards ({path} not found): {fix}"
    try:
        m = json.loads(read(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return f"{path} is not valid JSON ({e}): {fix}"
    if m.get("format_version") != FORMAT_VERSION:
        return f"{path}: format_version {m.get('format_version')!r}, expected {FORMAT_VERSION}: {fix}"
    s = (m.get("splits") or {}).get(split)
    if s is None:
        return f"{path} has no split {split!r} (it has {sorted(m.get('splits') or {})}): {fix} --splits={split}"
    want_cols = columns(spec)
    if m.get("columns") != want_cols:
        changed = sorted(n for n in set(want_cols) | set(m.get("columns") or {})
                         if want_cols.get(n) != (m.get("columns") or {}).get(n))
        return (f"the id shards' columns differ from {data_dir}'s feature spec (features "
                f"{changed}): {fix}")
    for v in spec.vocabularies:
        want = (m.get("vocab_sha256") or {}).get(v)
        if want is None or want != digest(read(spec.vocab_path(v))):
            return (f"the id shards were made with another vocabulary {v!r} than "
                    f"{spec.vocab_path(v)} (rerun of the preprocessing?): {fix}")
    for name in s.get("shards", []):
        if not tf.io.gfile.exists(os.path.join(ids_dir(data_dir), name)):
            return f"id shard {name} of split {split!r} is missing under {ids_dir(data_dir)}: {fix}"
    if examples is not None and int(s.get("examples", -1)) != int(examples):
        return (f"the id shards of split {split!r} hold {s.get('examples')} examples, stats.json "
                f"says {examples}: {fix}")
    return None


def load_manifest(data_dir: str, read: Callable[[str], bytes] = None) -> dict:
    return json.loads((read or _read)(manifest_path(data_dir)).decode("utf-8"))


def shard_paths(manifest: dict, data_dir: str, split: str) -> List[str]:
    """The id shards of ``split``, in the manifest's (the string shards') order."""
    return [os.path.join(ids_dir(data_dir), n) for n in manifest["splits"][split]["shards"]]
