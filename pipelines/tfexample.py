"""A fast encoder of serialized ``tf.train.Example`` protos (no protobuf, no TensorFlow).

Building ``tf.train.Example`` objects field by field in Python dominates a Beam CTR job
(PITFALLS: ~27k examples/s). The wire format is simple, so we write it directly:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      # repeated entries {key=1, value=2}
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  Int64List { repeated int64 value = 1 [packed]; }

A ``Features`` message is the concatenation of its map entries, so entries shared by every
example of a page (user, sequences, page statistics) are encoded once per page and joined with
the per-example entries.

:class:`SpecEncoder` (and :func:`encode`) is the spec-driven encoder: it serializes a plain
feature dict (``{name: str | int | list}``) by iterating the ``FeatureSpec``'s features - their
names, dtypes, lengths and padding values - in the spec's encoding layout
(:func:`ctrcore.schema.encoding_layout`); no feature name is written here. A dict key not in
the spec, a spec feature missing from the dict, a list longer than its feature's length, a list
for a scalar or a value of the wrong type raises :class:`FeatureEncodingError` naming the
feature. ``tests/test_preprocess_units.py`` and ``tests/test_tfexample_encoder.py`` check the
bytes against ``tf.train.Example`` parsing.
"""
from __future__ import annotations

import collections.abc
import functools
import operator
import struct
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ctrcore.schema import FeatureDef, FeatureSpec


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


class _EncodedStrings(dict):
    """str -> its encoded ``BytesList.value`` element; a plain dict (a C lookup per hit, the
    encoder's hottest operation), emptied when it reaches ``limit`` entries (bounded memory)."""

    limit = 1 << 20

    def __missing__(self, s: str) -> bytes:
        b = s.encode("utf-8")
        v = b"\x0a" + varint(len(b)) + b
        if len(self) >= self.limit:
            self.clear()
        self[s] = v
        return v


_STRINGS = _EncodedStrings()
_encoded_string = _STRINGS.__getitem__


def bytes_value(s: str) -> bytes:
    """One encoded ``BytesList.value`` element (tag + length + utf-8 bytes) for a string."""
    return _encoded_string(s)


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


def example(entries: Iterable[bytes]) -> bytes:
    """Serialized ``tf.train.Example`` from encoded map entries."""
    features = b"".join(entries)
    return b"\x0a" + varint(len(features)) + features


# ---------------------------------------------------------------------------------------------
# spec-driven encoding
# ---------------------------------------------------------------------------------------------
class FeatureEncodingError(ValueError):
    """A feature dict that does not fit the feature spec; ``feature`` names the feature."""

    def __init__(self, feature: str, message: str):
        super().__init__(f"feature {feature!r}: {message}")
        self.feature = feature


_NVARINT = len(_VARINT_CACHE)


def _list_entry(key_tag: bytes, kind_tag: bytes, inner: bytes) -> bytes:
    """Map entry ``{key, Feature{<kind_tag> list message}}`` from ``key_tag`` (the encoded key
    field and the value field's tag, :func:`_key` + ``b"\\x12"``) and the list message's
    encoded fields ``inner`` (one copy of ``inner``; the cached varints inlined: hot path)."""
    vc = _VARINT_CACHE
    m = len(inner)
    h_inner = vc[m] if m < _NVARINT else varint(m)
    m += 1 + len(h_inner)
    h_feature = vc[m] if m < _NVARINT else varint(m)
    m += len(key_tag) + len(h_feature)
    return b"".join((b"\x0a", vc[m] if m < _NVARINT else varint(m), key_tag, h_feature,
                     kind_tag, h_inner, inner))


