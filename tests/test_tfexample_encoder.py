"""The spec-driven tf.Example encoder (``pipelines.tfexample.SpecEncoder`` / ``encode``): round
trip through ``tf.io.parse_example`` with the ``ctrcore.data`` parse specs, the entry order of
the spec's encoding layout, and errors that name the feature."""
from __future__ import annotations

import pytest

from ctrcore.schema import (ENCODING_SCOPES, EXAMPLE_SCOPE, LABEL_PAD, PAD, PAGE_SCOPE,
                            PROFILE_SCOPE, FeatureDef, FeatureSpec, SpecConfig,
                            build_feature_defs, encoding_layout)
from pipelines import tfexample as tfx

CFG = SpecConfig(short_len=3, long_len=4, max_context=2, user_profile=("gender", "age"))


def spec() -> FeatureSpec:
    return FeatureSpec.create(CFG)


def features() -> dict:
    """One example: lists shorter than their length (the encoder pads them), non-ASCII ids,
    a large and a negative int."""
    return {"user_id": "u1", "user_gender": "F", "user_age": "",
            "item_id": "a", "category_id": "c1", "seller_id": "s1",
            "trigger_item_id": "é" * 70, "trigger_category_id": "", "trigger_seller_id": "",
            "short_item_ids": ["h", "g"], "short_category_ids": ["ch", "cg"],
            "short_seller_ids": ["sh", ""],
            "long_item_ids": ["h", "g", "f", "e"], "long_category_ids": [],
            "long_seller_ids": ["x"],
            "label": 1,
            "context_item_ids": ["b"], "context_category_ids": ["c2"],
            "context_seller_ids": ["s2"], "context_labels": [0],
            "page_num_clicked": 1, "page_num_unclicked": 2 ** 40,
            "page_id": "p1", "timestamp": 1_700_000_000, "history_length": -3}


def padded(sp: FeatureSpec, f: dict) -> dict:
    out = {}
    for name, fd in sp.features.items():
        v = f[name]
        if fd.length is not None:
            v = list(v) + [fd.pad_value] * (fd.length - len(v))
        out[name] = v
    return out


def test_round_trip_through_tf_parsing():
    import tensorflow as tf

    from ctrcore.data import parse_spec

    sp = spec()
    rec = tfx.encode(features(), sp)
    ex = tf.train.Example.FromString(rec)
    assert sorted(ex.features.feature) == sorted(sp.features)
    parsed = tf.io.parse_example([rec, rec], parse_spec(sp))
    want = padded(sp, features())
    for name, fd in sp.features.items():
        got = parsed[name].numpy()[1]
        if fd.dtype == "string":
            got = [g.decode() for g in got] if fd.length is not None else got.decode()
        else:
            got = got.tolist()
        assert got == want[name], name
    # padding values come from the spec
    assert want["context_labels"] == [0, LABEL_PAD] and want["context_item_ids"] == ["b", PAD]


def wire_keys(rec: bytes) -> list:
    """Feature names of a serialized Example in wire order."""
    def varint(b, i):
        n = shift = 0
        while True:
            n |= (b[i] & 0x7F) << shift
            i += 1
            if b[i - 1] < 0x80:
                return n, i
            shift += 7

    assert rec[0] == 0x0A
    n, i = varint(rec, 1)
    end, keys = i + n, []
    while i < end:
        assert rec[i] == 0x0A
        n, i = varint(rec, i + 1)
        entry = rec[i:i + n]
        k, j = varint(entry, 1)
        keys.append(entry[j:j + k].decode())
        i += n
    return keys


def test_entry_order_is_the_encoding_layout_and_parts_join_to_encode():
    sp = spec()
    rec = tfx.encode(features(), sp)
    layout = encoding_layout(CFG)
    assert [s for s, _ in layout] == list(ENCODING_SCOPES)
    assert wire_keys(rec) == [n for _, names in layout for n in names]
    page_names = dict(layout)[PAGE_SCOPE]
    assert page_names[0] == "user_id" and page_names[-1] == "history_length"
    assert dict(layout)[PROFILE_SCOPE] == ["user_gender", "user_age"]
    enc = tfx.SpecEncoder(sp)
    f = features()
    page = {n: f.pop(n) for n in page_names}
    assert enc.join(enc.part(PAGE_SCOPE)(page), enc.part(EXAMPLE_SCOPE, PROFILE_SCOPE)(f)) == rec
    with pytest.raises(ValueError, match="consecutive"):
        enc.part(PAGE_SCOPE, PROFILE_SCOPE)


