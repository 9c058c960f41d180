"""End-to-end tests of the Beam preprocessing job on hand-made logs (DirectRunner)."""
from __future__ import annotations

import collections
import json
import os

import pytest
from apache_beam.testing import test_pipeline as beam_test_pipeline

from ctrcore.schema import load_spec
from pipelines import preprocess as P
from pipelines.sources.base import DeadLetter
from tests.test_preprocess_util import (MemSource, dead_letters, examples, random_log,
                                        split_records)


def run_job(source, out, **kw):
    kw.setdefault("num_shards", 1)
    cfg = P.PreprocessConfig(output_dir=str(out), **kw)
    with beam_test_pipeline.TestPipeline(runner="DirectRunner", options=P.pipeline_options([])) as p:
        P.build_pipeline(p, source, cfg)
    with open(os.path.join(out, "stats.json")) as fh:
        return json.load(fh)


def R(page, user, item, clicked, ts, cat="", sel="", trig="", **kw):
    d = dict(page_id=page, user_id=user, item_id=item, clicked=clicked, timestamp=str(ts),
             category_id=cat, seller_id=sel, trigger_item_id=trig)
    d.update(kw)
    return d


def H(user, item, ts, cat, sel, **kw):
    return dict(page_id="", user_id=user, item_id=item, clicked="", timestamp=str(ts),
                category_id=cat, seller_id=sel, is_history="1", **kw)


HAND_LOG = [
    H("u1", "h", 5, "ch", "sh", user_gender="F"),                      # 1
    R("p1", "u1", "a", "1", 10, "c1", "s1", "h", user_gender="F"),     # 2
    R("p1", "u1", "b", "0", 10, "c2", "s1", "h", user_gender="F"),     # 3
    R("p1", "u1", "c", "0", 10, "c1", "s2", "h", user_gender="F"),     # 4
    R("p2", "u1", "d", "1", 20, "c3", "s1", "a", user_gender="F"),     # 5
    H("u1", "x", 20, "cx", "sx", user_gender="F"),                     # 6 same ts as p2
    R("p2", "u1", "a", "0", 20, "c1", "s1", "a", user_gender="F"),     # 7
    R("p3", "u1", "e", "0", 30, "c2", "s2", "", user_gender="F"),      # 8 single-item page
    R("p4", "u1", "f", "1", 40, "c1", "s1", "", user_gender="F"),      # 9
    R("p5", "u2", "a", "1", 15, "c1", "s1", "", user_gender="M"),      # 10 big page, cap 2
    R("p5", "u2", "b", "1", 15, "c2", "s1", "", user_gender="M"),
    R("p5", "u2", "c", "0", 15, "c1", "s2", "", user_gender="M"),
    R("p5", "u2", "d", "0", 15, "", "", "", user_gender="M"),          # sides from item table
    R("p5", "u2", "e", "0", 15, "c2", "s2", "", user_gender="M"),
]


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hand"))
    src = MemSource({"log.csv": HAND_LOG}, user_profile=("gender",))
    st = run_job(src, out, short_len=2, long_len=3, max_context=2, valid_fraction=0.0,
                 test_fraction=0.0)
    exs = {(e["page_id"][0], e["item_id"][0]): e for e in examples(out, "train")}
    return out, st, exs


