"""Id shards: a copy of a split's TFRecords with every vocabulary feature already looked up.

The streamed training input spends most of its CPU on the string features: parsing them (one
allocation per value) and the ``StringLookup`` hash of every value, every epoch (measured on the
benchmark data, TAN's features, 1 core: 34 CPU-ms per batch of 1,024 from the GZIP string
shards, 12 from id shards; benchmarks/RESULTS.md section 11). ``python -m pipelines.id_shards``
writes ``DATA/ids/<split>-SSSSS-of-NNNNN.tfrecord.gz``: the same records, in the same shards and
order, each vocabulary feature an ``int64_list`` of the ids :class:`ctrcore.layers.IdLookup`
gives (0 padding ``""``, 1 OOV, 2.. the vocabulary file's lines in order), every other feature
unchanged. ``--train_input=ids`` (and ``auto`` when the split is not held in memory) streams
them; evaluation, export and serving keep the raw ids and the in-graph lookups.

``DATA/ids/manifest.json`` records, per split, the shards and the examples written, and the
SHA-256 of every vocabulary file the ids were made with: :func:`check` refuses shards made with
another vocabulary (a rerun of the preprocessing) or a count that differs from stats.json.

No TensorFlow here beyond ``tf.io.gfile`` in the trainer-side helpers; the encoding is protobuf.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Dict, List, Mapping, Optional

from ctrcore.schema import OOV_ID, PAD, PAD_ID, FeatureSpec

IDS_DIR = "ids"
MANIFEST = "manifest.json"
SUFFIX = ".tfrecord.gz"
FORMAT_VERSION = 1


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


class Encoder:
    """Serialized string ``tf.train.Example`` -> the same example with each vocabulary feature
    of ``spec`` as looked-up ``int64`` ids. ``vocabs``: ``{vocab name: file bytes}``.

    A vocabulary feature absent from the record is written as its spec default looked up (what
    the string input would have parsed), so the id parse spec never needs a default. Raises
    :class:`IdShardError` for an unparsable record, a vocabulary feature that is not a
    ``bytes_list`` or has another length than the spec's."""

    def __init__(self, spec: FeatureSpec, vocabs: Mapping[str, bytes]):
        self.index = {v: vocab_index(vocabs[v]) for v in spec.vocabularies}
        self.features = {}
        for name, fd in spec.features.items():
            if not fd.vocab:
                continue
            n = 1
            for d in fd.shape:
                n *= int(d)
            default = PAD if fd.default is None else str(fd.default)
            self.features[name] = (fd.vocab, n, self.lookup(fd.vocab, default.encode("utf-8")))

    def lookup(self, vocab: str, value: bytes) -> int:
        if value == b"":
            return PAD_ID
        return self.index[vocab].get(value, OOV_ID)

    def __call__(self, record: bytes, where: str = "") -> bytes:
        from tensorflow.core.example import example_pb2

        ex = example_pb2.Example()
        try:
            ex.ParseFromString(record)
        except Exception as e:  # protobuf's DecodeError
            raise IdShardError(f"{where}: not a tf.train.Example ({e})") from None
        feats = ex.features.feature
        for name, (vocab, n, default) in self.features.items():
            if name not in feats:
                feats[name].int64_list.value.extend([default] * n)
                continue
            f = feats[name]
            kind = f.WhichOneof("kind")
            if kind != "bytes_list":
                raise IdShardError(f"{where}: feature {name!r} is a {kind}, expected a bytes_list "
                                   f"of raw ids (vocabulary {vocab!r})")
            vals = list(f.bytes_list.value)
            if len(vals) != n:
                raise IdShardError(f"{where}: feature {name!r} has {len(vals)} values, the spec "
                                   f"says {n}")
            index = self.index[vocab]
            ids = [PAD_ID if s == b"" else index.get(s, OOV_ID) for s in vals]
            f.ClearField("bytes_list")
            f.int64_list.value.extend(ids)
        return ex.SerializeToString()


def make_manifest(spec: FeatureSpec, vocabs: Mapping[str, bytes], splits: Mapping[str, dict]) -> dict:
    """The manifest: ``splits`` = ``{split: {"shards": [names], "examples": n}}``."""
    return {"format_version": FORMAT_VERSION,
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
    format, the split not written, a shard missing, a vocabulary file changed since, or
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


def shard_paths(data_dir: str, split: str, read: Callable[[str], bytes] = None) -> List[str]:
    """The id shards of ``split``, in the manifest's (the string shards') order."""
    m = json.loads((read or _read)(manifest_path(data_dir)).decode("utf-8"))
    return [os.path.join(ids_dir(data_dir), n) for n in m["splits"][split]["shards"]]