def _check_list(values, length: int, what: str) -> None:
    """Raise the ``TypeError`` of a list feature's value that is not a list of at most
    ``length`` values (the encoders call it only when a cheap test fails)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, collections.abc.Sized):
        raise TypeError(f"expected a list of {what}, got {values!r}")
    if len(values) > length:
        raise TypeError(f"{len(values)} values, more than its length {length}")


_STR_TYPES = (str, bytes)


class Subsequence(collections.abc.Sequence):
    """A read-only view of the tuple ``base`` at some of its positions: every position but
    ``skip`` (``picks is None``), or the positions ``picks`` in that order (a ``range``, e.g.
    a reversed window, or a list).

    A list feature's value may be one (it is a sequence of ``base``'s values like any other).
    The encoder then encodes ``base``'s values once - it keeps the encoding of the last
    ``base`` it saw (by identity; a tuple cannot change) - and joins slices of it: the views
    of one page's columns for each of the page's n targets cost n encoded slices instead of
    n^2 encodings of single values, and the history windows of a user's pages one encoding of
    the user's clicks."""

    __slots__ = ("base", "skip", "picks", "n")

    def __init__(self, base: tuple, skip: int = -1, picks: Optional[Sequence[int]] = None):
        if type(base) is not tuple:
            raise TypeError(f"Subsequence base must be a tuple, got {type(base).__name__}")
        self.base, self.skip, self.picks = base, skip, picks
        if picks is None:
            if not 0 <= skip < len(base):
                raise IndexError(f"skip={skip} is not a position of a {len(base)}-tuple")
            self.n = len(base) - 1
        else:
            self.n = n = len(picks)
            if n and picks.__class__ is range and not (0 <= picks[0] < len(base)
                                                      and 0 <= picks[-1] < len(base)):
                raise IndexError(f"{picks} is not within a {len(base)}-tuple")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[k] for k in range(*j.indices(self.n))]
        if j < 0:
            j += self.n
        if not 0 <= j < self.n:
            raise IndexError(j)
        if self.picks is not None:
            return self.base[self.picks[j]]
        return self.base[j + 1 if j >= self.skip else j]

    def __eq__(self, other) -> bool:
        return isinstance(other, collections.abc.Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Subsequence({list(self)!r})"


def _range_slice(picks: range, n: int) -> slice:
    """The slice taking the ``n`` (> 0) positions of ``picks`` (within bounds) in order."""
    stop = picks.start + picks.step * n
    return slice(picks.start, stop if stop >= 0 else None, picks.step)


def _base_encoding(memo: list, base: tuple, encode_all: Callable[[tuple], Any]):
    """The encoding of a :class:`Subsequence`'s ``base`` by ``encode_all``, kept in the
    one-cell ``memo`` ``[(base, encoding)]`` of an encoder and redone when another base comes
    (a tuple cannot change, so identity is enough)."""
    cell = memo[0]
    if cell[0] is not base:
        cell = memo[0] = (base, encode_all(base))
    return cell[1]


def _view_encoding(values: "Subsequence", length: int, what: str, memo: list,
                   encode_all: Callable[[tuple], Any]):
    """``(n, encoding of the base, picks)`` of a :class:`Subsequence` value of a list feature
    of ``length`` values (a longer one raises, see :func:`_check_list`)."""
    n = values.n
    if n > length:
        _check_list(values, length, what)
    return n, _base_encoding(memo, values.base, encode_all), values.picks


def _string_list(key: bytes, length: int, pad) -> Callable[[Sequence[str]], bytes]:
    """Encoder of a string list feature's map entry (hot path: everything inlined)."""
    pads = [bytes_value(pad) * k for k in range(length + 1)]
    get, join, vc, nv = _encoded_string, b"".join, _VARINT_CACHE, _NVARINT
    key_tag = key + b"\x12"
    memo = [((), [])]  # (base, its encoded values) of the last Subsequence: one atomic cell

    def encode_all(base: tuple) -> list:
        return list(map(get, base))

    def enc(values: Sequence[str]) -> bytes:
        if values.__class__ is Subsequence:
            n, encoded, picks = _view_encoding(values, length, "strings", memo, encode_all)
            if picks is None:
                k = values.skip
                inner = join(encoded[:k]) + join(encoded[k + 1:])
            elif picks.__class__ is range:
                inner = join(encoded[_range_slice(picks, n)]) if n else b""
            else:
                inner = join(map(encoded.__getitem__, picks))
        else:
            n = len(values)
            if n > length or isinstance(values, _STR_TYPES):
                _check_list(values, length, "strings")
            inner = join(map(get, values))  # BytesList: repeated bytes value = 1
        pad = pads[length - n]
        m = len(inner) + len(pad)
        h_list = vc[m] if m < nv else varint(m)
        m += 1 + len(h_list)  # Feature: bytes_list = 1
        h_feature = vc[m] if m < nv else varint(m)
        m += len(key_tag) + len(h_feature)
        return join((b"\x0a", vc[m] if m < nv else varint(m), key_tag, h_feature, b"\x0a",
                     h_list, inner, pad))
    return enc


def _packed_varints(values: Sequence[int]) -> bytes:
    """Packed varints of int values (``bytes`` when all are in [0, 128))."""
    try:
        packed = bytes(values)  # ints in [0, 128) are their own one-byte varints
        if packed.isascii():
            return packed
    except (TypeError, ValueError):
        pass
    for v in values:
        if not isinstance(v, int):
            raise TypeError(f"expected int values, got {v!r}")
    return b"".join(map(varint, values))


def _each_varint(values: Sequence[int]):
    """The varints of int values, indexable per value: ``bytes`` (one byte each) when all are
    in [0, 128), else a list of varints."""
    packed = _packed_varints(values)
    return packed if len(packed) == len(values) else list(map(varint, values))


def _int64_list(key: bytes, length: int, pad) -> Callable[[Sequence[int]], bytes]:
    """Encoder of an int64 list feature's map entry (hot path: everything inlined)."""
    pads = [varint(pad) * k for k in range(length + 1)]
    join, vc, nv = b"".join, _VARINT_CACHE, _NVARINT
    key_tag = key + b"\x12"
    memo = [((), b"")]  # (base, _each_varint(base)) of the last Subsequence

    def enc(values: Sequence[int]) -> bytes:
        if values.__class__ is Subsequence:
            n, each, picks = _view_encoding(values, length, "ints", memo, _each_varint)
            one_byte = each.__class__ is bytes
            if picks is None:
                k = values.skip
                packed = (each[:k] + each[k + 1:] if one_byte
                          else join(each[:k]) + join(each[k + 1:]))
            elif picks.__class__ is range:
                packed = each[_range_slice(picks, n)] if n else b""
                if not one_byte:
                    packed = join(packed)
            else:
                picked = map(each.__getitem__, picks)
                packed = bytes(picked) if one_byte else join(picked)
        else:
            n = len(values)
            if n > length or isinstance(values, _STR_TYPES):
                _check_list(values, length, "ints")
            try:
                packed = bytes(values)  # ints in [0, 128) are their own one-byte varints
                if not packed.isascii():
                    packed = _packed_varints(values)
            except (TypeError, ValueError):
                packed = _packed_varints(values)
        pad = pads[length - n]
        m = len(packed) + len(pad)
        if not m:  # Feature{int64_list{}}
            return join((b"\x0a", varint(len(key_tag) + 3), key_tag, b"\x02\x1a\x00"))
        h_packed = vc[m] if m < nv else varint(m)
        m += 1 + len(h_packed)  # Int64List: repeated int64 value = 1 [packed]
        h_list = vc[m] if m < nv else varint(m)
        m += 1 + len(h_list)  # Feature: int64_list = 3
        h_feature = vc[m] if m < nv else varint(m)
        m += len(key_tag) + len(h_feature)
        return join((b"\x0a", vc[m] if m < nv else varint(m), key_tag, h_feature, b"\x1a",
                     h_list, b"\x0a", h_packed, packed, pad))
    return enc


def _float_list(key: bytes, length: int, pad) -> Callable[[Sequence[float]], bytes]:
    key_tag = key + b"\x12"

    def enc(values: Sequence[float]) -> bytes:
        _check_list(values, length, "floats")
        n = len(values)
        packed = struct.pack(f"<{length}f", *values, *[pad] * (length - n))  # packed fixed32
        return _list_entry(key_tag, b"\x12", b"\x0a" + varint(len(packed)) + packed
                           if packed else b"")
    return enc


def _float_scalar(key: bytes, pad) -> Callable[[float], bytes]:
    one = _float_list(key, 1, pad)

    def enc(value: float) -> bytes:
        if not isinstance(value, (int, float)):
            raise TypeError(f"expected one float, got {value!r}")
        return one((value,))
    return enc


class _ScalarEntries(dict):
    """value -> map entry of the scalar feature ``name``: a dict (a hit is a C lookup, no
    Python frame), emptied when it reaches ``limit`` entries. A value of the wrong type fails
    in :meth:`__missing__`, except an int64 value equal to an int already cached (``True``,
    ``1.0``), which is taken as that int."""

    limit = 1 << 17

    def __init__(self, name: str, dtype: str):
        super().__init__()
        self.name, self.dtype = name, dtype

    def __missing__(self, value) -> bytes:
        if self.dtype == "string":
            if not isinstance(value, str):
                raise TypeError(f"expected one string, got {value!r}")
            entry = bytes_entry_joined(self.name, bytes_value(value))
        else:
            if not isinstance(value, int):
                raise TypeError(f"expected one int, got {value!r}")
            entry = int64_entry(self.name, [value])
        if len(self) >= self.limit:
            self.clear()
        self[value] = entry
        return entry


_LIST_ENCODERS = {"string": _string_list, "int64": _int64_list, "float32": _float_list}


def field_encoder(fd: FeatureDef) -> Callable[[Any], bytes]:
    """``value -> encoded map entry`` of feature ``fd``, from its name, dtype, length and
    padding value: a scalar feature (``shape == []``) takes one value, a list feature
    (``shape == [n]``) at most ``n`` values - a sequence, or a :class:`Subsequence` - padded
    to ``n`` with ``fd.pad_value``. Raises ``TypeError`` on a bad value
    (:class:`EntriesEncoder` names the feature)."""
    if fd.dtype not in _LIST_ENCODERS:
        raise FeatureEncodingError(fd.name, f"unsupported dtype {fd.dtype!r}")
    if fd.length is not None:
        return _LIST_ENCODERS[fd.dtype](_key(fd.name), fd.length, fd.pad_value)
    if fd.dtype == "float32":
        return _float_scalar(_key(fd.name), fd.pad_value)
    return _ScalarEntries(fd.name, fd.dtype).__getitem__  # ids, labels repeat: cached entries


_PY_TYPES = {"string": (str,), "int64": (int,), "float32": (int, float)}
_TYPE_WORDS = {"string": "string", "int64": "int", "float32": "float"}


def value_problem(fd: FeatureDef, value) -> str:
    """Why ``value`` does not fit feature ``fd`` ('' when it does): the message an encoding
    error gives (the encoders' fast paths fail with whatever Python raises)."""
    types, word = _PY_TYPES.get(fd.dtype, ()), _TYPE_WORDS.get(fd.dtype, fd.dtype)
    if fd.length is None:
        if isinstance(value, bool) and fd.dtype != "int64" or not isinstance(value, types):
            return f"expected one {word}, got {value!r}"
        return ""
    if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Sized):
        return f"expected a list of at most {fd.length} {word}s, got {value!r}"
    if len(value) > fd.length:
        return f"{len(value)} values, more than its length {fd.length}"
    for k, v in enumerate(value):
        if not isinstance(v, types):
            return f"expected a list of {word}s, got {v!r} at position {k}"
    return ""


