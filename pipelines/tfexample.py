"""A fast, dependency-free encoder of serialized ``tf.train.Example`` protos.

Building ``tf.train.Example`` objects field by field in Python dominates a Beam CTR job
(PITFALLS: ~27k examples/s). The wire format is simple, so we write it directly:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      # repeated entries {key=1, value=2}
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  Int64List { repeated int64 value = 1 [packed]; }

A ``Features`` message is the concatenation of its map entries, so entries shared by every
example of a page (user, sequences, page statistics) are encoded once per page and joined with
the per-example entries. ``tests/test_preprocess_tfexample.py`` checks the bytes against
``tf.train.Example`` parsing.
"""
from __future__ import annotations

import functools
from typing import Iterable, Sequence

_VARINT_CACHE = []


def _varint_slow(n: int) -> bytes:
    if n < 0:
        n &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement, 10 bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINT_CACHE = [_varint_slow(i) for i in range(1 << 14)]


_NEG1 = _varint_slow(-1)


def varint(n: int) -> bytes:
    if 0 <= n < 16384:
        return _VARINT_CACHE[n]
    if n == -1:
        return _NEG1
    return _varint_slow(n)


@functools.lru_cache(maxsize=1 << 20)
def bytes_value(s: str) -> bytes:
    """One encoded ``BytesList.value`` element (tag + length + utf-8 bytes) for a string."""
    b = s.encode("utf-8")
    return b"\x0a" + varint(len(b)) + b


PAD_VALUE = bytes_value("")


@functools.lru_cache(maxsize=None)
def _key(name: str) -> bytes:
    """Encoded map-entry key field (tag 1) of a feature name."""
    k = name.encode("utf-8")
    return b"\x0a" + varint(len(k)) + k


def _entry(key: bytes, feature: bytes) -> bytes:
    body = key + b"\x12" + varint(len(feature)) + feature
    return b"\x0a" + varint(len(body)) + body


def bytes_entry_joined(name: str, inner: bytes) -> bytes:
    """Map entry of a bytes feature from the concatenation of encoded values."""
    return _entry(_key(name), b"\x0a" + varint(len(inner)) + inner)


@functools.lru_cache(maxsize=1 << 20)
def scalar_bytes_entry(name: str, value: str) -> bytes:
    """Cached map entry of a one-string feature (ids repeat a lot)."""
    return bytes_entry_joined(name, bytes_value(value))


@functools.lru_cache(maxsize=1 << 16)
def scalar_int64_entry(name: str, value: int) -> bytes:
    return int64_entry(name, [value])


def bytes_entry_encoded(name: str, encoded_values: Iterable[bytes]) -> bytes:
    """Map entry of a bytes feature from already-encoded values (see :func:`bytes_value`)."""
    return bytes_entry_joined(name, b"".join(encoded_values))


def bytes_entry(name: str, values: Sequence[str]) -> bytes:
    return bytes_entry_encoded(name, [bytes_value(v) for v in values])


def int64_entry(name: str, values: Sequence[int]) -> bytes:
    if values:
        packed = b"".join([varint(v) for v in values])
        inner = b"\x0a" + varint(len(packed)) + packed
    else:
        inner = b""
    return _entry(_key(name), b"\x1a" + varint(len(inner)) + inner)


def int64_entry_packed(name: str, packed: bytes) -> bytes:
    """Map entry of an int64 feature from already packed varints (e.g. ``bytes([0, 1])`` for
    0/1 labels, ``varint(-1)`` for -1)."""
    inner = b"\x0a" + varint(len(packed)) + packed if packed else b""
    return _entry(_key(name), b"\x1a" + varint(len(inner)) + inner)


def example(entries: Iterable[bytes]) -> bytes:
    """Serialized ``tf.train.Example`` from encoded map entries."""
    features = b"".join(entries)
    return b"\x0a" + varint(len(features)) + features
