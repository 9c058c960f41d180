"""List-shaped logs through the generic source (issue 12 section 4; docs/mapping.md
"List-shaped logs"): unit tests of every expansion form (pipelines/sources/lists.py), the
``duplicate_history`` rule of pipelines/pages.py, mapping validation, and two worked examples -
a MIND ``behaviors.tsv``-format file and an EB-NeRD-style behaviors/history Parquet directory -
whose preprocessing output must equal that of the same log flattened by hand."""
from __future__ import annotations

import collections
import datetime
import json
import re

import pytest

from pipelines import preprocess as P
from pipelines.canonical import canonicalize
from pipelines.pages import organize_user
from pipelines.sources.base import DeadLetter
from pipelines.sources.generic import GenericSource, MappingError, load_mapping
from pipelines.sources.lists import ExposureSpec, HistorySpec, expand_record, split_list
from tests.test_preprocess_util import dead_letters, split_records

MIND_FMT = "%m/%d/%Y %I:%M:%S %p"


def _rows(items):
    return [i for i in items if not isinstance(i, DeadLetter)]


def _dead(items):
    return [i for i in items if isinstance(i, DeadLetter)]


# ---------------------------------------------------------------------------------------------
# split_list
# ---------------------------------------------------------------------------------------------
def test_split_list_forms():
    assert split_list(None) is None
    assert split_list("a  b\tc ") == ["a", "b", "c"]  # null separator = any whitespace
    assert split_list("a| b ||c|", "|") == ["a", "b", "c"]  # stripped, empty pieces skipped
    assert split_list("") == []
    assert split_list([1, 2]) == [1, 2] and split_list((1,)) == [1]
    assert split_list(7) == [7]  # a scalar is a one-element list


# ---------------------------------------------------------------------------------------------
# Token column (MIND): item-label pairs, history with a constant timestamp, trigger
# ---------------------------------------------------------------------------------------------
MIND_SCALARS = {"page_id": "0", "user_id": "1", "timestamp": "2"}


def test_tokens_with_history_exact_rows():
    rec = {"0": "7", "1": "U1", "2": "T", "3": "N9 N8", "4": "N1-1 N2-0 N3 -1 N4-x a-b-0"}
    out = list(expand_record(
        "f.tsv:3", rec, scalars=MIND_SCALARS, constants={"seller_id": "s"},
        exposures=ExposureSpec(tokens="4", trigger_from_history=True),
        history=HistorySpec(items="3", timestamp="T0")))
    hist = dict(page_id="", user_id="U1", clicked=1, is_history=1, seller_id="s")
    page = dict(page_id="7", user_id="U1", timestamp="T", seller_id="s",
                trigger_item_id="N8", is_history=0)
    base_raw = {"0": "7", "1": "U1", "2": "T"}
    assert out[:2] == [
        {**hist, "item_id": "N9", "timestamp": "T0", "_origin": "f.tsv:3#0",
         "_raw": {"1": "U1", "3": "N9", "index": 0}},
        {**hist, "item_id": "N8", "timestamp": "T0", "_origin": "f.tsv:3#1",
         "_raw": {"1": "U1", "3": "N8", "index": 1}},
    ]
    assert out[2] == {**page, "item_id": "N1", "clicked": "1", "position": 0,
                      "_origin": "f.tsv:3#2", "_raw": {**base_raw, "4": "N1-1", "index": 0}}
    assert out[3]["item_id"] == "N2" and out[3]["clicked"] == "0" and out[3]["position"] == 1
    # "N3" (no separator) and "-1" (empty item id) are dead letters; the rest is used
    d1, d2 = out[4], out[5]
    assert isinstance(d1, DeadLetter) and isinstance(d2, DeadLetter)
    assert (d1.reason, d1.origin) == ("bad_list_token", "f.tsv:3#4")
    assert d1.detail == ("f.tsv:3#4: field 'exposures.tokens' (column '4') token #2 'N3' is not "
                         "'<item>-<label>'; the record's other tokens are used")
    assert d1.raw == {**base_raw, "4": "N3", "index": 2}
    assert d2.reason == "bad_list_token" and "token #3 '-1'" in d2.detail
    # a bad label is not this module's business: canonical.py dead-letters it (unknown_label)
    assert (out[6]["item_id"], out[6]["clicked"], out[6]["position"]) == ("N4", "x", 4)
    assert (out[7]["item_id"], out[7]["clicked"]) == ("a-b", "0")  # split at the LAST "-"
    assert len(out) == 8
    assert canonicalize({**out[6], "timestamp": "5"}).reason == "unknown_label"
    assert canonicalize(out[0], timestamp_format="unix").reason == "unparsable_timestamp"