def test_exact_examples_user1(hand):
    _, _, exs = hand
    assert len(exs) == 12
    a1 = exs[("p1", "a")]
    assert a1 == {
        "user_id": ["u1"], "user_gender": ["F"],
        "item_id": ["a"], "category_id": ["c1"], "seller_id": ["s1"],
        "trigger_item_id": ["h"], "trigger_category_id": ["ch"], "trigger_seller_id": ["sh"],
        "short_item_ids": ["h", ""], "short_category_ids": ["ch", ""],
        "short_seller_ids": ["sh", ""],
        "long_item_ids": ["h", "", ""], "long_category_ids": ["ch", "", ""],
        "long_seller_ids": ["sh", "", ""],
        "label": [1],
        "context_item_ids": ["b", "c"], "context_category_ids": ["c2", "c1"],
        "context_seller_ids": ["s1", "s2"], "context_labels": [0, 0],
        "page_num_clicked": [1], "page_num_unclicked": [2],
        "page_id": ["p1"], "timestamp": [10], "history_length": [1],
    }
    assert exs[("p1", "b")]["context_item_ids"] == ["a", "c"]
    assert exs[("p1", "b")]["context_labels"] == [1, 0]
    assert exs[("p1", "c")]["context_labels"] == [1, 0]
    # p2: the history click x and the page's own click d (both ts 20) are not history
    d2 = exs[("p2", "d")]
    assert d2["short_item_ids"] == ["a", "h"] and d2["long_item_ids"] == ["a", "h", ""]
    assert d2["history_length"] == [2]
    assert d2["context_item_ids"] == ["a", ""] and d2["context_labels"] == [0, -1]
    assert d2["trigger_category_id"] == ["c1"] and d2["trigger_seller_id"] == ["s1"]
    assert (d2["page_num_clicked"], d2["page_num_unclicked"]) == ([1], [1])
    assert exs[("p2", "a")]["context_labels"] == [1, -1]
    # p3: a single-item page (empty context); same-ts clicks ordered by origin (x after d)
    e3 = exs[("p3", "e")]
    assert e3["context_item_ids"] == ["", ""] and e3["context_labels"] == [-1, -1]
    assert e3["short_item_ids"] == ["x", "d"] and e3["long_item_ids"] == ["x", "d", "a"]
    assert e3["long_category_ids"] == ["cx", "c3", "c1"]
    assert e3["history_length"] == [4]
    assert e3["trigger_item_id"] == [""] and e3["trigger_category_id"] == [""]
    assert (e3["page_num_clicked"], e3["page_num_unclicked"]) == ([0], [1])
    f4 = exs[("p4", "f")]
    assert f4["history_length"] == [4] and f4["short_item_ids"] == ["x", "d"]


def test_exact_examples_context_cap(hand):
    _, _, exs = hand
    for item in "abcde":
        e = exs[("p5", item)]
        assert e["user_gender"] == ["M"]
        assert e["history_length"] == [0] and e["short_item_ids"] == ["", ""]
        assert (e["page_num_clicked"], e["page_num_unclicked"]) == ([2], [3])  # true counts
        assert item not in e["context_item_ids"]
    # label-stratified seeded sample (--context_sampling default), kept in page order: an
    # unclicked target sees 2 clicked and 2 unclicked others, cap 2 -> exactly one of each; a
    # clicked target sees 1 clicked of 4 others -> 0 or 1 clicked (share 0.5)
    labels = {"a": 1, "b": 1, "c": 0, "d": 0, "e": 0}
    for item in "abcde":
        ctx = exs[("p5", item)]["context_item_ids"]
        assert len(ctx) == 2 and ctx == sorted(ctx)
        assert exs[("p5", item)]["context_labels"] == [labels[x] for x in ctx]
        n_clicked = sum(labels[x] for x in ctx)
        assert n_clicked == 1 if labels[item] == 0 else n_clicked in (0, 1), (item, ctx)
    # empty sides come from the item table (the item's category/seller as seen in the log)
    assert exs[("p5", "d")]["category_id"] == ["c3"] and exs[("p5", "d")]["seller_id"] == ["s1"]


def test_stats_and_vocab(hand):
    out, st, _ = hand
    for key in ("rows_read", "rows_used", "rows_dead_letter", "dead_letter_reasons",
                "negatives_sampled", "pages", "examples", "avg_clicked_per_page",
                "avg_unclicked_per_page", "p_s_plus", "p_s_minus", "mean_history_length",
                "activeness_thresholds", "source", "seed", "split"):
        assert key in st, key
    assert st["rows_read"] == st["rows_used"] == 14 and st["rows_dead_letter"] == 0
    assert st["rows_history"] == 2
    assert st["pages"] == {"train": 5, "valid": 0, "test": 0}
    assert st["examples"] == {"train": 12, "valid": 0, "test": 0}
    assert st["avg_clicked_per_page"] == pytest.approx(1.0)
    assert st["avg_unclicked_per_page"] == pytest.approx(1.4)
    n0, n1 = 1.4, 1.0
    ps = (n0 * (n0 - 1) + n1 * (n1 - 1)) / ((n0 + n1) * (n0 + n1 - 1))
    assert st["p_s_plus"] == pytest.approx(ps) and st["p_s_minus"] == pytest.approx(1 - ps)
    assert st["mean_history_length"] == pytest.approx(15 / 12)
    assert st["activeness_thresholds"] == [4, 4]
    assert st["source"] == "mem" and st["seed"] == 0 and st["split"] == "time"
    spec = load_spec(out)
    assert set(spec.vocabularies) == {"user_id", "user_gender", "item_id", "category_id",
                                      "seller_id"}
    assert spec.read_vocab("item_id") == ["a", "b", "c", "d", "e", "f", "h", "x"]
    assert spec.read_vocab("user_id") == ["u1", "u2"]  # u1: 9 rows... ties by id
    assert spec.read_vocab("user_gender") == ["F", "M"]
    assert spec.read_vocab("seller_id")[0] == "s1"


