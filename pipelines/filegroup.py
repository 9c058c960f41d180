"""GroupByKey through files: a per-key grouping whose data never crosses the runner.

Why: Beam's Python DirectRunner (FnApiRunner) keeps a ``GroupByKey``'s whole input in the
launcher process and then ships each worker its share as one in-memory partition; Beam 2.77's
DaskRunner keeps it in the workers' memory as bag partitions. On the preprocessing job's
per-user grouping that is every canonical row (~340 B encoded per row), held in the launcher
and copied 2-3 times on its way to the workers (benchmarks/RESULTS_preprocess.md, section
"Memory"). Here the rows go to files where they are read, and only file names are grouped:

1. :class:`SpillByKey`: each ``(key, value)`` is encoded (``key`` and ``value`` separately, with
   a deterministic coder, default ``FastPrimitivesCoder``) and appended to the spill file of
   partition ``blake2b(encoded key) % num_partitions`` of its bundle,
   ``<prefix>-pSSSSS-<bundle token>.spill`` (length-prefixed records, through Beam
   ``FileSystems``, so the prefix may be local, gs://, hdfs:// ...). The file's name is emitted
   as ``(partition, path)`` the first time the bundle writes to it (from ``process``, never from
   ``finish_bundle``, whose outputs Beam 2.77's DaskRunner drops); the files are flushed and
   closed in ``finish_bundle``, before the bundle's outputs are committed, so a name is seen
   downstream only once its file is complete. The names are grouped by partition: a few names
   per partition and bundle cross the runner, not the rows.
2. :class:`ReadSpilledGroups`: per partition, the spill files are read and grouped by encoded
   key, in chunks of at most ``chunk_bytes`` of spill data: a larger partition is first routed
   into ``ceil(bytes / chunk_bytes)`` sub-chunk files by a second hash of the key (a key is
   never split), so a worker holds one chunk of *encoded* records at a time; values are decoded
   one key at a time as ``(key, [values])`` is emitted (keys in encoded-key order).

:class:`FileGroupByKey` is 1 then 2: a drop-in for ``beam.GroupByKey()`` (values in no
particular order, as there). The ``(partition, paths)`` output of :class:`SpillByKey` may be
read more than once (e.g. a first pass that computes statistics and a second that uses them as
a side input), because nothing deletes the spill files but :func:`cleanup`, to be called once
the job's outputs are complete (a retried bundle re-reads them; files of failed bundle
attempts, whose names were never committed, are deleted by :func:`cleanup` too).

One key's values must fit a worker (the per-user row cap, :mod:`pipelines.caps`, bounds a
user). Meant for runners whose shuffle is in memory (DirectRunner, DaskRunner); Dataflow,
Flink and Spark shuffle through disk themselves, and many small bundles would write many small
files there: use ``beam.GroupByKey`` on those.
"""
from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import coders

from pipelines.spillfiles import SpillWriter, chunked, delete_matching, iter_spill

DEFAULT_PARTITIONS = 64
DEFAULT_CHUNK_BYTES = 64 << 20
_U32 = struct.Struct("<I")