def test_tokens_custom_separators_and_empty_history():
    rec = {"p": "1", "u": "U", "t": "5", "h": "", "imp": "a:1; b:0 ;c:0"}
    out = list(expand_record(
        "x.csv:2", rec, scalars={"page_id": "p", "user_id": "u", "timestamp": "t"},
        constants={}, exposures=ExposureSpec(tokens="imp", separator=";", label_separator=":",
                                             position=False, trigger_from_history=True),
        history=HistorySpec(items="h", timestamp=0)))
    assert [(r["item_id"], r["clicked"], r["trigger_item_id"], r["_origin"]) for r in out] == [
        ("a", "1", "", "x.csv:2#0"), ("b", "0", "", "x.csv:2#1"), ("c", "0", "", "x.csv:2#2")]
    assert all("position" not in r for r in out)


# ---------------------------------------------------------------------------------------------
# Shown list + clicked subset / parallel labels
# ---------------------------------------------------------------------------------------------
SCAL = {"page_id": "imp", "user_id": "u", "timestamp": "t"}


def test_items_with_clicked_subset():
    rec = {"imp": 10, "u": 3, "t": 100, "inview": [5, 6, 7, 6], "clicked": [6, 9]}
    out = list(expand_record("b.parquet:1", rec, scalars=SCAL, constants={},
                             exposures=ExposureSpec(items="inview", clicked_items="clicked")))
    rows = _rows(out)
    assert [(r["item_id"], r["clicked"], r["position"]) for r in rows] == [
        (5, 0, 0), (6, 1, 1), (7, 0, 2), (6, 1, 3)]  # repeats kept (pages.py dedupes them)
    assert rows[1] == {"page_id": 10, "user_id": 3, "timestamp": 100, "item_id": 6,
                       "clicked": 1, "position": 1, "is_history": 0,
                       "_origin": "b.parquet:1#1",
                       "_raw": {"imp": 10, "u": 3, "t": 100, "inview": 6, "clicked": True,
                                "index": 1}}
    (d,) = _dead(out)
    assert (d.reason, d.origin) == ("clicked_not_shown", "b.parquet:1#4")
    assert d.detail == ("b.parquet:1#4: field 'exposures.clicked_items' (column 'clicked') id #1 "
                        "9 is not in 'exposures.items' (column 'inview')")


def test_items_clicked_as_delimited_strings_ids_compared_as_text():
    rec = {"imp": "p", "u": "U", "t": "1", "inview": "1,2, 3", "clicked": "3"}
    out = list(expand_record("c.csv:9", rec, scalars=SCAL, constants={},
                             exposures=ExposureSpec(items="inview", clicked_items="clicked",
                                                    separator=",")))
    assert [(r["item_id"], r["clicked"]) for r in out] == [("1", 0), ("2", 0), ("3", 1)]
    # ints and strings of the same id match (Parquet ints vs. a text clicked list)
    out = list(expand_record("c.csv:9", {"imp": "p", "u": "U", "t": "1", "inview": [1, 2],
                                         "clicked": "2"}, scalars=SCAL, constants={},
                             exposures=ExposureSpec(items="inview", clicked_items="clicked")))
    assert [r["clicked"] for r in out] == [0, 1]


def test_items_with_labels_and_mismatch():
    ok = {"imp": "p", "u": "U", "t": "1", "inview": ["a", "b"], "lab": ["click", "view"]}
    spec = ExposureSpec(items="inview", labels="lab")
    out = list(expand_record("l.jsonl:1", ok, scalars=SCAL, constants={}, exposures=spec))
    assert [(r["item_id"], r["clicked"]) for r in out] == [("a", "click"), ("b", "view")]
    bad = dict(ok, lab=["click"])
    out = list(expand_record("l.jsonl:2", bad, scalars=SCAL, constants={}, exposures=spec))
    assert len(out) == 1 and out[0].reason == "list_length_mismatch"
    assert out[0].origin == "l.jsonl:2#0"
    assert out[0].detail == ("l.jsonl:2#0: field 'exposures.items' (column 'inview') has 2 ids "
                             "but 'exposures.labels' (column 'lab') has 1 labels; the page is "
                             "not used")


