"""Unit tests of pipelines.canonical.canonicalize (type coercion and dead-letter reasons)."""
from __future__ import annotations

import pytest

from pipelines.canonical import canonicalize, origin_key, parse_timestamp
from pipelines.sources.base import DeadLetter


def raw(**kw):
    d = dict(page_id="p", user_id="u", item_id="i", clicked="1", timestamp="100",
             _origin="f.csv:7")
    d.update(kw)
    return {k: v for k, v in d.items() if v is not None}


def test_coerces_types_and_defaults():
    r = canonicalize(raw(position="3", category_id=" c ", user_age=25, item_id=12.0),
                     timestamp_format="unix")
    assert r["clicked"] == 1 and r["timestamp"] == 100 and r["position"] == 3
    assert r["item_id"] == "12" and r["category_id"] == "c" and r["user_age"] == "25"
    assert r["seller_id"] == "" and r["trigger_item_id"] == "" and r["is_history"] == 0
    assert canonicalize(raw(), timestamp_format="unix")["position"] == -1
    assert r["_origin"] == "f.csv:7"


@pytest.mark.parametrize("kw,reason,field", [
    (dict(user_id=None), "missing_field", "user_id"),
    (dict(item_id="  "), "empty_field", "item_id"),
    (dict(position="first"), "mistyped_field", "position"),
    (dict(is_history="2"), "mistyped_field", "is_history"),
    (dict(timestamp="noon"), "unparsable_timestamp", "timestamp"),
    (dict(clicked="2"), "unknown_label", "clicked"),
    (dict(clicked="yes"), "unknown_label", "clicked"),
])
def test_dead_letter_reasons(kw, reason, field):
    d = canonicalize(raw(**kw), timestamp_format="unix")
    assert isinstance(d, DeadLetter)
    assert d.reason == reason and d.origin == "f.csv:7"
    assert "f.csv:7" in d.detail and repr(field) in d.detail
    assert d.raw["page_id"] == "p"  # the original row is kept


def test_raw_is_kept_verbatim():
    r = raw(timestamp="bad")
    r["_raw"] = "p,u,i,1,bad"
    assert canonicalize(r, timestamp_format="unix").raw == "p,u,i,1,bad"


def test_timestamp_formats():
    assert parse_timestamp("1700000000123", "unix_ms") == 1700000000
    assert parse_timestamp("1700000000.5", "unix") == 1700000000
    assert parse_timestamp("1970-01-02 00:00:00", "%Y-%m-%d %H:%M:%S") == 86400
    d = canonicalize(raw(timestamp="2020/01/01"), timestamp_format="%Y-%m-%d")
    assert d.reason == "unparsable_timestamp" and "'%Y-%m-%d'" in d.detail
    # ISO 8601: 'T' or ' ', 'Z' or an offset (honoured), fractions, a date alone; naive = UTC
    assert parse_timestamp("1970-01-02T00:00:00Z", "iso") == 86400
    assert parse_timestamp(" 1970-01-02 08:00:00.75+08:00 ", "iso") == 86400
    assert parse_timestamp("1970-01-02", "iso") == 86400
    d = canonicalize(raw(timestamp="02/01/1970"), timestamp_format="iso")
    assert d.reason == "unparsable_timestamp" and "'iso'" in d.detail


def test_label_values_mapping():
    lv = {"click": 1, "view": 0}
    assert canonicalize(raw(clicked="view"), timestamp_format="unix", label_values=lv)["clicked"] == 0
    assert canonicalize(raw(clicked="1"), timestamp_format="unix", label_values=lv).reason == "unknown_label"
    assert canonicalize(raw(clicked=True), timestamp_format="unix")["clicked"] == 1


def test_history_and_positives_only():
    h = canonicalize(raw(page_id="", clicked=None, is_history="1"), timestamp_format="unix")
    assert h["is_history"] == 1 and h["clicked"] == 1 and h["page_id"] == ""
    p = canonicalize(raw(page_id=None, clicked=None), timestamp_format="unix", positives_only=True)
    assert p["page_id"] == "u@100" and p["clicked"] == 1
    assert canonicalize(raw(page_id=""), timestamp_format="unix").reason == "empty_field"


def test_origin_key_orders_line_numbers_numerically():
    assert sorted(["gs://b/f:10", "gs://b/f:9", "a:100"], key=origin_key) == [
        "a:100", "gs://b/f:9", "gs://b/f:10"]


