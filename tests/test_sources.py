"""Log sources: generic mapping (CSV / JSONL / Parquet), mapping validation, registry, and the
built-in MIND / Amazon Beauty sources against the SOURCE.md counts."""
import datetime
import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines import synthetic
from pipelines.sources import get_source, summarize, verify_counts
from pipelines.sources.base import DeadLetter
from pipelines.sources.generic import GenericSource, MappingError, load_mapping

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MIND = DATA / "mind_small_sample"
AMAZON = DATA / "amazon_beauty_5core"
needs_mind = pytest.mark.skipif(not (MIND / "behaviors.tsv").exists(),
                                reason=f"MIND sample not found at {MIND} (shared data absent)")
needs_amazon = pytest.mark.skipif(not (AMAZON / "s3rec_Beauty.txt").exists(),
                                  reason=f"Amazon Beauty files not found at {AMAZON}")

# A made-up log schema: sessions of a shop app, string actions, ISO-like times, a sex column.
LOG = pd.DataFrame({
    "sess": ["s1", "s1", "s1", "s2", "s2"],
    "uid": ["a", "a", "a", "b", "b"],
    "sku": ["x1", "x2", "x3", "x2", "x4"],
    "act": ["click", "view", "view", "view", "click"],
    "ts": ["2024-01-02 10:00:00"] * 3 + ["2024-01-03 11:30:00"] * 2,
    "rank": [1, 2, 3, 1, 2],
    "sex": ["f", "f", "f", "m", "m"],
})
MAPPING = {
    "format": "csv",
    "columns": {"page_id": "sess", "user_id": "uid", "item_id": "sku", "clicked": "act",
                "timestamp": "ts", "position": "rank"},
    "user_profile": {"gender": "sex"},
    "timestamp_format": "%Y-%m-%d %H:%M:%S",
    "label_values": {"click": 1, "view": 0},
    "constants": {"seller_id": "shop"},
}


def _write(tmp_path, fmt):
    return synthetic.write(LOG, str(tmp_path / f"log.{fmt}"), fmt)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_generic_source_formats(tmp_path, fmt):
    path = _write(tmp_path, fmt)
    src = get_source("generic", path, mapping={**MAPPING, "format": fmt})
    assert src.label_values == {"click": 1, "view": 0}
    assert src.timestamp_format == "%Y-%m-%d %H:%M:%S"
    assert (src.positives_only, src.split, src.user_profile) == (False, "time", ("gender",))
    rows = list(src.read())
    assert len(rows) == 5 and not any(isinstance(r, DeadLetter) for r in rows)
    r = rows[0]
    assert (r["page_id"], r["user_id"], r["item_id"], r["clicked"]) == ("s1", "a", "x1", "click")
    assert r["user_gender"] == "f" and r["seller_id"] == "shop"
    assert str(r["position"]) == "1" and r["timestamp"] == "2024-01-02 10:00:00"
    assert r["_origin"] == f"{path}:{2 if fmt == 'csv' else 1}"  # csv line 1 is the header
    assert summarize(rows) == dict(pages=2, users=2, items=4, interactions=5, exposures=5,
                                   clicks=0, history=0, dead_letters=0)  # labels still raw


def test_generic_rows_canonicalize(tmp_path):
    canonical = pytest.importorskip("pipelines.canonical")
    src = get_source("generic", _write(tmp_path, "csv"), mapping=MAPPING)
    rows = [canonical.canonicalize(r, timestamp_format=src.timestamp_format,
                                   label_values=src.label_values,
                                   positives_only=src.positives_only) for r in src.read()]
    assert [r["clicked"] for r in rows] == [1, 0, 0, 0, 1]
    assert rows[0]["timestamp"] == int(datetime.datetime(2024, 1, 2, 10, tzinfo=datetime.timezone.utc).timestamp())


def test_generic_mapping_file_and_directory_input(tmp_path):
    (tmp_path / "logs").mkdir()
    LOG.to_csv(tmp_path / "logs" / "b.csv", index=False)
    LOG.to_csv(tmp_path / "logs" / "a.csv", index=False)
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(MAPPING))
    src = get_source("generic", str(tmp_path / "logs"), mapping=str(mpath))
    assert [Path(f).name for f in src.files()] == ["a.csv", "b.csv"]
    assert len(list(src.read())) == 10