def test_layout_covers_the_spec_in_spec_order_within_scopes():
    for cfg in (CFG, SpecConfig(), SpecConfig(user_profile=("a",), max_context=1)):
        names = [fd.name for fd in build_feature_defs(cfg)]
        layout = encoding_layout(cfg)
        flat = [n for _, ns in layout for n in ns]
        assert sorted(flat) == sorted(names) and len(flat) == len(names)
        for _, ns in layout:
            assert ns == [n for n in names if n in ns]


@pytest.mark.parametrize("change, feature, match", [
    (lambda f: f.update(user_gendr="F"), "user_gendr", "not in the feature spec"),
    (lambda f: f.pop("context_labels"), "context_labels", "missing"),
    (lambda f: f.update(context_item_ids=["a", "b", "c"]), "context_item_ids",
     "3 values, more than its length 2"),
    (lambda f: f.update(short_seller_ids="abc"), "short_seller_ids", "list of at most .* strings"),
    (lambda f: f.update(label=[1]), "label", "expected one int, got \\[1\\]"),
    (lambda f: f.update(item_id=7), "item_id", "expected one string"),
    (lambda f: f.update(timestamp="1700000000"), "timestamp", "expected one int"),
    (lambda f: f.update(context_labels=[0, "1"]), "context_labels", "int"),
    (lambda f: f.update(long_item_ids=[1, 2]), "long_item_ids",
     "expected a list of strings, got 1 at position 0"),
    (lambda f: f.update(page_num_clicked=None), "page_num_clicked", "expected one int, got None"),
])
def test_errors_name_the_feature(change, feature, match):
    f = features()
    change(f)
    with pytest.raises(tfx.FeatureEncodingError, match=match) as e:
        tfx.encode(f, spec())
    assert e.value.feature == feature and repr(feature) in str(e.value)


def test_spec_out_of_sync_with_its_config_is_refused():
    sp = spec()
    sp.features["extra"] = FeatureDef("extra", "int64", [], "train", None, 0)
    with pytest.raises(ValueError, match="extra"):
        tfx.SpecEncoder(sp)


def test_field_encoders_of_every_dtype_parse_back():
    import tensorflow as tf

    defs = [FeatureDef("f", "float32", [3], "train", None, 0.5),
            FeatureDef("g", "float32", [], "train", None, 0.0),
            FeatureDef("i", "int64", [4], "train", None, LABEL_PAD),
            FeatureDef("s", "string", [2], "train", None, "?")]
    values = {"f": [1.25, -2.0], "g": 3.5, "i": [2 ** 40, -5, 200], "s": ["ü"]}
    rec = tfx.example(tfx.field_encoder(fd)(values[fd.name]) for fd in defs)
    parsed = tf.io.parse_single_example(rec, {
        "f": tf.io.FixedLenFeature([3], tf.float32), "g": tf.io.FixedLenFeature([], tf.float32),
        "i": tf.io.FixedLenFeature([4], tf.int64), "s": tf.io.FixedLenFeature([2], tf.string)})
    assert parsed["f"].numpy().tolist() == [1.25, -2.0, 0.5]
    assert parsed["g"].numpy() == 3.5
    assert parsed["i"].numpy().tolist() == [2 ** 40, -5, 200, -1]
    assert [v.decode() for v in parsed["s"].numpy()] == ["ü", "?"]
    with pytest.raises(tfx.FeatureEncodingError, match="'x'.*unsupported dtype"):
        tfx.field_encoder(FeatureDef("x", "bool", [], "train"))


def test_bytes_equal_the_low_level_helpers():
    """The spec encoder writes the same entries as the helpers the old encoder used."""
    sp = spec()
    f = features()
    enc = tfx.SpecEncoder(sp)
    layout = [n for _, ns in enc.layout for n in ns]
    entries = []
    for name in layout:
        fd, v = sp.features[name], padded(sp, f)[name]
        if fd.dtype == "string":
            entries.append(tfx.bytes_entry(name, [v] if fd.length is None else v))
        else:
            entries.append(tfx.int64_entry(name, [v] if fd.length is None else v))
    assert enc.encode(f) == tfx.example(entries)
