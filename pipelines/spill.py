"""Bounded-memory sharded writes: records are spilled to temporary files where they are made and
only file names cross the shuffle.

A ``GroupByKey`` over the records themselves (Beam's ``WriteImpl``, or grouping the train split
by hash to shuffle it) makes the runner hold every record between two stages: the DirectRunner
(FnApiRunner) buffers a stage's whole output in the launcher process, which is what held most of
the 12.6 GB of an 817k-row job. Here:

1. :class:`SpillFn` runs in the stage that makes the records (fused with it): each record goes to
   shard ``hash(record) % num_shards`` and is appended to a temporary file of its own bundle
   (``<prefix>.spill-<token>-SSSSS``, length-prefixed records, through Beam FileSystems); the
   file name is emitted the first time the bundle writes to it (not from ``finish_bundle``, whose
   outputs some runners drop; the files are closed in ``finish_bundle``, before the bundle's
   outputs are committed).
2. The names are grouped by shard (a few names per shard), and :func:`merge_shard` writes each
   final shard from its spill files in chunks of at most ``chunk_bytes``: when a shard's spills
   exceed it, a first pass routes the records into ``ceil(bytes / chunk_bytes)`` sub-chunks by a
   second hash; each chunk is loaded, sorted by a third hash (a pseudo-random order that does not
   depend on the input's) and appended to the shard. A worker's memory is bounded by
   ``chunk_bytes``, not by the split's size. The content of every shard, order included, depends
   only on the set of records and the seed: the same on every runner and bundling.

Records are ``bytes`` (serialized examples) or ``str`` (JSON lines of the dead letters).
"""
from __future__ import annotations

import hashlib
import math
import struct
import uuid
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

DEFAULT_CHUNK_BYTES = 256 << 20
_LEN = struct.Struct("<I")


def hash64(record: bytes, seed: int) -> int:
    h = hashlib.blake2b(record, digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def _as_bytes(r) -> bytes:
    return r if isinstance(r, bytes) else r.encode("utf-8")


def spill_name(prefix: str, token: str, shard: int) -> str:
    return f"{prefix}.spill-{token}-{shard:05d}"


def iter_spill(path: str) -> Iterator[bytes]:
    """The records of one spill file."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        data = fh.read()
    i, n = 0, len(data)
    while i < n:
        (k,) = _LEN.unpack_from(data, i)
        yield data[i + 4:i + 4 + k]
        i += 4 + k


class _Spiller:
    """Open spill files of one bundle, one per key."""

    def __init__(self, name_of):
        self.name_of, self.files, self.bufs = name_of, {}, {}

    def add(self, key, rec: bytes) -> Optional[str]:
        """Append ``rec`` under ``key``; returns the file's name when it is new."""
        new = None
        if key not in self.files:
            new = self.name_of(key)
            self.files[key] = FileSystems.create(
                new, compression_type=CompressionTypes.UNCOMPRESSED)
            self.bufs[key] = []
        buf = self.bufs[key]
        buf.append(_LEN.pack(len(rec)))
        buf.append(rec)
        if len(buf) >= 4096:
            self.files[key].write(b"".join(buf))
            buf.clear()
        return new

    def close(self):
        for key, fh in self.files.items():
            if self.bufs[key]:
                fh.write(b"".join(self.bufs[key]))
            fh.close()
        self.files, self.bufs = {}, {}


class SpillFn(beam.DoFn):
    """record -> appended to its shard's spill file; emits (shard, spill path) once per file."""

    def __init__(self, prefix: str, num_shards: int, seed: int = 0):
        self.prefix, self.num_shards, self.seed = prefix, num_shards, seed

    def start_bundle(self):
        token = uuid.uuid4().hex
        self.spiller = _Spiller(lambda s: spill_name(self.prefix, token, s))

    def process(self, record):
        rec = _as_bytes(record)
        shard = 0 if self.num_shards == 1 else hash64(rec, self.seed) % self.num_shards
        new = self.spiller.add(shard, rec)
        if new is not None:
            yield shard, new

    def finish_bundle(self):
        self.spiller.close()


def _sizes(paths: List[str]) -> int:
    if not paths:
        return 0
    return sum(m.size_in_bytes for r in FileSystems.match(paths) for m in r.metadata_list)


def _write_records(fh, records: Iterable[bytes], fmt: str) -> None:
    if fmt == "tfrecord":
        from apache_beam.io.tfrecordio import _TFRecordUtil

        for r in records:
            _TFRecordUtil.write_record(fh, r)
    else:
        buf = []
        for r in records:
            buf.append(r)
            buf.append(b"\n")
            if len(buf) >= 4096:
                fh.write(b"".join(buf))
                buf = []
        fh.write(b"".join(buf))


def merge_shard(kv: Tuple[int, Iterable[Optional[str]]], final_path: str, fmt: str,
                seed: int = 0, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> str:
    """Write one final shard (GZIP TFRecords for ``fmt="tfrecord"``, text lines for "text")
    from its spill files (``None`` entries are empty-shard markers), in pseudo-random order, in
    chunks of at most ``chunk_bytes``; delete the spills; return ``final_path``."""
    shard, paths = kv
    spills = sorted({p for p in paths if p})
    total = _sizes(spills)
    n_chunks = max(1, math.ceil(total / max(1, chunk_bytes)))
    routed: List[str] = []
    if n_chunks > 1:  # pass 1: route every record to its chunk's file
        token = uuid.uuid4().hex
        spiller = _Spiller(lambda c: f"{final_path}.chunk-{token}-{c:05d}")
        for p in spills:
            for rec in iter_spill(p):
                spiller.add(hash64(rec, seed + 1) % n_chunks, rec)
        routed = sorted(spiller.files)
        names = {c: f"{final_path}.chunk-{token}-{c:05d}" for c in routed}
        spiller.close()
        chunks = [[names[c]] for c in routed]
    else:
        chunks = [spills]
    tmp = f"{final_path}.tmp-{uuid.uuid4().hex}"
    compression = CompressionTypes.GZIP if fmt == "tfrecord" else CompressionTypes.UNCOMPRESSED
    fh = FileSystems.create(tmp, compression_type=compression)
    try:
        for files in chunks:
            recs = [r for p in files for r in iter_spill(p)]
            recs.sort(key=lambda r: (hash64(r, seed + 2), r))
            _write_records(fh, recs, fmt)
            del recs
    finally:
        fh.close()
    if FileSystems.exists(final_path):  # a rerun into the same directory: replace
        FileSystems.delete([final_path])
    FileSystems.rename([tmp], [final_path])
    leftovers = spills + [p for files in chunks for p in files if p not in spills]
    if leftovers:
        FileSystems.delete(leftovers)
    return final_path


def delete_orphan_spills(prefix: str) -> List[str]:
    """Delete spill/chunk/tmp files under ``prefix`` left by failed bundle attempts."""
    out = []
    for pattern in (f"{prefix}.spill-*", f"{prefix}-*.chunk-*", f"{prefix}-*.tmp-*"):
        try:
            out += [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        except Exception:  # noqa: BLE001 - nothing matched on some filesystems
            pass
    if out:
        FileSystems.delete(out)
    return out