def test_positives_only_items_alone():
    out = list(expand_record("r.csv:1", {"u": "U", "t": "5", "bought": "x y"},
                             scalars={"user_id": "u", "timestamp": "t"}, constants={},
                             exposures=ExposureSpec(items="bought"), positives_only=True))
    assert [(r["item_id"], r["clicked"]) for r in out] == [("x", 1), ("y", 1)]


def test_missing_and_empty_shown_list():
    spec = ExposureSpec(items="inview", clicked_items="clicked")
    out = list(expand_record("e.parquet:4", {"imp": 1, "u": 2, "t": 3, "inview": None},
                             scalars=SCAL, constants={}, exposures=spec))
    assert [(d.reason, d.origin) for d in out] == [("missing_field", "e.parquet:4#0")]
    assert "field 'exposures.items' (column 'inview') is missing or null" in out[0].detail
    out = list(expand_record("e.parquet:5", {"imp": 1, "u": 2, "t": 3, "inview": []},
                             scalars=SCAL, constants={}, exposures=spec))
    assert [(d.reason, d.origin) for d in out] == [("empty_list", "e.parquet:5#0")]


# ---------------------------------------------------------------------------------------------
# History list + timestamps list
# ---------------------------------------------------------------------------------------------
def test_history_with_timestamps_and_mismatch():
    spec = HistorySpec(items="ids", timestamps="ts")
    rec = {"u": 4, "ids": [8, 9, 8], "ts": [10, 11, 12]}
    out = list(expand_record("h.parquet:2", rec, scalars={"user_id": "u", "user_age": "age"},
                             constants={"seller_id": "s", "page_id": "no"}, history=spec))
    assert out == [
        {"user_id": 4, "user_age": None, "seller_id": "s", "page_id": "", "clicked": 1,
         "is_history": 1, "item_id": i, "timestamp": t, "_origin": f"h.parquet:2#{k}",
         "_raw": {"u": 4, "ids": i, "index": k, "ts": t}}
        for k, (i, t) in enumerate([(8, 10), (9, 11), (8, 12)])]
    out = list(expand_record("h.parquet:3", {"u": 4, "ids": [8, 9], "ts": [10]},
                             scalars={"user_id": "u"}, constants={}, history=spec))
    assert len(out) == 1 and out[0].reason == "list_length_mismatch"
    assert out[0].detail == ("h.parquet:3#0: history field 'history.items' (column 'ids') has 2 "
                             "ids but 'history.timestamps' (column 'ts') has 1 timestamps; the "
                             "user's history is not used")
    # a mismatched history does not cost the page its exposures
    out = list(expand_record("h.csv:3", {"p": "1", "u": "U", "t": "9", "ids": "a b",
                                         "ts": "1", "imp": "c-1"},
                             scalars={"page_id": "p", "user_id": "u", "timestamp": "t"},
                             constants={}, history=spec, exposures=ExposureSpec(tokens="imp")))
    assert [getattr(x, "reason", None) or x["item_id"] for x in out] == [
        "list_length_mismatch", "c"]
    assert out[1]["_origin"] == "h.csv:3#1"


# ---------------------------------------------------------------------------------------------
# duplicate_history (pipelines/pages.py)
# ---------------------------------------------------------------------------------------------
def _hist(origin, item, ts=5):
    return {"page_id": "", "user_id": "u", "item_id": item, "clicked": 1, "timestamp": ts,
            "position": -1, "trigger_item_id": "", "category_id": "", "seller_id": "",
            "is_history": 1, "_origin": origin, "_raw": {"item": item}}