# ---------------------------------------------------------------------------------------------
# control characters in string ids
# ---------------------------------------------------------------------------------------------
ID_FIELDS = ("page_id", "user_id", "item_id", "trigger_item_id", "category_id", "seller_id",
             "user_gender")


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("value", ["a\x00b", "\x00", "a\tb", "a\x1bb", "a\x7fb", "a\x85b",
                                   "a\x9fb", " a\x00 "])
def test_control_character_in_an_id_is_a_dead_letter(field, value):
    d = canonicalize(raw(**{field: value}), timestamp_format="unix")
    assert isinstance(d, DeadLetter), d
    assert d.reason == "control_character" and d.origin == "f.csv:7"
    assert "f.csv:7" in d.detail and f"field {field!r}" in d.detail
    assert repr(value) in d.detail  # the value, escaped
    assert "\x00" not in d.detail and "\t" not in d.detail  # nothing unescaped in the detail
    assert d.raw[field] == value  # the original row is kept


def test_control_character_positives_only_and_history_rows():
    d = canonicalize(raw(page_id=None, clicked=None, item_id="i\x00"), timestamp_format="unix",
                     positives_only=True)
    assert d.reason == "control_character" and "'item_id'" in d.detail
    d = canonicalize(raw(page_id="", is_history="1", user_id="u\x01"), timestamp_format="unix")
    assert d.reason == "control_character" and "'user_id'" in d.detail


@pytest.mark.parametrize("value,want", [
    (" a\t", "a"),            # surrounding whitespace (a tab included) is stripped first
    ("\tb\r\n", "b"),
    ("über-Größe", "über-Größe"),
    ("用户 7", "用户 7"),       # inner spaces and non-ASCII letters are fine
    ("a\u200bb", "a\u200bb"),  # zero-width space is a format character (Cf), not a control
])
def test_ids_without_control_characters_are_accepted(value, want):
    r = canonicalize(raw(item_id=value, seller_id=value, user_age=value), timestamp_format="unix")
    assert not isinstance(r, DeadLetter), r
    assert r["item_id"] == r["seller_id"] == r["user_age"] == want


def test_every_cc_character_is_refused_and_nothing_else_in_latin1():
    import unicodedata

    for cp in range(0x100):
        ch = chr(cp)
        r = canonicalize(raw(item_id=f"a{ch}b"), timestamp_format="unix")
        is_cc = unicodedata.category(ch) == "Cc"
        assert isinstance(r, DeadLetter) == is_cc, (hex(cp), r)
        if is_cc:
            assert r.reason == "control_character"


# ---------------------------------------------------------------------------------------------
# timestamp range
# ---------------------------------------------------------------------------------------------
from pipelines.sources.base import DEFAULT_TIMESTAMP_RANGE, Source  # noqa: E402


def test_default_timestamp_range_is_1970_to_2100():
    import datetime

    lo, hi = DEFAULT_TIMESTAMP_RANGE
    utc = datetime.timezone.utc
    assert lo == 0 and hi == int(datetime.datetime(2100, 1, 1, tzinfo=utc).timestamp())
    assert Source().canonical_kwargs()["timestamp_range"] == DEFAULT_TIMESTAMP_RANGE


@pytest.mark.parametrize("ts,fmt", [
    ("99999999999999999999", "unix"),       # a year in the trillions
    ("1700000000123", "unix"),              # unix_ms given as unix seconds
    ("1700000000123000", "unix_ms"),        # microseconds given as milliseconds
    ("-1", "unix"),                         # before 1970
    ("4102444800", "unix"),                 # 2100-01-01: max is excluded
    ("1e30", "unix"),
    ("2100-01-01 00:00:00", "%Y-%m-%d %H:%M:%S"),
    ("1969-12-31", "%Y-%m-%d"),
])
def test_timestamp_out_of_range_is_a_dead_letter(ts, fmt):
    d = canonicalize(raw(timestamp=ts), timestamp_format=fmt)
    assert isinstance(d, DeadLetter), d
    assert d.reason == "timestamp_out_of_range" and d.origin == "f.csv:7"
    assert "field 'timestamp'" in d.detail and repr(ts) in d.detail
    assert "[0, 4102444800)" in d.detail  # the range it was checked against


@pytest.mark.parametrize("ts,fmt,want", [
    ("0", "unix", 0),
    ("4102444799", "unix", 4102444799),
    ("1700000000123", "unix_ms", 1700000000),
    ("2019-11-09 00:00:00", "%Y-%m-%d %H:%M:%S", 1573257600),
])
def test_timestamps_in_the_default_range_are_accepted(ts, fmt, want):
    assert canonicalize(raw(timestamp=ts), timestamp_format=fmt)["timestamp"] == want