def _hash(data: bytes, seed: int) -> int:
    h = hashlib.blake2b(data, digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def spill_path(prefix: str, partition: int, token: str) -> str:
    return f"{prefix}-p{partition:05d}-{token}.spill"


def _record(key_enc: bytes, val_enc: bytes) -> bytes:
    """One spill payload: ``<u32 key length><key><value>``."""
    return b"".join((_U32.pack(len(key_enc)), key_enc, val_enc))


def _split(rec: bytes) -> Tuple[bytes, bytes]:
    (k,) = _U32.unpack_from(rec, 0)
    return rec[4:4 + k], rec[4 + k:]


def iter_records(path: str) -> Iterator[Tuple[bytes, bytes]]:
    """``(encoded key, encoded value)`` of every record of one spill file."""
    return (_split(rec) for rec in iter_spill(path))


class SpillFn(beam.DoFn):
    """``(key, value)`` -> appended to its partition's spill file of this bundle; emits
    ``(partition, path)`` once per file (see the module docstring)."""

    def __init__(self, prefix: str, num_partitions: int = DEFAULT_PARTITIONS, seed: int = 0,
                 coder: Optional[coders.Coder] = None):
        if num_partitions < 1:
            raise ValueError(f"num_partitions={num_partitions} must be >= 1")
        self.prefix, self.num_partitions, self.seed = prefix, num_partitions, seed
        self.coder = coder or coders.FastPrimitivesCoder()

    def start_bundle(self):
        token = uuid.uuid4().hex
        self.files = SpillWriter(lambda p: spill_path(self.prefix, p, token))

    def process(self, kv):
        key, value = kv
        key_enc = self.coder.encode(key)
        part = _hash(key_enc, self.seed) % self.num_partitions
        new = self.files.add(part, _record(key_enc, self.coder.encode(value)))
        if new is not None:
            yield part, new

    def finish_bundle(self):
        self.files.close()


class SpillByKey(beam.PTransform):
    """``(key, value)`` -> ``(partition, [spill paths])``, one element per partition written."""

    def __init__(self, prefix: str, num_partitions: int = DEFAULT_PARTITIONS, seed: int = 0,
                 coder: Optional[coders.Coder] = None):
        super().__init__()
        self.fn = SpillFn(prefix, num_partitions, seed, coder)

    def expand(self, pcoll):
        return (pcoll | "Spill" >> beam.ParDo(self.fn)
                | "GroupPaths" >> beam.GroupByKey())


def group_spilled(partition: int, paths: Iterable[str], coder: Optional[coders.Coder] = None,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES, seed: int = 0,
                  scratch_prefix: Optional[str] = None) -> Iterator[Tuple[Any, List[Any]]]:
    """``(key, [values])`` of every key of one partition's spill files, holding at most about
    ``chunk_bytes`` of encoded records at a time (see the module docstring). Routed sub-chunk
    files go to ``scratch_prefix`` (default: beside the first spill) and are deleted after use;
    the spill files themselves are left in place."""
    coder = coder or coders.FastPrimitivesCoder()
    paths = sorted({p for p in paths if p})
    if not paths:
        return
    scratch = f"{scratch_prefix or paths[0]}.route-{partition:05d}"
    with chunked(paths, chunk_bytes, lambda rec, n: _hash(_split(rec)[0], seed + 1) % n,
                 scratch) as chunks:
        for files_of_chunk in chunks:
            groups = {}
            for p in files_of_chunk:
                for key_enc, val_enc in iter_records(p):
                    vals = groups.get(key_enc)
                    if vals is None:
                        groups[key_enc] = [val_enc]
                    else:
                        vals.append(val_enc)
            for key_enc in sorted(groups):
                vals = groups.pop(key_enc)
                yield coder.decode(key_enc), [coder.decode(v) for v in vals]


class ReadSpilledGroupsFn(beam.DoFn):
    def __init__(self, coder=None, chunk_bytes: int = DEFAULT_CHUNK_BYTES, seed: int = 0):
        self.coder = coder or coders.FastPrimitivesCoder()
        self.chunk_bytes, self.seed = chunk_bytes, seed

    def process(self, kv):
        partition, paths = kv
        yield from group_spilled(partition, paths, self.coder, self.chunk_bytes, self.seed)


class ReadSpilledGroups(beam.PTransform):
    """``(partition, [spill paths])`` -> ``(key, [values])``."""

    def __init__(self, coder=None, chunk_bytes: int = DEFAULT_CHUNK_BYTES, seed: int = 0):
        super().__init__()
        self.fn = ReadSpilledGroupsFn(coder, chunk_bytes, seed)

    def expand(self, pcoll):
        return pcoll | "ReadGroups" >> beam.ParDo(self.fn)


class FileGroupByKey(beam.PTransform):
    """``(key, value)`` -> ``(key, [values])`` through spill files under ``prefix`` (a path
    prefix on any Beam filesystem); call :func:`cleanup` (``prefix``) after the job."""

    def __init__(self, prefix: str, num_partitions: int = DEFAULT_PARTITIONS,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, seed: int = 0,
                 coder: Optional[coders.Coder] = None):
        super().__init__()
        self.prefix, self.num_partitions, self.chunk_bytes = prefix, num_partitions, chunk_bytes
        self.seed, self.coder = seed, coder

    def expand(self, pcoll):
        return (pcoll
                | "SpillByKey" >> SpillByKey(self.prefix, self.num_partitions, self.seed,
                                             self.coder)
                | "ReadSpilledGroups" >> ReadSpilledGroups(self.coder, self.chunk_bytes,
                                                           self.seed))


def cleanup(prefix: str) -> List[str]:
    """Delete every spill and routing file under ``prefix``; returns the paths deleted."""
    return delete_matching([f"{prefix}-p*.spill", f"{prefix}-p*.spill.route-*"])