def test_generic_dead_letters(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("sess,uid,sku,act,ts,rank,sex\ns1,a,x1,click,2024-01-02 10:00:00,1,f\n"
                        "s1,a,x2\n\ns1,a,x3,view,2024-01-02 10:00:00,3,f\n")
    out = list(get_source("generic", str(csv_path), mapping=MAPPING).read())
    assert [type(o).__name__ for o in out] == ["dict", "DeadLetter", "dict"]
    assert out[1].reason == "bad_column_count" and out[1].origin == f"{csv_path}:3"
    assert "expected 7 columns, got 3" in out[1].detail and out[1].raw == "s1,a,x2"
    assert out[2]["_origin"] == f"{csv_path}:5"
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"sess":"s1","uid":"a","sku":"x","act":"view","ts":"t","rank":1,"sex":"f"}\n'
                  '{"sess": broken\n[1, 2]\n{"sess":"s2","uid":"b","sku":"y","act":"view"}\n')
    out = list(get_source("generic", str(jl), mapping={**MAPPING, "format": "jsonl"}).read())
    assert [getattr(o, "reason", "row") for o in out] == ["row", "bad_json", "bad_json", "row"]
    assert out[1].origin == f"{jl}:2"
    assert out[3]["timestamp"] is None  # missing key -> None: canonical.py says missing_field


