"""Spill files: length-prefixed records in temporary files, through Beam ``FileSystems``.

The one file format and the few operations that the job's bounded-memory steps share: the
sharded sinks (:mod:`pipelines.sinks`: examples spilled where they are made, merged per shard)
and the per-user grouping through files (:mod:`pipelines.filegroup`). A spill file is a
sequence of ``<u32 little-endian length><payload>`` records, written uncompressed (they are
read back once or twice by the same job and deleted).

* :class:`SpillWriter`: the open spill files of one bundle, one per key (a shard, a partition,
  a chunk), buffered; :meth:`SpillWriter.add` returns a file's path the first time it is
  written to (so a DoFn can emit the name from ``process``: Beam 2.77's DaskRunner drops what
  ``finish_bundle`` emits), :meth:`SpillWriter.close` flushes and closes them all (call it from
  ``finish_bundle``, which runs before the bundle's outputs are committed).
* :func:`iter_spill`: the payloads of one file.
* :func:`chunked`: a set of spill files read as groups of at most about ``chunk_bytes`` of
  records: when they are larger, every record is first routed by ``chunk_of`` into one of
  ``ceil(bytes / chunk_bytes)`` chunk files, so a reader holds one chunk at a time.
"""
from __future__ import annotations

import math
import struct
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

LEN = struct.Struct("<I")
FLUSH_BYTES = 1 << 20


class SpillWriter:
    """Open spill files of one bundle (or one routing pass), one per key, each buffered up to
    :data:`FLUSH_BYTES`. ``path_of(key)`` names a key's file."""

    def __init__(self, path_of: Callable[[Any], str]):
        self.path_of = path_of
        self.handles: Dict[Any, Any] = {}
        self.paths: Dict[Any, str] = {}
        self._bufs: Dict[Any, List[bytes]] = {}
        self._sizes: Dict[Any, int] = {}

    def add(self, key, payload: bytes) -> Optional[str]:
        """Append one record to ``key``'s file; returns the file's path when it is new."""
        new = None
        if key not in self.handles:
            new = self.paths[key] = self.path_of(key)
            self.handles[key] = FileSystems.create(
                new, compression_type=CompressionTypes.UNCOMPRESSED)
            self._bufs[key], self._sizes[key] = [], 0
        buf = self._bufs[key]
        buf.append(LEN.pack(len(payload)))
        buf.append(payload)
        self._sizes[key] += 4 + len(payload)
        if self._sizes[key] >= FLUSH_BYTES:
            self.handles[key].write(b"".join(buf))
            buf.clear()
            self._sizes[key] = 0
        return new

    def close(self) -> None:
        for key, fh in self.handles.items():
            if self._bufs[key]:
                fh.write(b"".join(self._bufs[key]))
            fh.close()
        self.handles, self._bufs, self._sizes = {}, {}, {}


READ_BYTES = 8 << 20


def iter_spill(path: str) -> Iterator[bytes]:
    """The payloads of one spill file, in the order they were written, read in blocks of
    :data:`READ_BYTES` (a bundle's spill file can hold gigabytes: one DirectRunner worker's
    whole share of a split is one bundle)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        buf, i = b"", 0
        while True:
            block = fh.read(READ_BYTES)
            if not block:
                break
            buf = buf[i:] + block
            i, n = 0, len(buf)
            while i + 4 <= n:
                (k,) = LEN.unpack_from(buf, i)
                if i + 4 + k > n:
                    break
                yield buf[i + 4:i + 4 + k]
                i += 4 + k
        if i != len(buf):
            raise IOError(f"{path}: truncated spill record at the end of the file")


def total_bytes(paths: List[str]) -> int:
    if not paths:
        return 0
    return sum(m.size_in_bytes for r in FileSystems.match(list(paths)) for m in r.metadata_list)


def delete_quietly(paths: Iterable[str]) -> None:
    """Delete what exists of ``paths`` (best effort: a later cleanup retries by pattern)."""
    paths = [p for p in paths if p]
    if paths:
        try:
            FileSystems.delete(paths)
        except Exception:  # noqa: BLE001
            for p in paths:
                try:
                    if FileSystems.exists(p):
                        FileSystems.delete([p])
                except Exception:  # noqa: BLE001
                    pass


def delete_matching(patterns: Iterable[str]) -> List[str]:
    """Delete every file matching one of ``patterns``; returns the paths deleted."""
    out: List[str] = []
    for pattern in patterns:
        try:
            out += [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        except Exception:  # noqa: BLE001 - nothing matched on some filesystems
            pass
    out = sorted(set(out))
    delete_quietly(out)
    return out


@contextmanager
def chunked(paths: Iterable[str], chunk_bytes: int, chunk_of: Callable[[bytes, int], int],
            scratch: str):
    """Context manager giving a list of chunks (each a list of spill paths) that together hold
    every record of ``paths``, each at most about ``chunk_bytes``: the files themselves when
    they fit one chunk, else ``n = ceil(bytes / chunk_bytes)`` routed files
    ``<scratch>-<token>-CCCCC`` (record -> chunk ``chunk_of(payload, n)``), deleted on exit.
    The input files are left in place."""
    paths = sorted({p for p in paths if p})
    n_chunks = max(1, math.ceil(total_bytes(paths) / max(1, chunk_bytes)))
    if n_chunks == 1:
        yield [paths] if paths else []
        return
    token = uuid.uuid4().hex
    writer = SpillWriter(lambda c: f"{scratch}-{token}-{c:05d}")
    try:
        for p in paths:
            for rec in iter_spill(p):
                writer.add(chunk_of(rec, n_chunks), rec)
    finally:
        routed = [writer.paths[c] for c in sorted(writer.paths)]
        writer.close()
    try:
        yield [[r] for r in routed]
    finally:
        delete_quietly(routed)