class EntriesEncoder:
    """Encodes the features ``names`` (a part of a spec's layout) of a feature dict into
    concatenated map entries; ``features`` must hold exactly these names."""

    def __init__(self, spec: FeatureSpec, names: Sequence[str]):
        self.names: Tuple[str, ...] = tuple(names)
        self._keys = frozenset(self.names)
        self._n = len(self.names)
        self._defs = tuple(spec.features[n] for n in self.names)
        self._encoders = tuple(map(field_encoder, self._defs))
        getter = operator.itemgetter(*self.names) if self.names else (lambda d: ())
        # itemgetter of one name returns the value, not a tuple
        self._values = (lambda d: (getter(d),)) if len(self.names) == 1 else getter

    def encode(self, features: Mapping[str, Any]) -> bytes:
        """The concatenated map entries of ``features`` (exactly this part's names)."""
        # every name present (else KeyError) and as many keys as names: exactly the names
        try:
            values = self._values(features)
        except KeyError:
            values = None
        if values is None or len(features) != self._n:
            self._raise_keys(features)
        try:
            return b"".join(map(operator.call, self._encoders, values))
        except Exception:
            self._raise_value(features)
            raise

    __call__ = encode

    def _raise_keys(self, features: Mapping[str, Any]) -> None:
        extra = sorted(set(features) - self._keys)
        if extra:
            raise FeatureEncodingError(extra[0], f"not in the feature spec ({len(extra)} such: "
                                                 f"{extra}; expected {list(self.names)})")
        missing = [n for n in self.names if n not in features]
        raise FeatureEncodingError(missing[0], f"missing from the feature dict ({len(missing)} "
                                               f"missing: {missing})")

    def _raise_value(self, features: Mapping[str, Any]) -> None:
        for name, enc, fd in zip(self.names, self._encoders, self._defs):
            problem = value_problem(fd, features[name])
            if problem:
                raise FeatureEncodingError(name, problem)
            try:
                enc(features[name])
            except Exception as e:
                raise FeatureEncodingError(name, f"{type(e).__name__}: {e}") from e