def test_duplicate_history_across_records_only():
    rows = ([_hist(f"f:1#{k}", i) for k, i in enumerate("aba")]          # record 1: a b a
            + [_hist(f"f:2#{k}", i) for k, i in enumerate("aba")]        # record 2: same
            + [_hist(f"f:3#{k}", i) for k, i in enumerate("abac")]       # grown by c
            + [_hist("g:1", "b", ts=6), _hist("g:2", "b", ts=6)])        # flat duplicate lines
    log, dead = organize_user("u", rows)
    assert [(r["item_id"], r["_origin"]) for r in log.history] == [
        ("a", "f:1#0"), ("b", "f:1#1"), ("a", "f:1#2"), ("c", "f:3#3"), ("b", "g:1")]
    assert all("_raw" not in r for r in log.history)
    assert [d.reason for d in dead] == ["duplicate_history"] * 7
    assert [d.origin for d in dead] == ["f:2#0", "f:2#1", "f:2#2", "f:3#0", "f:3#1", "f:3#2",
                                        "g:2"]
    assert dead[2].detail == ("f:2#2: field 'item_id' value 'a': the same history row "
                              "(timestamp 5) of user 'u' is already at f:1#2 (first kept)")
    assert dead[0].raw == {"item": "a"}
    # a different timestamp (or any other field) is not a duplicate
    log, dead = organize_user("u", [_hist("f:1", "a", 5), _hist("f:2", "a", 6)])
    assert len(log.history) == 2 and not dead


# ---------------------------------------------------------------------------------------------
# Mapping validation
# ---------------------------------------------------------------------------------------------
BASE = {"columns": {"page_id": "p", "user_id": "u", "timestamp": "t"}}


@pytest.mark.parametrize("extra,msg", [
    ({"exposures": {"tokens": "imp", "items": "x"}}, "either \"tokens\" or \"items\""),
    ({"exposures": {"items": "x"}}, "needs \"clicked_items\""),
    ({"exposures": {"items": "x", "clicked_items": "c", "labels": "l"}}, "not both"),
    ({"exposures": {"tokens": "imp", "sep": " "}}, "unknown key(s) ['sep'] in \"exposures\""),
    ({"exposures": {"tokens": "imp", "label_separator": ""}}, "label_separator"),
    ({"exposures": {"tokens": "imp", "trigger_from_history": True}}, "needs a \"history\""),
    ({"exposures": {"tokens": "imp"}, "history": {"items": "h"}}, "exactly one of"),
    ({"exposures": {"tokens": "imp"},
      "history": {"items": "h", "timestamp": 1, "timestamps": "ts"}}, "exactly one of"),
])
def test_mapping_list_sections_rejected(extra, msg):
    with pytest.raises(MappingError, match="mapping m: .*" + _re(msg)):
        load_mapping({**BASE, **extra}, name="m")


_re = re.escape


def test_mapping_list_field_conflicts_and_requirements():
    with pytest.raises(MappingError, match=_re("field 'item_id' comes from \"exposures\"")):
        load_mapping({"columns": {**BASE["columns"], "item_id": "i"},
                      "exposures": {"tokens": "imp"}}, name="m")
    with pytest.raises(MappingError, match=_re("maps only user_id in \"columns\"")):
        load_mapping({"columns": {"user_id": "u", "page_id": "p"},
                      "history": {"items": "h", "timestamps": "ts"}}, name="m")
    with pytest.raises(MappingError, match=_re("required canonical field(s) ['timestamp']")):
        load_mapping({"columns": {"page_id": "p", "user_id": "u"},
                      "exposures": {"tokens": "imp"}}, name="m")
    with pytest.raises(MappingError, match=_re("\"history\".timestamp 'soon' does not parse "
                                               "with timestamp_format 'unix'")):
        load_mapping({**BASE, "exposures": {"tokens": "imp"},
                      "history": {"items": "h", "timestamp": "soon"}}, name="m")
    m = load_mapping({"columns": {"user_id": "u"}, "history": {"items": "h", "timestamps": "t"}})
    assert m.targets() == {"user_id": "u", "history.items": "h", "history.timestamps": "t"}
    assert m.scalar_targets() == {"user_id": "u"}