def test_parse_every_output_with_spec(hand):
    import tensorflow as tf

    from ctrcore.data import make_dataset

    out, _, _ = hand
    spec = load_spec(out)
    feats = {name: tf.io.FixedLenFeature(fd.shape, {"string": tf.string, "int64": tf.int64}[fd.dtype])
             for name, fd in spec.features.items()}
    n = 0
    for split in ("train", "valid", "test"):
        files = tf.io.gfile.glob(os.path.join(out, f"{split}-*.tfrecord.gz"))
        assert files, split
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(5).map(
            lambda x: tf.io.parse_example(x, feats))
        for b in ds:
            assert b["context_item_ids"].shape[1] == 2 and b["long_item_ids"].shape[1] == 3
            n += int(b["label"].shape[0])
    assert n == 12
    batch = next(iter(make_dataset(out, "train", 12, shuffle=False)))
    assert batch["short_item_ids"].shape == (12, 2)


def test_time_split_and_train_only_vocab(tmp_path):
    # 10 pages at ts 0..9 for one user, one item per page (item i<ts>), + a repeated item "r"
    rows = []
    for t in range(10):
        rows.append(R(f"p{t}", "u", f"i{t}", "1", t, "c", "s"))
        rows.append(R(f"p{t}", "u", "r" if t < 8 else "late", "0", t, "c", "s"))
    st = run_job(MemSource({"f": rows}), str(tmp_path), valid_fraction=0.2, test_fraction=0.2,
                 min_freq=2)
    assert st["pages"] == {"train": 6, "valid": 2, "test": 2}
    assert st["time_cutoffs"] == [6, 8]
    for split, ts in (("train", range(6)), ("valid", (6, 7)), ("test", (8, 9))):
        assert sorted({e["timestamp"][0] for e in examples(str(tmp_path), split)}) == list(ts)
    spec = load_spec(str(tmp_path))
    # train: r x6, i0..i5 once each (< min_freq 2); valid/test items never counted
    assert spec.read_vocab("item_id") == ["r"]
    assert spec.read_vocab("category_id") == ["c"]


def test_leave_last_out_split(tmp_path):
    rows = [R(f"a{t}", "ua", f"i{t}", "1", t) for t in range(4)]
    rows += [R(f"b{t}", "ub", f"i{t}", "1", t) for t in range(2)]  # < 3 pages: all train
    st = run_job(MemSource({"f": rows}, split="leave_last_out"), str(tmp_path))
    assert st["pages"] == {"train": 4, "valid": 1, "test": 1}
    assert [e["page_id"] for e in examples(str(tmp_path), "test")] == [["a3"]]
    assert [e["page_id"] for e in examples(str(tmp_path), "valid")] == [["a2"]]
    # activeness = history length at the user's latest page (a: 3 clicks before a3; b: 1 before
    # b1), not at the last *training* page (a: 1), so every test user can land in a group
    from pipelines.stats import activeness_thresholds
    assert st["activeness_thresholds"] == activeness_thresholds({3: 1, 1: 1}) == [3, 3]
    assert st["num_users_with_examples"] == 2 and st["num_users_with_train_examples"] == 2


RAND_KW = dict(short_len=3, long_len=50, max_context=2, num_shards=2, seed=7,
               valid_fraction=0.2, test_fraction=0.2)
RAND_ROWS = random_log(seed=3)


def rand_source():
    return MemSource({"a": RAND_ROWS[:60], "b": RAND_ROWS[60:]}, user_profile=("gender",))


