"""pipelines.spillfiles: the spill format shared by the sinks and the per-user grouping."""
from __future__ import annotations

import os
import random

import pytest

from pipelines import spillfiles as S


def _write(path, payloads):
    w = S.SpillWriter(lambda key: path)
    for p in payloads:
        w.add(0, p)
    w.close()


def test_streamed_read_across_blocks(tmp_path, monkeypatch):
    """Records of every size, larger and smaller than the read block, come back whole and in
    order (the reader holds one block, not the file)."""
    monkeypatch.setattr(S, "READ_BYTES", 7)
    rng = random.Random(0)
    payloads = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 6, 7, 8, 20, 100])))
                for _ in range(300)]
    path = str(tmp_path / "a.spill")
    _write(path, payloads)
    assert list(S.iter_spill(path)) == payloads


def test_truncated_spill_file_raises(tmp_path):
    path = str(tmp_path / "a.spill")
    _write(path, [b"abc", b"defgh"])
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[:-2])
    with pytest.raises(IOError, match="truncated spill record"):
        list(S.iter_spill(path))


def test_chunked_routes_when_larger(tmp_path):
    paths = []
    for f in range(3):
        p = str(tmp_path / f"s{f}.spill")
        _write(p, [f"{f}-{i}".encode() * 10 for i in range(50)])
        paths.append(p)
    every = sorted(r for p in paths for r in S.iter_spill(p))
    with S.chunked(paths, 10 << 20, lambda rec, n: 0, str(tmp_path / "x")) as chunks:
        assert chunks == [sorted(paths)]  # fits one chunk: the files themselves
    with S.chunked(paths, 1000, lambda rec, n: hash(rec) % n, str(tmp_path / "x")) as chunks:
        assert len(chunks) > 1
        got = sorted(r for c in chunks for p in c for r in S.iter_spill(p))
        routed = [p for c in chunks for p in c]
    assert got == every
    assert not any(os.path.exists(p) for p in routed)  # deleted on exit
    assert all(os.path.exists(p) for p in paths)  # inputs kept
