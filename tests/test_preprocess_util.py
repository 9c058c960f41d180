"""Helpers shared by the preprocessing tests: an in-memory Source and output readers."""
from __future__ import annotations

import glob
import gzip
import json
import os
import random
import struct
from typing import Dict, List

from pipelines.sources.base import DeadLetter, Source


class MemSource(Source):
    """Rows (dicts of raw strings, or DeadLetters) served as one or more 'files'."""

    name = "mem"

    def __init__(self, files: Dict[str, list], *, positives_only=False, split="time",
                 timestamp_format="unix", user_profile=(), label_values=None):
        self._files = files
        self.positives_only = positives_only
        self.split = split
        self.timestamp_format = timestamp_format
        self.user_profile = tuple(user_profile)
        if label_values is not None:
            self.label_values = label_values

    def files(self):
        return sorted(self._files)

    def read_file(self, path):
        for i, r in enumerate(self._files[path], 1):
            if isinstance(r, DeadLetter):
                yield r
                continue
            d = dict(r)
            d["_origin"] = f"{path}:{i}"
            d["_raw"] = dict(r)
            yield d


def read_records(path: str) -> List[bytes]:
    """Records of a GZIP TFRecord file (plain Python, no TF)."""
    out = []
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        out.append(data[i + 12:i + 12 + n])
        i += 12 + n + 4
    return out


def split_records(out_dir: str, split: str) -> List[bytes]:
    recs = []
    for f in sorted(glob.glob(os.path.join(out_dir, f"{split}-*-of-*.tfrecord.gz"))):
        recs.extend(read_records(f))
    return recs


def decode(rec: bytes) -> dict:
    """Serialized tf.train.Example -> {name: value or list} (strings decoded)."""
    import tensorflow as tf

    ex = tf.train.Example.FromString(rec)
    out = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        vals = list(getattr(f, kind).value)
        if kind == "bytes_list":
            vals = [v.decode() for v in vals]
        out[k] = vals
    return out


def examples(out_dir: str, split: str) -> List[dict]:
    return [decode(r) for r in split_records(out_dir, split)]


def dead_letters(out_dir: str) -> List[dict]:
    out = []
    for f in sorted(glob.glob(os.path.join(out_dir, "dead_letter-*.jsonl"))):
        with open(f) as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out


def random_log(n_users=12, n_items=30, seed=1, history=True) -> List[dict]:
    """A random exposure log with same-timestamp pages, history rows and profile columns."""
    rng = random.Random(seed)
    rows = []
    pid = 0
    for u in range(n_users):
        for _ in range(rng.randint(1, 6)):
            pid += 1
            ts = rng.randint(0, 40)
            items = rng.sample(range(n_items), rng.randint(1, 7))
            trig = f"i{rng.randrange(n_items)}"
            for pos, it in enumerate(items):
                rows.append(dict(page_id=f"p{pid}", user_id=f"u{u}", item_id=f"i{it}",
                                 clicked=str(int(rng.random() < 0.3)), timestamp=str(ts),
                                 position=str(pos), trigger_item_id=trig,
                                 category_id=f"c{it % 5}", seller_id=f"s{it % 3}",
                                 user_gender="FM"[u % 2]))
        if history:
            for _ in range(rng.randint(0, 3)):
                it = rng.randrange(n_items)
                rows.append(dict(page_id="", user_id=f"u{u}", item_id=f"i{it}", clicked="",
                                 timestamp=str(rng.randint(0, 40)), is_history="1",
                                 category_id=f"c{it % 5}", seller_id=f"s{it % 3}",
                                 user_gender="FM"[u % 2]))
    rng.shuffle(rows)
    return rows
