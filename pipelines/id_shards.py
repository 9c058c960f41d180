"""Write the id shards of a preprocessed data directory (:mod:`ctrcore.idshards`): each split's
examples again in column blocks, every vocabulary feature looked up to its ids, for the streamed
training input (``--train_input=ids``; ``auto`` picks them when the split is not held in memory).

    python -m pipelines.id_shards --data_dir=OUT [--splits=train] [--block_rows=256]
        [--compression=none|gzip] [--runner=DaskRunner ...]

A Beam job (any runner; every read and write through Beam ``FileSystems``): one element per
string shard ``OUT/<split>-SSSSS-of-NNNNN.tfrecord.gz``, encoded record by record and written
``--block_rows`` examples per block record into ``OUT/ids/<split>-SSSSS-of-NNNNN.tfrecord[.gz]``
(a temporary file renamed once complete), so the id shards hold the same examples in the same
shards and order; then ``OUT/ids/manifest.json`` (the format, per split the shards and the
examples written, and the SHA-256 of each vocabulary file). Nothing is dropped: a record
that cannot be encoded fails the job with an error naming the file, the record's index and the
feature. The examples written per split must equal stats.json's count, else the job fails.
Memory: each worker holds the vocabularies as dicts (about 100 bytes an id).
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ctrcore import idshards
from ctrcore.schema import SPEC_FILENAME, STATS_FILENAME, FeatureSpec
from pipelines.sinks import TEXT, WriteShards, shard_name

SPLITS = ("train", "valid", "test")


def _read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def _write_bytes(path: str, data: bytes) -> None:
    fh = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        fh.write(data)
    finally:
        fh.close()


def iter_records(path: str) -> Iterator[Tuple[int, bytes]]:
    """``(index, record)`` of a GZIP TFRecord file; a broken frame raises naming the file and
    the record's index."""
    from apache_beam.io.tfrecordio import _TFRecordUtil

    with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as fh:
        i = 0
        while True:
            try:
                rec = _TFRecordUtil.read_record(fh)
            except Exception as e:  # ValueError of a bad frame, zlib/EOF errors of a bad GZIP
                raise idshards.IdShardError(f"{path}: record {i}: cannot read ({e})") from None
            if rec is None:
                return
            yield i, rec
            i += 1


_BEAM_COMPRESSION = {"none": CompressionTypes.UNCOMPRESSED, "gzip": CompressionTypes.GZIP}


def encode_shard(path: str, out_path: str, encoder: idshards.Encoder,
                 block_rows: int = idshards.DEFAULT_BLOCK_ROWS, compression: str = "none") -> int:
    """Encode one string shard into ``out_path``, ``block_rows`` examples per block record
    (written to a temporary file, renamed when complete); returns the examples written."""
    from apache_beam.io.tfrecordio import _TFRecordUtil

    tmp = f"{out_path}.tmp-{uuid.uuid4().hex}"
    fh = FileSystems.create(tmp, compression_type=_BEAM_COMPRESSION[compression])
    n, rows = 0, []
    try:
        for i, rec in iter_records(path):
            rows.append(encoder.values(rec, where=f"{path}: record {i}"))
            if len(rows) == block_rows:
                _TFRecordUtil.write_record(fh, encoder.block(rows))
                n, rows = n + len(rows), []
        if rows:
            _TFRecordUtil.write_record(fh, encoder.block(rows))
            n += len(rows)
    except BaseException:
        fh.close()
        FileSystems.delete([tmp])
        raise
    fh.close()
    if FileSystems.exists(out_path):
        FileSystems.delete([out_path])
    FileSystems.rename([tmp], [out_path])
    return n


class EncodeShardFn(beam.DoFn):
    """``(split, string shard path)`` -> ``(split, shard name, records written)``."""

    def __init__(self, spec_json: dict, data_dir: str, block_rows: int, compression: str):
        self.spec_json, self.data_dir = spec_json, data_dir
        self.block_rows, self.compression = block_rows, compression

    def setup(self):
        spec = FeatureSpec.from_json(self.spec_json, root=self.data_dir)
        vocabs = {v: _read_bytes(spec.vocab_path(v)) for v in spec.vocabularies}
        self.encoder = idshards.Encoder(spec, vocabs)

    def process(self, element):
        split, path = element
        name = idshards.id_shard_name(os.path.basename(path), self.compression)
        out = os.path.join(idshards.ids_dir(self.data_dir), name)
        yield split, name, encode_shard(path, out, self.encoder, self.block_rows, self.compression)


def list_string_shards(data_dir: str, split: str) -> List[str]:
    pattern = os.path.join(data_dir, f"{split}-*{idshards.SUFFIX}")
    return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)