@pytest.fixture(scope="module")
def rand_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rand"))
    st = run_job(rand_source(), out, **RAND_KW)
    return out, st


def test_no_leakage_random_log(rand_run):
    """Sequences = exactly the user's clicks strictly before the page timestamp (brute force)."""
    out, st = rand_run
    rows = RAND_ROWS
    clicks = collections.defaultdict(list)
    for origin, r in enumerate(rows):
        if r.get("is_history") == "1" or r["clicked"] == "1":
            clicks[r["user_id"]].append((int(r["timestamp"]), origin, r["item_id"]))
    exs = [e for s in ("train", "valid", "test") for e in examples(out, s)]
    assert len(exs) == sum(1 for r in rows if r.get("is_history") != "1")
    assert st["pages"]["valid"] > 0 and st["pages"]["test"] > 0
    for e in exs:
        ts = e["timestamp"][0]
        prior = sorted(c for c in clicks[e["user_id"][0]] if c[0] < ts)
        expect = [c[2] for c in reversed(prior)]
        assert e["history_length"] == [len(prior)]
        assert [i for i in e["long_item_ids"] if i] == expect[:50]
        assert [i for i in e["short_item_ids"] if i] == expect[:3]
        later = {c[2] for c in clicks[e["user_id"][0]] if c[0] >= ts}
        assert not (later - {c[2] for c in prior}) & set(e["long_item_ids"])


BAD_LOG = [
    R("p1", "u1", "a", "1", 10),                                     # 1 ok
    R("p1", "u1", "a", "0", 11),                                     # 2 duplicate_exposure
    {k: v for k, v in R("p1", "u1", "b", "0", 10).items() if k != "user_id"},  # 3 missing
    R("p1", "u1", "", "0", 10),                                      # 4 empty_field
    R("p1", "u1", "c", "0", 10, position="top"),                     # 5 mistyped_field
    R("p1", "u1", "d", "0", "yesterday"),                            # 6 unparsable_timestamp
    R("p1", "u1", "e", "maybe", 10),                                 # 7 unknown_label
    DeadLetter("malformed_line", "bad.csv:8: 3 columns, expected 9", "bad.csv:8", "x,y,z"),
    R("p1", "u1", "f", "0", 10),                                     # 9 ok
    H("u1", "g", 3, "", ""),                                         # 10 ok (history)
]


def test_dead_letter_accounting(tmp_path):
    st = run_job(MemSource({"bad.csv": BAD_LOG}), str(tmp_path))
    assert st["rows_read"] == 10
    assert st["rows_used"] == 3 and st["rows_dead_letter"] == 7
    assert st["rows_read"] == st["rows_used"] + st["rows_dead_letter"]
    assert st["dead_letter_reasons"] == {
        "duplicate_exposure": 1, "missing_field": 1, "empty_field": 1, "mistyped_field": 1,
        "unparsable_timestamp": 1, "unknown_label": 1, "malformed_line": 1}
    dls = {d["reason"]: d for d in dead_letters(str(tmp_path))}
    assert len(dls) == 7
    assert dls["duplicate_exposure"]["origin"] == "bad.csv:2"
    assert dls["duplicate_exposure"]["raw"] == BAD_LOG[1]
    assert dls["missing_field"]["raw"] == BAD_LOG[2]
    assert "'user_id'" in dls["missing_field"]["detail"]
    assert "bad.csv:6" in dls["unparsable_timestamp"]["detail"]
    assert "'yesterday'" in dls["unparsable_timestamp"]["detail"]
    assert "'position'" in dls["mistyped_field"]["detail"]
    assert dls["malformed_line"]["raw"] == "x,y,z"
    assert sum(st["examples"].values()) == 2  # a (first kept) and f; g is history only
    ex = examples(str(tmp_path), "train") + examples(str(tmp_path), "test")
    assert {e["item_id"][0]: e["history_length"][0] for e in ex} == {"a": 1, "f": 1}


