"""Sharded file sinks of the preprocessing job, through Beam's ``FileSystems`` (local, gs://,
hdfs://, s3://), that run the same on every runner, Beam's DaskRunner included, and hold a
bounded amount of memory whatever the size of the output.

Why not ``beam.io.WriteToTFRecord`` / ``WriteToText``: Beam's ``WriteImpl`` creates a temporary
directory (named by a fresh uuid) in a step whose result every writing bundle reads as a side
input. Beam 2.77's DaskRunner recomputes a side input for every partition that reads it, so each
partition writes into a directory of its own, and the finalize step (which lists only the first
result's directory) fails with "src and dst files do not exist" as soon as more than one
partition writes (measured: ``WriteToText(num_shards=3)`` of 1,000 elements); with
``num_shards=0`` the file names are emitted from ``finish_bundle``, whose outputs the DaskRunner
drops, and the output is silently empty.

Why not a ``GroupByKey`` of the records by shard (or by hash, to shuffle the train split): the
DirectRunner (FnApiRunner) buffers a stage's whole output in the launcher process, so every
serialized example would sit in the launcher's memory at once (measured: most of the 12.6 GB of
an 817k-row job).

:class:`WriteShards` instead:

1. runs :class:`SpillFn` in the stage that makes the records (fused with it): each record goes to
   shard ``hash_bucket(record, num_shards, seed)`` and is appended to a temporary file of its
   bundle (``<prefix>.spill-<token>-SSSSS``, length-prefixed records); the file's name is
   emitted the first time the bundle writes to it (not from ``finish_bundle``, whose outputs the
   DaskRunner drops; the files are closed in ``finish_bundle``, before the bundle's outputs are
   committed);
2. groups the NAMES by shard (with an empty-shard marker for every shard, so a split always has
   exactly N files), and :func:`merge_shard` writes each final shard from its spill files in
   chunks of at most ``chunk_bytes``: when a shard's spills exceed it, a first pass routes the
   records into ``ceil(bytes / chunk_bytes)`` chunk files by a second hash; each chunk is
   loaded, put in order (by default sorted by a third hash: a pseudo-random order that does
   not depend on the input's, so any window of consecutive records is a random sample; see
   :data:`ORDERS`) and appended to a
   temporary file renamed to ``PREFIX-SSSSS-of-NNNNN SUFFIX`` once complete. A worker holds at
   most one chunk; the content of every shard, order included, depends only on the set of
   records and the seed (orders "hash" and "sorted"): the same on every runner and bundling.

The output PCollection holds the paths written, one per shard, for a later step to depend on.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.spillfiles import SpillWriter, chunked, delete_matching, delete_quietly, iter_spill

TFRECORD = "tfrecord"
TEXT = "text"


def hash_bucket(record: bytes, buckets: int, seed: int = 0) -> int:
    """A bucket in ``[0, buckets)`` from a seeded BLAKE2b of the record (the same in every
    process and run, unlike Python's salted ``hash``)."""
    h = hashlib.blake2b(record, digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little") % buckets


def shard_name(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def shard_glob(prefix: str, suffix: str) -> str:
    return f"{prefix}-*-of-*{suffix}"


DEFAULT_CHUNK_BYTES = 256 << 20
#: record order within each chunk of a shard: "hash" = seeded pseudo-random (deterministic),
#: "sorted" = by the records' bytes (deterministic; dead letters by origin), "made" = the order
#: the records were made in (spill files by name, then their order: deterministic only within
#: one bundle; keeps e.g. a user's examples together)
ORDERS = ("hash", "sorted", "made")


def _as_bytes(r) -> bytes:
    return r if isinstance(r, bytes) else r.encode("utf-8")


def spill_name(prefix: str, token: str, shard: int) -> str:
    return f"{prefix}.spill-{token}-{shard:05d}"


class ShardSpiller:
    """Records -> the spill files of one sink's shards, written by one bundle (:class:`SpillFn`)
    or by one element of a DoFn that makes many records (the files grouping's builder, which
    spills its examples itself so that a runner holding a task's outputs as a list, Beam's
    DaskRunner, never holds them). :meth:`add` returns ``(shard, spill path)`` when it opens a
    file: the pairs :class:`MergeSpills` reads."""

    def __init__(self, prefix: str, num_shards: int, seed: int = 0):
        token = uuid.uuid4().hex
        self.num_shards, self.seed = num_shards, seed
        self.writer = SpillWriter(lambda s: spill_name(prefix, token, s))

    def add(self, record) -> Optional[Tuple[int, str]]:
        rec = _as_bytes(record)
        shard = 0 if self.num_shards == 1 else hash_bucket(rec, self.num_shards, self.seed)
        new = self.writer.add(shard, rec)
        return None if new is None else (shard, new)

    def close(self) -> None:
        self.writer.close()


class SpillFn(beam.DoFn):
    """record -> appended to its shard's spill file; emits (shard, spill path) once per file."""

    def __init__(self, prefix: str, num_shards: int, seed: int = 0):
        self.prefix, self.num_shards, self.seed = prefix, num_shards, seed

    def start_bundle(self):
        self.spiller = ShardSpiller(self.prefix, self.num_shards, self.seed)

    def process(self, record):
        new = self.spiller.add(record)
        if new is not None:
            yield new

    def finish_bundle(self):
        self.spiller.close()


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
                seed: int = 0, chunk_bytes: int = DEFAULT_CHUNK_BYTES, order: str = "hash") -> str:
    """Write one final shard (GZIP TFRecords for ``fmt="tfrecord"``, text lines for "text")
    from its spill files (``None`` entries are empty-shard markers) in chunks of at most
    ``chunk_bytes`` (:func:`pipelines.spillfiles.chunked`, records routed by a second hash);
    each chunk in the ``order`` of :data:`ORDERS`; delete the spills; return ``final_path``."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r} (known: {list(ORDERS)})")
    shard, paths = kv
    spills = sorted({p for p in paths if p})
    tmp = f"{final_path}.tmp-{uuid.uuid4().hex}"
    compression = CompressionTypes.GZIP if fmt == "tfrecord" else CompressionTypes.UNCOMPRESSED
    with chunked(spills, chunk_bytes, lambda rec, n: hash_bucket(rec, n, seed + 1),
                 f"{final_path}.chunk") as chunks:
        fh = FileSystems.create(tmp, compression_type=compression)
        try:
            for files in chunks:
                recs = [r for p in files for r in iter_spill(p)]
                if order == "hash":
                    recs.sort(key=lambda r: (hash_bucket(r, 1 << 62, seed + 2), r))
                elif order == "sorted":
                    recs.sort()
                _write_records(fh, recs, fmt)
                del recs
        finally:
            fh.close()
    if FileSystems.exists(final_path):  # a rerun into the same directory: replace
        FileSystems.delete([final_path])
    FileSystems.rename([tmp], [final_path])
    delete_quietly(spills)
    return final_path


def delete_orphan_spills(prefix: str) -> List[str]:
    """Delete spill/chunk/tmp files under ``prefix`` left by failed bundle attempts."""
    return delete_matching([f"{prefix}.spill-*", f"{prefix}-*.chunk-*", f"{prefix}-*.tmp-*"])


class MergeSpills(beam.PTransform):
    """``(shard, spill path)`` pairs (:class:`ShardSpiller`) -> ``num_shards`` files
    ``PREFIX-SSSSS-of-NNNNN SUFFIX`` merged per shard (step 2 of the module docstring). Returns
    the PCollection of the paths written (one per shard)."""

    def __init__(self, prefix: str, suffix: str, num_shards: int, fmt: str = TFRECORD,
                 seed: int = 0, order: str = "hash", chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards={num_shards} must be >= 1")
        if fmt not in (TFRECORD, TEXT):
            raise ValueError(f"unknown shard format {fmt!r}")
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r} (known: {list(ORDERS)})")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes={chunk_bytes} must be >= 1")
        self.prefix, self.suffix, self.num_shards, self.fmt = prefix, suffix, num_shards, fmt
        self.seed, self.order, self.chunk_bytes = seed, order, chunk_bytes

    def expand(self, spilled):
        n, prefix, suffix = self.num_shards, self.prefix, self.suffix
        fmt, seed, order, chunk = self.fmt, self.seed, self.order, self.chunk_bytes
        every = spilled.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return ((spilled, every) | "WithEmptyShards" >> beam.Flatten()
                | "GroupSpillsByShard" >> beam.GroupByKey()
                | "MergeShard" >> beam.Map(lambda kv: merge_shard(
                    kv, shard_name(prefix, kv[0], n, suffix), fmt, seed, chunk, order)))


class WriteShards(MergeSpills):
    """Records (``bytes`` for ``fmt="tfrecord"``: GZIP TFRecord files; ``str`` for
    ``fmt="text"``: one line each) -> ``num_shards`` files ``PREFIX-SSSSS-of-NNNNN SUFFIX``,
    spilled where they are made (:class:`SpillFn`) and merged per shard (:class:`MergeSpills`;
    module docstring). Returns the PCollection of the paths written (one per shard)."""

    def expand(self, pcoll):
        spilled = pcoll | "Spill" >> beam.ParDo(SpillFn(self.prefix, self.num_shards, self.seed))
        return super().expand(spilled)


def delete_stale_shards(prefix: str, suffix: str, written: Sequence[str]) -> List[str]:
    """Delete ``PREFIX-*-of-*SUFFIX`` files not in ``written`` (left by an earlier run into the
    same directory with another shard count: a reader globbing the split would read them as
    data). Returns the paths deleted."""
    keep = set(written)
    stale = [m.path for r in FileSystems.match([shard_glob(prefix, suffix)])
             for m in r.metadata_list if m.path not in keep]
    if stale:
        FileSystems.delete(stale)
    return stale