def test_mapping_tables_validation(tmp_path):
    hist = {"files": "h*", "columns": {"user_id": "u"},
            "history": {"items": "h", "timestamps": "t"}}
    with pytest.raises(MappingError, match=_re("belong in each table")):
        load_mapping({"tables": [hist], "columns": {"user_id": "u"}}, name="m")
    with pytest.raises(MappingError, match=_re("m tables[0]: needs \"files\"")):
        load_mapping({"tables": [{k: v for k, v in hist.items() if k != "files"}]}, name="m")
    with pytest.raises(MappingError, match=_re("m tables[0]: key(s) ['split'] hold for the whole")):
        load_mapping({"tables": [{**hist, "split": "time"}]}, name="m")
    with pytest.raises(MappingError, match=_re("m tables[0]: unknown key(s) ['colums']")):
        load_mapping({"tables": [{**hist, "colums": {}}]}, name="m")
    # files: every input file must match a table, every table some file
    (tmp_path / "h.csv").write_text("u,h,t\nU,a,1\n")
    (tmp_path / "other.csv").write_text("u,h,t\nU,a,1\n")
    with pytest.raises(MappingError, match=_re("other.csv matches no table")):
        GenericSource(str(tmp_path), {"tables": [hist]})
    with pytest.raises(MappingError, match=_re("no input file matches the \"files\" glob(s) ['z*']")):
        GenericSource(str(tmp_path / "h.csv"), {"tables": [hist, {**hist, "files": "z*"}]})


# ---------------------------------------------------------------------------------------------
# Worked example 1: MIND behaviors.tsv format
# ---------------------------------------------------------------------------------------------
# impression_id, user_id, time, history (space-separated), impressions ("id-label" tokens)
MIND_BEHAVIORS = "\n".join("\t".join(f) for f in [
    ("1", "U1", "11/11/2019 9:05:58 AM", "N10 N11 N10", "N1-1 N2-0 N3-0"),
    ("2", "U2", "11/11/2019 10:00:00 AM", "", "N2-1 N4-0"),
    ("3", "U1", "11/12/2019 2:14:46 PM", "N10 N11 N10", "N4-0 N5-1 N6 N1-0"),  # N6: no label
    ("4", "U3", "11/13/2019 8:00:00 AM", "N12", "N1-0 N5-0 N7-1"),
    ("5", "U2", "11/14/2019 11:11:11 AM", "", "N3-1 N7-0"),
    ("6", "U1", "11/14/2019 4:00:00 PM", "N10 N11 N10", "N2-0 N7-1"),
    ("7", "U3", "11/15/2019 9:30:00 AM", "N12", "N5-1 N6-0 N2-0"),
]) + "\n"

MIND_MAPPING = {
    "description": "MIND behaviors.tsv (no header): impression_id, user_id, time, history, "
                   "impressions",
    "format": "csv", "delimiter": "\t", "header": False, "quotechar": None,
    "columns": {"page_id": 0, "user_id": 1, "timestamp": 2},
    "timestamp_format": MIND_FMT,
    "exposures": {"tokens": 4, "label_separator": "-", "trigger_from_history": True},
    "history": {"items": 3, "timestamp": "11/10/2019 12:00:00 AM"},
}

# The same log flattened by hand: one row per exposure (position = token index, trigger = last
# history id), the history once per user (is_history=1), the bad token dropped. Two identical
# flat lines would be one duplicated history line (duplicate_history), so the hand-flattener
# gives a user's history clicks distinct times before the window, in history order (what the
# ``mind`` source does); the list version's one constant time gives the same examples because
# equal-time clicks are ordered by origin ("<file>:<line>#<k>", k in history order).
MIND_FLAT = """page_id,user_id,item_id,clicked,timestamp,position,trigger_item_id,is_history
,U1,N10,1,11/9/2019 11:59:57 PM,,,1
,U1,N11,1,11/9/2019 11:59:58 PM,,,1
,U1,N10,1,11/9/2019 11:59:59 PM,,,1
1,U1,N1,1,11/11/2019 9:05:58 AM,0,N10,0
1,U1,N2,0,11/11/2019 9:05:58 AM,1,N10,0
1,U1,N3,0,11/11/2019 9:05:58 AM,2,N10,0
2,U2,N2,1,11/11/2019 10:00:00 AM,0,,0
2,U2,N4,0,11/11/2019 10:00:00 AM,1,,0
3,U1,N4,0,11/12/2019 2:14:46 PM,0,N10,0
3,U1,N5,1,11/12/2019 2:14:46 PM,1,N10,0
3,U1,N1,0,11/12/2019 2:14:46 PM,3,N10,0
,U3,N12,1,11/9/2019 11:59:59 PM,,,1
4,U3,N1,0,11/13/2019 8:00:00 AM,0,N12,0
4,U3,N5,0,11/13/2019 8:00:00 AM,1,N12,0
4,U3,N7,1,11/13/2019 8:00:00 AM,2,N12,0
5,U2,N3,1,11/14/2019 11:11:11 AM,0,,0
5,U2,N7,0,11/14/2019 11:11:11 AM,1,,0
6,U1,N2,0,11/14/2019 4:00:00 PM,0,N10,0
6,U1,N7,1,11/14/2019 4:00:00 PM,1,N10,0
7,U3,N5,1,11/15/2019 9:30:00 AM,0,N12,0
7,U3,N6,0,11/15/2019 9:30:00 AM,1,N12,0
7,U3,N2,0,11/15/2019 9:30:00 AM,2,N12,0
"""

