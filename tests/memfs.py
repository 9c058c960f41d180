"""A Beam FileSystem of the tests' own, under the test-only scheme ``memfs://``: files live in
this process's memory (``MemFileSystem.FILES``), so nothing can reach them with ``os.path``,
``glob`` or ``open``: a source that bypasses Beam's FileSystems fails on them. Importing this
module registers the scheme (Beam finds FileSystem subclasses by their ``scheme()``). Every open
is counted in ``MemFileSystem.OPENS`` (path -> number of opens)."""
from __future__ import annotations

import io
import time
from collections import Counter
from typing import Dict

from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes,
                                       FileMetadata, FileSystem)

SCHEME = "memfs"


class _Writer(io.BytesIO):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def close(self):
        MemFileSystem.FILES[self.path] = self.getvalue()
        super().close()


class _Reader(io.BytesIO):
    mode = "rb"


class MemFileSystem(FileSystem):
    FILES: Dict[str, bytes] = {}
    OPENS: Counter = Counter()

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path, data in sorted(self.FILES.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), time.time())

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        return _Writer(path)

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        if path not in self.FILES:
            raise BeamIOError(f"memfs: no file {path}")
        self.OPENS[path] += 1
        raw = _Reader(self.FILES[path])
        if compression_type == CompressionTypes.AUTO:
            compression_type = CompressionTypes.detect_compression_type(path)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def copy(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            self.FILES[d] = self.FILES[s]

    def rename(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            self.FILES[d] = self.FILES.pop(s)

    def exists(self, path):
        return path in self.FILES

    def size(self, path):
        return len(self.FILES[path])

    def last_updated(self, path):
        return time.time()

    def checksum(self, path):
        return str(hash(self.FILES[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.FILES[path]), time.time())

    def delete(self, paths):
        for p in paths:
            self.FILES.pop(p, None)


def put(path: str, data: bytes) -> str:
    """Store ``data`` at ``memfs://path`` (path without the scheme) and return the URL."""
    url = f"{SCHEME}://{path.lstrip('/')}"
    MemFileSystem.FILES[url] = data
    return url