class SpecEncoder:
    """Serializes feature dicts into ``tf.train.Example`` bytes as the ``FeatureSpec`` says:
    feature names, dtypes, lengths and padding values from its definitions, the entry order
    from its encoding layout (:meth:`ctrcore.schema.FeatureSpec.encoding_layout`).

    :meth:`encode` takes one dict of every feature. A job that builds many examples sharing
    features encodes the scopes apart (:meth:`part`) and joins them (:meth:`join`): e.g. the
    page-scope entries once per page."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.layout: List[Tuple[str, List[str]]] = spec.encoding_layout()
        self.scopes: Tuple[str, ...] = tuple(scope for scope, _ in self.layout)
        self._all = EntriesEncoder(spec, [n for _, names in self.layout for n in names])
        self._parts: Dict[Tuple[str, ...], EntriesEncoder] = {}

    def encode(self, features: Mapping[str, Any]) -> bytes:
        """The serialized example of ``features`` (exactly the spec's features)."""
        return example((self._all(features),))

    def part(self, *scopes: str) -> EntriesEncoder:
        """The encoder of the features of consecutive ``scopes`` of the layout (in layout
        order); parts of every scope, joined in layout order, make an example."""
        k = self.scopes.index(scopes[0]) if scopes and scopes[0] in self.scopes else -1
        if k < 0 or self.scopes[k:k + len(scopes)] != tuple(scopes):
            raise ValueError(f"scopes {scopes} are not consecutive scopes of {self.scopes}")
        if scopes not in self._parts:
            layout = dict(self.layout)
            self._parts[scopes] = EntriesEncoder(
                self.spec, [n for scope in scopes for n in layout[scope]])
        return self._parts[scopes]

    @staticmethod
    def join(*entries: bytes) -> bytes:
        """The serialized example of the entries of parts covering the layout, in order."""
        features = b"".join(entries)
        m = len(features)
        return b"\x0a" + (_VARINT_CACHE[m] if m < _NVARINT else varint(m)) + features


def encode(features: Mapping[str, Any], spec: FeatureSpec) -> bytes:
    """Serialized ``tf.train.Example`` of a plain feature dict, as ``spec`` defines it (see
    :class:`SpecEncoder`; building many examples, keep one ``SpecEncoder``)."""
    return SpecEncoder(spec).encode(features)