FLAT_COLUMNS = ("page_id", "user_id", "item_id", "clicked", "timestamp", "position",
                "trigger_item_id", "is_history")

JOB = dict(short_len=3, long_len=5, max_context=3, valid_fraction=0.2, test_fraction=0.2,
           num_shards=1)


def _run(source, out):
    return P.run(source, P.PreprocessConfig(output_dir=str(out), **JOB), ["--runner=DirectRunner"])


def _outputs(out):
    return {s: collections.Counter(split_records(str(out), s)) for s in ("train", "valid", "test")}


#: stats keys that legitimately differ between a list-shaped log and its hand-flattened copy:
#: rows_read counts the rows the source emits (a list record's expanded rows plus its dead
#: letters), so the repeated MIND history rows (then dead-lettered as duplicate_history) and a
#: malformed token (bad_list_token) are read and dead-lettered in the list version but were
#: never written into the flat copy; ``config`` holds the input/output paths.
DIFFERING = ("rows_read", "rows_dead_letter", "dead_letter_reasons", "config")


def _same(list_stats, flat_stats):
    a = {k: v for k, v in list_stats.items() if k not in DIFFERING}
    b = {k: v for k, v in flat_stats.items() if k not in DIFFERING}
    assert a == b


@pytest.fixture(scope="module")
def mind_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mind")
    (d / "in").mkdir()
    (d / "in" / "behaviors.tsv").write_text(MIND_BEHAVIORS)
    with open(d / "mind_mapping.json", "w") as fh:
        json.dump(MIND_MAPPING, fh)
    (d / "flat.csv").write_text(MIND_FLAT)
    lst = GenericSource(str(d / "in"), str(d / "mind_mapping.json"))
    flat = GenericSource(str(d / "flat.csv"), {"columns": {c: c for c in FLAT_COLUMNS},
                                               "timestamp_format": MIND_FMT})
    return (d, lst, _run(lst, d / "out_list"), _run(flat, d / "out_flat"))


def test_mind_raw_rows(mind_runs):
    d, lst, _, _ = mind_runs
    items = list(lst.read())
    path = str(d / "in" / "behaviors.tsv")
    (bad,) = _dead(items)
    assert (bad.reason, bad.origin) == ("bad_list_token", f"{path}:3#5")
    assert bad.detail == (f"{path}:3#5: field 'exposures.tokens' (column '4') token #2 'N6' is "
                          "not '<item>-<label>'; the record's other tokens are used")
    rows = _rows(items)
    assert len(rows) == (3 * 3 + 1 * 2) + 18  # U1's 3 and U3's 1 history ids per record + exposures
    r3 = [r for r in rows if r["_origin"].startswith(f"{path}:3#")]
    assert [(r["item_id"], r["is_history"]) for r in r3] == [
        ("N10", 1), ("N11", 1), ("N10", 1), ("N4", 0), ("N5", 0), ("N1", 0)]
    assert r3[5] == {"page_id": "3", "user_id": "U1", "timestamp": "11/12/2019 2:14:46 PM",
                     "trigger_item_id": "N10", "item_id": "N1", "clicked": "0", "position": 3,
                     "is_history": 0, "_origin": f"{path}:3#6",
                     "_raw": {"0": "3", "1": "U1", "2": "11/12/2019 2:14:46 PM", "4": "N1-0",
                              "index": 3}}