def test_timestamp_range_argument_and_none():
    kw = dict(timestamp_format="unix", timestamp_range=(1000, 2000))
    assert canonicalize(raw(timestamp="1000"), **kw)["timestamp"] == 1000
    for ts in ("999", "2000"):
        d = canonicalize(raw(timestamp=ts), **kw)
        assert d.reason == "timestamp_out_of_range" and "[1000, 2000)" in d.detail
    big = "99999999999999999999"
    assert canonicalize(raw(timestamp=big), timestamp_format="unix",
                        timestamp_range=None)["timestamp"] == int(big)
    # an unparsable timestamp stays unparsable_timestamp
    assert canonicalize(raw(timestamp="x"), **kw).reason == "unparsable_timestamp"


def test_source_timestamp_range_goes_through_canonical_kwargs():
    class S(Source):
        timestamp_range = (10, 20)

    kw = S().canonical_kwargs()
    assert kw["timestamp_range"] == (10, 20)
    assert canonicalize(raw(timestamp="100"), **kw).reason == "timestamp_out_of_range"
    assert canonicalize(raw(timestamp="15"), **kw)["timestamp"] == 15


def _generic(tmp_path, **mapping):
    from pipelines.sources import get_source

    p = tmp_path / "log.csv"
    p.write_text("page,user,item,click,ts\np1,u1,i1,1,100\np1,u1,i2,0,5000000000\n")
    m = {"columns": {"page_id": "page", "user_id": "user", "item_id": "item",
                     "clicked": "click", "timestamp": "ts"}}
    m.update(mapping)
    return get_source("generic", str(p), mapping=m)


def test_generic_mapping_timestamp_range(tmp_path):
    from pipelines.sources.generic import MappingError

    src = _generic(tmp_path)
    assert src.canonical_kwargs()["timestamp_range"] == DEFAULT_TIMESTAMP_RANGE
    rows = [canonicalize(r, **src.canonical_kwargs()) for r in src.read()]
    assert not isinstance(rows[0], DeadLetter)
    assert rows[1].reason == "timestamp_out_of_range" and rows[1].origin.endswith(":3")
    src = _generic(tmp_path, timestamp_range=["1990-01-01", "2030-01-01T00:00:00Z"])
    assert src.canonical_kwargs()["timestamp_range"] == (631152000, 1893456000)
    src = _generic(tmp_path, timestamp_range=[50, 6e9])
    assert src.canonical_kwargs()["timestamp_range"] == (50, 6000000000)
    assert all(not isinstance(canonicalize(r, **src.canonical_kwargs()), DeadLetter)
               for r in src.read())
    src = _generic(tmp_path, timestamp_range=None)
    assert src.canonical_kwargs()["timestamp_range"] is None
    for bad, msg in [([1], "must be \\[min, max\\]"), ("1990", "must be \\[min, max\\]"),
                     ([0, "soon"], "'soon' is neither"), ([True, 5], "True is neither"),
                     ([5, 5], "min must be before max"),
                     (["2030-01-01", "1990-01-01"], "min must be before max")]:
        with pytest.raises(MappingError, match=msg):
            _generic(tmp_path, timestamp_range=bad)


def test_default_range_accepts_the_builtin_sources(tmp_path):
    """synthetic (whole log), amazon_beauty (relative per-user clock from 0) and MIND (history
    rows synthesized just before its first impression): no row out of range."""
    import itertools
    import pathlib

    from pipelines import synthetic
    from pipelines.sources import get_source

    path = tmp_path / "syn.csv"
    synthetic.write(synthetic.generate(2000, seed=0), str(path))
    data = pathlib.Path("/work/shared/data")
    cases = [("synthetic", str(path), None)]
    for name, sub in (("amazon_beauty", "amazon_beauty_5core"), ("mind", "mind_small_sample")):
        if (data / sub).is_dir():
            cases.append((name, str(data / sub), 3000))
    for name, inp, n in cases:
        src = get_source(name, inp)
        kw = src.canonical_kwargs()
        assert kw["timestamp_range"] == DEFAULT_TIMESTAMP_RANGE
        rows = [canonicalize(r, **kw) for r in itertools.islice(src.read(), n)]
        bad = [r for r in rows if isinstance(r, DeadLetter)]
        assert rows and not bad, (name, bad[:3])
        if name == "amazon_beauty":
            assert min(r["timestamp"] for r in rows) == 0
        if name == "mind":
            hist = [r["timestamp"] for r in rows if r["is_history"]]
            assert hist and min(hist) < 1573257600  # before 2019-11-09 00:00 UTC