def test_generic_headerless_csv_and_positives_only(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("u1\ti1\t1700000000\nu1\ti2\t1700000100\nu2\ti1\t1700000050\n")
    src = get_source("generic", str(path), mapping={
        "format": "csv", "delimiter": "\t", "header": False, "positives_only": True,
        "columns": {"user_id": 0, "item_id": 1, "timestamp": 2}})
    assert src.positives_only and src.split == "leave_last_out"
    rows = list(src.read())
    assert [(r["user_id"], r["item_id"], r["clicked"]) for r in rows][0] == ("u1", "i1", 1)


def test_generic_multi_character_delimiter_movielens(tmp_path):
    """MovieLens-1M's ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``, no header):
    a delimiter of several characters splits plainly, a single ':' stays inside a field, and a
    line with another number of fields is a dead letter naming file and line."""
    path = tmp_path / "ratings.dat"
    path.write_bytes(b"1::1193::5::978300760\n1::661::3::978302109\n2::a:b::4::978300000\n"
                     b"2::3068\n\"3\"::1::2::978301000\n")
    mapping = {"format": "csv", "delimiter": "::", "header": False, "positives_only": True,
               "columns": {"user_id": 0, "item_id": 1, "timestamp": 3}}
    out = list(get_source("generic", str(path), mapping=mapping).read())
    assert [getattr(o, "reason", "row") for o in out] == ["row", "row", "row",
                                                           "bad_column_count", "row"]
    assert [(r["user_id"], r["item_id"], r["timestamp"]) for r in out if isinstance(r, dict)] == [
        ("1", "1193", "978300760"), ("1", "661", "978302109"), ("2", "a:b", "978300000"),
        ('"3"', "1", "978301000")]  # no quoting: the quotes are part of the id
    assert out[3].origin == f"{path}:4" and "expected 4 columns, got 2" in out[3].detail
    # the width comes from a vote of the leading lines: a broken first line does not decide it
    path.write_bytes(b"1::1193::5\n" + b"1::661::3::978302109\n" * 3)
    out = list(get_source("generic", str(path), mapping=mapping).read())
    assert [getattr(o, "reason", "row") for o in out] == ["bad_column_count"] + ["row"] * 3
    with pytest.raises(MappingError) as e:
        get_source("generic", str(path), mapping={**mapping, "columns": {
            "user_id": 0, "item_id": 1, "timestamp": 4}})
    assert ("column '4' (mapped to 'timestamp') not found in file" in str(e.value)
            and str(path) in str(e.value) and "4 columns in 3 of its first 4 lines" in str(e.value))
    with pytest.raises(MappingError, match="set \"quotechar\": null"):
        load_mapping({**mapping, "quotechar": '"'}, name="ml.json")
    for bad in ("", "a\nb", 1):
        with pytest.raises(MappingError, match="\"delimiter\" must be a non-empty string"):
            load_mapping({**mapping, "delimiter": bad}, name="ml.json")


def test_generic_page_from_fields_ali_ccp(tmp_path):
    """A log without a page id (Ali-CCP's raw_sample.csv: one ad impression per line): with
    ``page_from`` the page is (user, time_stamp), so the ads one user saw at one time form a
    page and another user at the same second has a page of their own."""
    from pipelines.canonical import canonicalize

    path = tmp_path / "raw_sample.csv"
    path.write_text("user,time_stamp,adgroup_id,pid,nonclk,clk\n"
                    "581738,1494137644,1,430548_1007,1,0\n581738,1494137644,2,430548_1007,0,1\n"
                    "449818,1494137644,3,430548_1007,1,0\n,1494137650,4,430548_1007,1,0\n")
    mapping = {"columns": {"user_id": "user", "timestamp": "time_stamp",
                           "item_id": "adgroup_id", "clicked": "clk"},
               "user_profile": {"pid": "pid"}, "page_from": ["user_id", "timestamp"]}
    src = get_source("generic", str(path), mapping=mapping)
    rows = [canonicalize(r, **src.canonical_kwargs()) for r in src.read()]
    assert [getattr(r, "reason", None) or r["page_id"] for r in rows] == [
        "581738@1494137644", "581738@1494137644", "449818@1494137644", "empty_field"]
    assert "field 'user_id'" in rows[3].detail  # the missing part is named, not page_id
    # a profile column can be part of the page (Ali-CCP's pid: the ad slot)
    src = get_source("generic", str(path), mapping={
        **mapping, "page_from": ["user_id", "timestamp", "user_pid"]})
    assert next(iter(src.read()))["page_id"] == "581738@1494137644@430548_1007"
    for change, message in [
            ({"page_from": "user_id"}, "must be a non-empty list"),
            ({"page_from": ["user_id", "item_id"]}, "may not use ['item_id']"),
            ({"page_from": ["user_id", "user_sex"]}, "['user_sex'] are not mapped"),
            ({"page_from": ["user_id", "user_id"]}, "lists a field twice"),
            ({"columns": {**mapping["columns"], "page_id": "pid"}}, "remove page_id"),
            ({"positives_only": True}, "are already (user_id, timestamp)")]:
        with pytest.raises(MappingError) as e:
            load_mapping({**mapping, **change}, name="ali.json")
        assert message in str(e.value) and "ali.json" in str(e.value)
    with pytest.raises(MappingError, match=r"required canonical field\(s\) \['page_id'\]"):
        load_mapping({k: v for k, v in mapping.items() if k != "page_from"}, name="ali.json")


def _movielens(tmp_path):
    """ratings.dat and movies.dat in MovieLens-1M's format ('::', no header, movies in
    latin-1, genres joined by '|'), with a broken, a duplicate and a control-character line."""
    (tmp_path / "ratings.dat").write_bytes(
        b"1::1::5::978300760\n1::2::3::978302109\n2::3::4::978300000\n2::9::4::978300100\n")
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Jumanji (1995)::Adventure\n"
        "3::Caf\u00e9 (1995)\n"  # a line without its genres: bad_column_count
        "2::Jumanji again::Horror\n"  # duplicate_item: the first line wins
        "4::Bad::Dra\x01ma\n".encode("latin-1"))
    mapping = {"format": "csv", "delimiter": "::", "header": False, "positives_only": True,
               "columns": {"user_id": 0, "item_id": 1, "timestamp": 3},
               "items": {"input": "movies.dat", "encoding": "latin-1", "separator": "|",
                         "columns": {"item_id": 0, "category_id": 2}}}
    mpath = tmp_path / "ml.json"
    mpath.write_text(json.dumps(mapping))
    return str(tmp_path / "ratings.dat"), str(mpath), mapping