def test_mind_examples_equal_hand_flattened(mind_runs):
    d, _, st_list, st_flat = mind_runs
    got, want = _outputs(d / "out_list"), _outputs(d / "out_flat")
    assert got == want
    assert sum(st_flat["examples"].values()) == 18 and st_flat["examples"]["test"] > 0
    _same(st_list, st_flat)
    # the differences are exactly the repeated history and the malformed token
    assert st_flat["dead_letter_reasons"] == {}
    assert st_list["dead_letter_reasons"] == {"bad_list_token": 1, "duplicate_history": 7}
    assert st_list["rows_read"] == st_flat["rows_read"] + 8
    for st in (st_list, st_flat):
        assert st["rows_read"] == st["rows_used"] + st["rows_dead_letter"]
    assert st_list["rows_history"] == 4  # U1: N10 N11 N10 (the repeat within one history kept)
    dl = dead_letters(str(d / "out_list"))
    assert sorted(x["reason"] for x in dl) == ["bad_list_token"] + ["duplicate_history"] * 7
    assert all(x["origin"] and x["detail"] for x in dl)


# ---------------------------------------------------------------------------------------------
# Worked example 2: EB-NeRD-style behaviors + history Parquet files
# ---------------------------------------------------------------------------------------------
def _t(s):
    return datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")


def _unix(s):
    return int(_t(s).replace(tzinfo=datetime.timezone.utc).timestamp())


EB_BEHAVIORS = [  # impression_id, user_id, impression_time, inview, clicked, device_type
    (101, 1, "2023-05-18 07:00:00", [9001, 9002, 9003], [9002], 1),
    (102, 2, "2023-05-18 08:30:00", [9003, 9004], [9004], 2),
    (103, 1, "2023-05-19 12:00:00", [9004, 9005, 9001, 9006], [9005, 9001], 1),
    (104, 3, "2023-05-20 18:45:10", [9002, 9006], [9006], 3),
    (105, 2, "2023-05-21 06:00:00", [9001, 9005, 9007], [9007], 2),
    (106, 1, "2023-05-22 21:00:00", [9007, 9003], [9003], 1),
    (107, 3, "2023-05-23 09:15:00", [9005, 9001, 9004], [9001], 3),
]
EB_HISTORY = [  # user_id, article_id_fixed, impression_time_fixed (user 3 has no history row)
    (1, [8001, 8002, 8001], ["2023-05-01 10:00:00", "2023-05-02 11:00:00", "2023-05-03 12:00:00"]),
    (2, [8003], ["2023-05-10 09:00:00"]),
]

EB_MAPPING = {
    "description": "EB-NeRD layout: behaviors.parquet + history.parquet in one directory",
    "format": "parquet",
    "timestamp_format": "unix",
    "tables": [
        {"files": "behaviors*.parquet",
         "columns": {"page_id": "impression_id", "user_id": "user_id",
                     "timestamp": "impression_time"},
         "user_profile": {"device": "device_type"},
         "exposures": {"items": "article_ids_inview", "clicked_items": "article_ids_clicked"}},
        {"files": "history*.parquet",
         "columns": {"user_id": "user_id"},
         "history": {"items": "article_id_fixed", "timestamps": "impression_time_fixed"}},
    ],
}