def test_cli_multiprocessing(tmp_path, monkeypatch, rand_run):
    """The CLI entry point with the multi-process DirectRunner gives the same examples; so the
    job is deterministic: same input + seed -> the same set of serialized examples (here: 2
    shards, 2 files), across runs, processes and running modes."""
    import pipelines.sources as sources

    ref, ref_stats = rand_run
    monkeypatch.setattr(sources, "get_source", lambda name, input, mapping=None, **kw:
                        rand_source(), raising=False)
    out = str(tmp_path / "mp")
    flags = [f"--{k}={v}" for k, v in RAND_KW.items()]
    st = P.main(["prog", "--source=mem", "--input=unused", f"--output_dir={out}", *flags,
                 "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert st["rows_read"] == len(RAND_ROWS) == st["rows_used"]
    assert st["examples"] == ref_stats["examples"]
    for s in ("train", "valid", "test"):
        assert sorted(split_records(out, s)) == sorted(split_records(ref, s))
    assert sum(len(split_records(ref, s)) for s in ("train", "valid", "test")) > 50


def test_train_split_written_in_hash_order(tmp_path):
    """shuffle_buckets: the same train records, no longer in runs of one user (the builder
    emits a user's examples together); 0 keeps the builder's order."""
    from tests.test_preprocess_util import decode

    rows = random_log(n_users=40, n_items=60, seed=11, history=False)
    src = lambda: MemSource({"log.csv": rows}, user_profile=("gender",))  # noqa: E731
    kw = dict(short_len=3, long_len=10, max_context=2, valid_fraction=0.0, test_fraction=0.0)
    run_job(src(), str(tmp_path / "grouped"), shuffle_buckets=0, **kw)
    run_job(src(), str(tmp_path / "mixed"), shuffle_buckets=8, **kw)  # ~70 records per bucket
    grouped = split_records(str(tmp_path / "grouped"), "train")
    mixed = split_records(str(tmp_path / "mixed"), "train")
    assert sorted(grouped) == sorted(mixed) and len(mixed) > 200

    def user_switches(recs):
        users = [decode(r)["user_id"][0] for r in recs]
        return sum(a != b for a, b in zip(users, users[1:]))

    n_users = len({decode(r)["user_id"][0] for r in grouped})
    assert user_switches(grouped) < 2 * n_users  # runs of one user
    assert user_switches(mixed) > 0.8 * (len(mixed) - 1)  # ~ (1 - 1/n_users) of all pairs
    with pytest.raises(ValueError, match="--shuffle_buckets=-1"):
        run_job(src(), str(tmp_path / "bad"), shuffle_buckets=-1, **kw)
    assert P.hash_bucket(b"x", 7, seed=1) == P.hash_bucket(b"x", 7, seed=1)
    assert {P.hash_bucket(bytes([i]), 4, seed=2) for i in range(64)} == {0, 1, 2, 3}


def test_max_rows_per_user_caps_a_crawler(tmp_path):
    """--max_rows_per_user: a user with more rows keeps the most recent ones; the others are
    user_row_cap dead letters naming the user and the flag, and every row is accounted for."""
    rows = random_log(n_users=6, n_items=30, seed=5, history=False)
    crawler = [R(f"c{t}", "bot", f"i{t % 30}", str(t % 2), 100 + t) for t in range(60)]
    src = MemSource({"log.csv": rows + crawler})
    kw = dict(valid_fraction=0.0, test_fraction=0.0, shuffle_buckets=0)
    st = run_job(src, str(tmp_path / "cap"), max_rows_per_user=25, **kw)
    assert st["dead_letter_reasons"] == {"user_row_cap": 35}
    assert st["rows_read"] == st["rows_used"] + st["rows_dead_letter"] == len(rows) + 60
    bot = sorted(e["timestamp"][0] for e in examples(str(tmp_path / "cap"), "train")
                 if e["user_id"] == ["bot"])
    assert bot == list(range(135, 160))  # the 25 most recent events
    dl = [d for d in dead_letters(str(tmp_path / "cap")) if d["reason"] == "user_row_cap"]
    assert len(dl) == 35 and "'bot'" in dl[0]["detail"] and "--max_rows_per_user=25" in dl[0]["detail"]
    assert run_job(MemSource({"log.csv": rows + crawler}), str(tmp_path / "nocap"),
                   max_rows_per_user=0, **kw)["rows_dead_letter"] == 0
    with pytest.raises(ValueError, match="--max_rows_per_user=-1"):
        run_job(MemSource({"log.csv": rows}), str(tmp_path / "bad"), max_rows_per_user=-1, **kw)
