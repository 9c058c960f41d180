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