def test_generic_item_table_fills_categories(tmp_path):
    ratings, mpath, mapping = _movielens(tmp_path)
    src = get_source("generic", ratings, mapping=mpath)  # "movies.dat": next to the mapping
    assert src.files() == [ratings, str(tmp_path / "movies.dat")]
    out = list(src.read())
    rows = [o for o in out if isinstance(o, dict)]
    assert [(r["item_id"], r.get("category_id")) for r in rows] == [
        ("1", "Animation"), ("2", "Adventure"), ("3", None), ("9", None)]
    dead = [o for o in out if not isinstance(o, dict)]
    assert [(d.reason, d.origin.rsplit("/", 1)[1]) for d in dead] == [
        ("bad_column_count", "movies.dat:3"), ("duplicate_item", "movies.dat:4"),
        ("control_character", "movies.dat:5")]
    assert "first at" in dead[1].detail and "movies.dat:2" in dead[1].detail
    with pytest.raises(MappingError, match="also one of the log inputs: narrow --input"):
        get_source("generic", str(tmp_path / "*.dat"), mapping=mpath)
    # the item table is not pickled: every worker reads it once
    import pickle
    src.item_table()
    assert pickle.loads(pickle.dumps(src))._item_table is None
    # a row's own category wins over the table's
    log = tmp_path / "log.csv"
    log.write_text("u,i,t,c\nu1,1,978300760,Own\nu1,2,978300761,\n")
    src = get_source("generic", str(log), mapping={
        "positives_only": True, "columns": {"user_id": "u", "item_id": "i", "timestamp": "t",
                                            "category_id": "c"},
        "items": {**mapping["items"], "input": str(tmp_path / "movies.dat"),
                  "format": "csv", "delimiter": "::", "header": False}})
    assert [r["category_id"] for r in src.read() if isinstance(r, dict)] == ["Own", "Adventure"]
    # JSON-lines metadata with nested category lists (Amazon's meta files): the first id
    meta = tmp_path / "meta.jsonl"
    meta.write_text('{"asin": "1", "categories": [["Beauty", "Skin Care"]], "brand": "B"}\n'
                    '{"asin": "2", "categories": [], "brand": "C|D"}\n')
    src = get_source("generic", str(log), mapping={
        "positives_only": True, "columns": {"user_id": "u", "item_id": "i", "timestamp": "t"},
        "items": {"input": str(meta), "separator": "|", "columns": {
            "item_id": "asin", "category_id": "categories", "seller_id": "brand"}}})
    assert [(r.get("category_id"), r.get("seller_id")) for r in src.read()] == [
        ("Beauty", "B"), (None, "C")]