def _eb_flat() -> str:
    """The EB-NeRD log flattened by hand (unix seconds)."""
    lines = ["page_id,user_id,item_id,clicked,timestamp,position,is_history,user_device"]
    for uid, ids, times in EB_HISTORY:
        lines += [f",{uid},{i},1,{_unix(t)},,1," for i, t in zip(ids, times)]
    for imp, uid, t, inview, clicked, dev in EB_BEHAVIORS:
        lines += [f"{imp},{uid},{i},{int(i in clicked)},{_unix(t)},{p},0,{dev}"
                  for p, i in enumerate(inview)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def ebnerd_runs(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("ebnerd")
    (d / "train").mkdir()
    ts = pa.timestamp("us")
    b = pa.table({
        "impression_id": pa.array([r[0] for r in EB_BEHAVIORS], pa.uint32()),
        "article_id": pa.array([None] * len(EB_BEHAVIORS), pa.int32()),
        "impression_time": pa.array([_t(r[2]) for r in EB_BEHAVIORS], ts),
        "read_time": pa.array([12.0] * len(EB_BEHAVIORS), pa.float32()),
        "article_ids_inview": pa.array([r[3] for r in EB_BEHAVIORS], pa.list_(pa.int32())),
        "article_ids_clicked": pa.array([r[4] for r in EB_BEHAVIORS], pa.list_(pa.int32())),
        "user_id": pa.array([r[1] for r in EB_BEHAVIORS], pa.uint32()),
        "device_type": pa.array([r[5] for r in EB_BEHAVIORS], pa.int8()),
        "gender": pa.array([None] * len(EB_BEHAVIORS), pa.int8()),
    })
    h = pa.table({
        "user_id": pa.array([r[0] for r in EB_HISTORY], pa.uint32()),
        "impression_time_fixed": pa.array([[_t(x) for x in r[2]] for r in EB_HISTORY],
                                          pa.list_(ts)),
        "scroll_percentage_fixed": pa.array([[50.0] * len(r[1]) for r in EB_HISTORY],
                                            pa.list_(pa.float32())),
        "article_id_fixed": pa.array([r[1] for r in EB_HISTORY], pa.list_(pa.int32())),
    })
    pq.write_table(b, d / "train" / "behaviors.parquet")
    pq.write_table(h, d / "train" / "history.parquet")
    with open(d / "ebnerd_mapping.json", "w") as fh:
        json.dump(EB_MAPPING, fh)
    (d / "flat.csv").write_text(_eb_flat())
    lst = GenericSource(str(d / "train"), str(d / "ebnerd_mapping.json"))
    flat = GenericSource(str(d / "flat.csv"), {
        "columns": {c: c for c in ("page_id", "user_id", "item_id", "clicked", "timestamp",
                                   "position", "is_history")},
        "user_profile": {"device": "user_device"}})
    return d, lst, _run(lst, d / "out_list"), _run(flat, d / "out_flat")


def test_ebnerd_raw_rows(ebnerd_runs):
    d, lst, _, _ = ebnerd_runs
    assert lst.user_profile == ("device",)
    hpath = str(d / "train" / "history.parquet")
    rows = list(lst.read_file(hpath))
    assert rows[2] == {"user_id": 1, "page_id": "", "clicked": 1, "is_history": 1,
                       "item_id": 8001, "timestamp": _unix("2023-05-03 12:00:00"),
                       "_origin": f"{hpath}:1#2",
                       "_raw": {"user_id": 1, "article_id_fixed": 8001, "index": 2,
                                "impression_time_fixed": _unix("2023-05-03 12:00:00")}}
    bpath = str(d / "train" / "behaviors.parquet")
    rows = list(lst.read_file(bpath))
    assert len(rows) == sum(len(r[3]) for r in EB_BEHAVIORS)
    assert rows[4] == {"page_id": 102, "user_id": 2, "timestamp": _unix("2023-05-18 08:30:00"),
                       "user_device": 2, "item_id": 9004, "clicked": 1, "position": 1,
                       "is_history": 0, "_origin": f"{bpath}:2#1",
                       "_raw": {"impression_id": 102, "user_id": 2,
                                "impression_time": _unix("2023-05-18 08:30:00"),
                                "device_type": 2, "article_ids_inview": 9004,
                                "article_ids_clicked": True, "index": 1}}


def test_ebnerd_examples_equal_hand_flattened(ebnerd_runs):
    d, _, st_list, st_flat = ebnerd_runs
    assert _outputs(d / "out_list") == _outputs(d / "out_flat")
    assert sum(st_flat["examples"].values()) == sum(len(r[3]) for r in EB_BEHAVIORS)
    assert st_flat["examples"]["test"] > 0 and st_flat["rows_history"] == 4
    # nothing is repeated or malformed here, so even rows_read agrees
    _same(st_list, st_flat)
    for k in ("rows_read", "rows_dead_letter", "dead_letter_reasons"):
        assert st_list[k] == st_flat[k], k
    assert st_list["dead_letter_reasons"] == {}