def build_manifest(results: Sequence[Tuple[str, str, int]], spec: FeatureSpec,
                   vocabs: Dict[str, bytes], stats: dict, block_rows: int = idshards.DEFAULT_BLOCK_ROWS,
                   compression: str = "none") -> dict:
    """The manifest of the shards written; raises when a split's examples differ from stats.json."""
    splits: Dict[str, dict] = {}
    for split, name, n in sorted(results):
        s = splits.setdefault(split, {"shards": [], "examples": 0})
        s["shards"].append(name)
        s["examples"] += int(n)
    for split, s in splits.items():
        want = (stats.get("examples") or {}).get(split)
        if want is not None and int(want) != s["examples"]:
            raise idshards.IdShardError(
                f"split {split!r}: {s['examples']} examples written to the id shards, stats.json "
                f"says {want}: the string shards changed while the job ran, or stats.json is stale")
    return idshards.make_manifest(spec, vocabs, splits, block_rows, compression)


def run(data_dir: str, splits: Sequence[str] = ("train",), beam_args: Sequence[str] = (),
        block_rows: int = idshards.DEFAULT_BLOCK_ROWS, compression: str = "none") -> dict:
    """Run the job; returns the manifest written to ``DATA/ids/manifest.json``."""
    from pipelines.preprocess import pipeline_options

    if int(block_rows) < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if compression not in idshards.COMPRESSIONS:
        raise ValueError(f"compression {compression!r}: one of {sorted(idshards.COMPRESSIONS)}")

    spec_json = json.loads(_read_bytes(os.path.join(data_dir, SPEC_FILENAME)).decode("utf-8"))
    stats = json.loads(_read_bytes(os.path.join(data_dir, STATS_FILENAME)).decode("utf-8"))
    spec = FeatureSpec.from_json(spec_json, root=data_dir)
    work = []
    for split in splits:
        paths = list_string_shards(data_dir, split)
        if not paths:
            raise FileNotFoundError(f"no {split}-*{idshards.SUFFIX} under {data_dir}")
        work += [(split, p) for p in paths]
    if not FileSystems.exists(idshards.ids_dir(data_dir)):
        FileSystems.mkdirs(idshards.ids_dir(data_dir))
    # the (split, shard, count) results go through a file (WriteShards: safe on the DaskRunner)
    prefix = os.path.join(idshards.ids_dir(data_dir), f"_results-{uuid.uuid4().hex}")
    p = beam.Pipeline(options=pipeline_options(list(beam_args)))
    try:
        with p:
            (p | "Shards" >> beam.Create(work) | "Encode" >> beam.ParDo(EncodeShardFn(spec_json, data_dir, int(block_rows), compression))
             | "AsJson" >> beam.Map(json.dumps)
             | "Results" >> WriteShards(prefix, ".jsonl", num_shards=1, fmt=TEXT, order="sorted"))
    finally:
        client = getattr(getattr(p, "result", None), "client", None)
        if client is not None:
            client.close()
    out = shard_name(prefix, 0, 1, ".jsonl")
    results = [tuple(json.loads(l)) for l in _read_bytes(out).decode("utf-8").splitlines() if l]
    FileSystems.delete([out])
    vocabs = {v: _read_bytes(spec.vocab_path(v)) for v in spec.vocabularies}
    manifest = build_manifest(results, spec, vocabs, stats, int(block_rows), compression)
    _write_bytes(idshards.manifest_path(data_dir), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def main(argv: Optional[List[str]] = None) -> dict:
    """``--data_dir=OUT [--splits=train,valid,test]``; every other ``--option`` goes to Beam."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", required=True, help="a pipelines.preprocess output directory")
    ap.add_argument("--splits", default="train", help="comma list of splits (default: train, "
                    "the one the training streams)")
    ap.add_argument("--block_rows", type=int, default=idshards.DEFAULT_BLOCK_ROWS,
                    help="examples per block record")
    ap.add_argument("--compression", default="none", choices=sorted(idshards.COMPRESSIONS),
                    help="none: least CPU per example read, about 10x the disk of the GZIP "
                         "string shards; gzip: their disk, most of the CPU back to the inflation")
    a, beam_args = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    splits = [s for s in a.splits.split(",") if s]
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise SystemExit(f"--splits: unknown {unknown} (known: {list(SPLITS)})")
    m = run(a.data_dir, splits, beam_args, a.block_rows, a.compression)
    print(json.dumps({k: v["examples"] for k, v in m["splits"].items()}))
    return m


if __name__ == "__main__":
    main()