def test_generic_item_table_through_the_job(tmp_path):
    """The whole preprocessing job: the item file's dead letters are read once and counted,
    the categories reach the vocabulary and the examples."""
    from pipelines import preprocess as P
    from tests.test_preprocess_util import dead_letters

    ratings, mpath, _ = _movielens(tmp_path)
    out = tmp_path / "out"
    P.run(get_source("generic", ratings, mapping=mpath),
          P.PreprocessConfig(output_dir=str(out), short_len=3, long_len=5, max_context=3,
                             num_shards=1), ["--runner=DirectRunner"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_read"] == 4 + 3 == stats["rows_used"] + stats["rows_dead_letter"]
    assert stats["dead_letter_reasons"] == {"bad_column_count": 1, "duplicate_item": 1,
                                            "control_character": 1}
    assert sorted(d["origin"].rsplit("/", 1)[1] for d in dead_letters(str(out))) == [
        "movies.dat:3", "movies.dat:4", "movies.dat:5"]
    vocab = (out / "vocab" / "category_id.txt").read_text().split()
    assert {"Animation", "Adventure"} <= set(vocab)


@pytest.mark.parametrize("change, message", [
    ({"input": "nope.dat"}, "item file"),
    ({"columns": {"item_id": 0}}, "must map category_id and/or seller_id"),
    ({"columns": {"item_id": 0, "title": 1}}, "maps ['title']"),
    ({"columns": {"item_id": 0, "category_id": 7}}, "column(s) {'category_id': '7'} not found"),
    ({"colour": 1}, "unknown key(s) ['colour'] in \"items\""),
    ({"separator": ""}, "separator must be a non-empty string"),
])
def test_generic_item_table_errors(tmp_path, change, message):
    ratings, _, mapping = _movielens(tmp_path)
    mapping = {**mapping, "items": {**mapping["items"], "input": str(tmp_path / "movies.dat"),
                                    **change}}
    if change.get("input"):
        mapping["items"]["input"] = str(tmp_path / change["input"])
    with pytest.raises(MappingError) as e:
        get_source("generic", ratings, mapping=mapping)
    assert message in str(e.value) and "<dict>" in str(e.value)


def test_generic_optional_column_may_be_absent(tmp_path):
    path = _write(tmp_path, "csv")
    m = {**MAPPING, "columns": {**MAPPING["columns"], "category_id": "cat"},
         "optional": ["category_id"]}
    rows = list(get_source("generic", path, mapping=m).read())
    assert len(rows) == 5 and "category_id" not in rows[0]


@pytest.mark.parametrize("change, message", [
    ({"columns": {**MAPPING["columns"], "colour": "c"}}, "unknown canonical field 'colour'"),
    ({"columns": {k: v for k, v in MAPPING["columns"].items() if k != "timestamp"}},
     "required canonical field(s) ['timestamp'] not mapped"),
    ({"columns": {**MAPPING["columns"], "user_sex": "sex"}}, "declare user profile columns"),
    ({"timestamp_format": "isoformat"}, "\"timestamp_format\" is 'isoformat'"),
    ({"split": "random"}, "\"split\" is 'random'"),
    ({"label_values": {"click": 2}}, "must map to 0 or 1"),
    ({"format": "xlsx"}, "\"format\" is 'xlsx'"),
    ({"colums": {}}, "unknown key(s) ['colums']"),
    ({"optional": ["user_id"]}, "'user_id', but it is a required canonical field"),
])
def test_mapping_validation_errors(change, message):
    with pytest.raises(MappingError) as e:
        load_mapping({**MAPPING, **change}, name="my_mapping.json")
    assert message in str(e.value) and "my_mapping.json" in str(e.value)


def test_mapping_column_missing_from_file_names_column_and_file(tmp_path):
    path = _write(tmp_path, "csv")
    mpath = tmp_path / "map.json"
    mpath.write_text(json.dumps({**MAPPING, "columns": {**MAPPING["columns"], "item_id": "SKU"}}))
    with pytest.raises(MappingError) as e:
        GenericSource(path, str(mpath))
    msg = str(e.value)
    assert "'SKU'" in msg and "'item_id'" in msg and path in msg and str(mpath) in msg
    for fmt in ("jsonl", "parquet"):
        p = _write(tmp_path, fmt)
        with pytest.raises(MappingError, match="column 'SKU'"):
            GenericSource(p, {**MAPPING, "format": fmt,
                              "columns": {**MAPPING["columns"], "item_id": "SKU"}})


def test_mapping_file_errors(tmp_path):
    with pytest.raises(MappingError, match="not found"):
        load_mapping(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MappingError, match="bad.json is not valid JSON"):
        load_mapping(str(bad))


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'kafka'"):
        get_source("kafka", "x")
    with pytest.raises(ValueError, match="needs --mapping"):
        get_source("generic", "x")
    with pytest.raises(ValueError, match="takes no mapping"):
        get_source("mind", str(MIND), mapping={})
    with pytest.raises(FileNotFoundError, match="no input files"):
        get_source("synthetic", str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------------------------------------
# MIND
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mind_rows():
    if not (MIND / "behaviors.tsv").exists():
        pytest.skip(f"MIND sample not found at {MIND} (shared data absent)")
    return list(get_source("mind", str(MIND)).read())


@needs_mind
def test_mind_counts_match_source_md(mind_rows):
    s = summarize(mind_rows)
    assert (s["pages"], s["users"], s["exposures"], s["clicks"]) == (5000, 4637, 189359, 7542)
    assert s["dead_letters"] == 0
    src = get_source("mind", str(MIND))
    assert verify_counts(src, rows=mind_rows) == {}
    assert src.EXPECTED_COUNTS and src.timestamp_format == "%m/%d/%Y %I:%M:%S %p"
    assert (src.positives_only, src.split, src.label_values) == (False, "time", None)


@needs_mind
def test_mind_history_once_per_user_and_before_window(mind_rows):
    fmt = "%m/%d/%Y %I:%M:%S %p"
    lines = [l.rstrip("\n").split("\t") for l in open(MIND / "behaviors.tsv")]
    hist = {}
    for l in lines:
        hist.setdefault(l[1], l[3].split())
    history = [r for r in mind_rows if r["is_history"] == 1]
    assert len(history) == sum(len(h) for h in hist.values())  # 327 repeat users: once each
    first = min(datetime.datetime.strptime(l[2], fmt) for l in lines)
    last_hist = max(datetime.datetime.strptime(t, fmt) for t in {r["timestamp"] for r in history})
    assert last_hist < first
    u = lines[0][1]
    assert [r["item_id"] for r in history if r["user_id"] == u] == hist[u]
    ts = [datetime.datetime.strptime(r["timestamp"], fmt) for r in history if r["user_id"] == u]
    assert ts == sorted(ts)
    assert all(r["clicked"] == 1 and r["page_id"] == "" for r in history)


@needs_mind
def test_mind_trigger_and_news_features(mind_rows):
    first_line = open(MIND / "behaviors.tsv").readline().rstrip("\n").split("\t")
    exp = [r for r in mind_rows if r["is_history"] == 0]
    page = [r for r in exp if r["page_id"] == first_line[0]]
    assert all(r["trigger_item_id"] == first_line[3].split()[-1] for r in page)
    assert [r["position"] for r in page] == list(range(len(first_line[4].split())))
    with_cat = [r for r in exp if r["category_id"]]
    assert with_cat and all(r["seller_id"] for r in with_cat)  # subcategory rides along


def test_mind_malformed_lines(tmp_path):
    (tmp_path / "behaviors.tsv").write_text(
        "1\tU1\t11/9/2019 1:00:00 AM\tN1 N2\tN3-1 N4-x N5 N6-0\n"
        "2\tU1\t11/9/2019 2:00:00 AM\n"
        "3\tU2\t11/9/2019 3:00:00 PM\t\tN3-0\n")
    (tmp_path / "news.tsv").write_text("N3\tsports\tracing\tt\ta\tu\t[]\t[]\n")
    out = list(get_source("mind", str(tmp_path)).read())
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert [d.reason for d in dead] == ["bad_impression_token", "bad_column_count"]
    assert "'N5'" in dead[0].detail and dead[1].origin.endswith("behaviors.tsv:2")
    rows = [o for o in out if not isinstance(o, DeadLetter)]
    assert [r["clicked"] for r in rows if not r["is_history"]] == ["1", "x", "0", "0"]
    assert rows[2]["category_id"] == "sports" and rows[2]["seller_id"] == "racing"
    assert rows[-1]["trigger_item_id"] == ""  # empty history: no trigger
    assert [r["timestamp"] for r in rows[:2]] == ["11/09/2019 12:59:58 AM",
                                                  "11/09/2019 12:59:59 AM"]


# ---------------------------------------------------------------------------------------------
# Amazon Beauty
# ---------------------------------------------------------------------------------------------
@needs_amazon
def test_amazon_counts_and_protocol():
    src = get_source("amazon_beauty", str(AMAZON))
    assert (src.positives_only, src.split, src.timestamp_format) == (True, "leave_last_out", "unix")
    rows = list(src.read())
    s = summarize(rows)
    assert (s["users"], s["items"], s["interactions"]) == (22363, 12101, 198502)
    assert s["dead_letters"] == 0 and s["clicks"] == 198502
    assert verify_counts(src, rows=rows) == {}
    # every review its own (user, timestamp) event, strictly increasing per user
    assert len({(r["user_id"], r["timestamp"]) for r in rows}) == 198502
    first = [r for r in rows if r["user_id"] == "2"]
    assert [r["item_id"] for r in first] == "6 7 8 9 10 4 11".split()
    assert [r["timestamp"] for r in first] == [0, 3801601, 3801602, 4406403, 5270404, 5356805,
                                               5356806]
    assert [r["trigger_item_id"] for r in first[:3]] == ["", "6", "7"]
    assert len({r["category_id"] for r in rows}) == 195 and all(r["category_id"] for r in rows)
    attrs = json.loads((AMAZON / "s3rec_Beauty_item2attributes.json").read_text())
    r = next(r for r in rows if r["seller_id"])
    assert r["seller_id"] == str(attrs[r["item_id"]][0])
    assert r["category_id"] == str(attrs[r["item_id"]][-1])


def test_amazon_misaligned_lines(tmp_path):
    (tmp_path / "s3rec_Beauty.txt").write_text("1 5 6 7\n2 8 9\n3 1 2\n")
    (tmp_path / "timeweaver_Beauty_time_intervals.txt").write_text(
        "1 5 6 7\t0 86400 0\n2 8 7\t0 10\n")
    (tmp_path / "s3rec_Beauty_item2attributes.json").write_text(
        json.dumps({"5": [100, 1, 2], "6": [1, 3], "7": [101]}))
    out = list(get_source("amazon_beauty", str(tmp_path)).read())
    rows = [o for o in out if not isinstance(o, DeadLetter)]
    assert [(r["timestamp"], r["category_id"], r["seller_id"]) for r in rows] == [
        (0, "2", "100"), (86401, "3", ""), (86402, "", "101")]
    assert [(d.reason, d.origin.rsplit(":", 1)[1]) for d in out if isinstance(d, DeadLetter)] \
        == [("misaligned_line", "2"), ("misaligned_line", "3")]
