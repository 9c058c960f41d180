"""The per-user row cap (pipelines.caps): most recent rows kept, every cut row dead-lettered."""
from __future__ import annotations

import random

import pytest

from pipelines.caps import (DEFAULT_MAX_ROWS_PER_USER, FLAG, REASON, UserRowCap, cap_user_rows,
                            recency_key)
from pipelines.pages import organize_user


def _row(i, ts, origin=None, page=None, history=0, user="u1"):
    origin = origin or f"/logs/part-0.csv:{i + 2}"
    return {"page_id": page or f"p{ts}", "user_id": user, "item_id": f"i{i}", "clicked": i % 2,
            "timestamp": ts, "position": 0, "trigger_item_id": "", "category_id": "c",
            "seller_id": "s", "is_history": history, "_origin": origin,
            "_raw": {"line": f"raw {i}"}}


def test_under_the_cap_keeps_everything():
    rows = [_row(i, 100 + i) for i in range(5)]
    for cap in (5, 6, 0, None):
        kept, dead = cap_user_rows("u1", rows, cap)
        assert kept == rows and dead == []
    assert cap_user_rows("u1", [], 3) == ([], [])


def test_keeps_the_most_recent_rows_by_timestamp():
    rows = [_row(i, ts) for i, ts in enumerate([50, 10, 40, 20, 30, 60])]
    kept, dead = cap_user_rows("u1", rows, 3)
    assert [r["timestamp"] for r in kept] == [50, 40, 60]  # input order kept
    assert [d.origin for d in dead] == [rows[1]["_origin"], rows[3]["_origin"],
                                        rows[4]["_origin"]]  # oldest first
    assert len(kept) + len(dead) == len(rows)


def test_ties_broken_by_origin_later_is_more_recent():
    # equal timestamps: the later origin (file, then numeric line, then #k) is more recent
    rows = [_row(0, 7, origin="/l/a.csv:10"), _row(1, 7, origin="/l/a.csv:9"),
            _row(2, 7, origin="/l/a.csv:10#1"), _row(3, 7, origin="/l/b.csv:2")]
    kept, dead = cap_user_rows("u1", rows, 2)
    assert {r["_origin"] for r in kept} == {"/l/a.csv:10#1", "/l/b.csv:2"}
    assert [d.origin for d in dead] == ["/l/a.csv:9", "/l/a.csv:10"]
    assert recency_key(rows[1]) < recency_key(rows[0]) < recency_key(rows[2])


def test_dead_letters_name_user_cap_and_flag():
    rows = [_row(i, i) for i in range(10)]
    kept, dead = cap_user_rows("crawler-42", rows, 4)
    assert len(kept) == 4 and len(dead) == 6
    for d, r in zip(dead, rows[:6]):
        assert d.reason == REASON == "user_row_cap"
        assert "'crawler-42'" in d.detail and "4" in d.detail and FLAG in d.detail
        assert "--max_rows_per_user=4" in d.detail and "10 rows" in d.detail
        assert d.origin == r["_origin"] and d.raw == r["_raw"]
        assert d.detail.startswith(r["_origin"])
        assert d.to_json()["reason"] == "user_row_cap"


def test_history_rows_count_and_rows_are_not_modified():
    rows = [_row(0, 1, history=1), _row(1, 2, history=1), _row(2, 3), _row(3, 4)]
    snapshot = [dict(r) for r in rows]
    kept, dead = cap_user_rows("u1", rows, 3)
    assert [r["item_id"] for r in kept] == ["i1", "i2", "i3"]
    assert [d.origin for d in dead] == [rows[0]["_origin"]]
    assert rows == snapshot and all("_raw" in r for r in kept)


def test_result_independent_of_input_order():
    rng = random.Random(0)
    rows = [_row(i, rng.randrange(20), origin=f"/l/f{rng.randrange(3)}.csv:{i}")
            for i in range(200)]
    kept0, dead0 = cap_user_rows("u1", rows, 37)
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        kept, dead = cap_user_rows("u1", shuffled, 37)
        assert sorted(r["_origin"] for r in kept) == sorted(r["_origin"] for r in kept0)
        assert [d.origin for d in dead] == [d.origin for d in dead0]
    assert min(recency_key(r) for r in kept0) > max(
        recency_key(r) for r in rows if r["_origin"] in {d.origin for d in dead0})


@pytest.mark.parametrize("cap", [1, 5, 37, 199, 200, 500, 0])
def test_streaming_cap_equals_list_cap(cap):
    rng = random.Random(cap)
    rows = [_row(i, rng.randrange(50)) for i in range(200)]
    rng.shuffle(rows)
    s = UserRowCap("u1", cap)
    dead = [d for d in (s.add(r) for r in rows) if d is not None]
    kept_list, dead_list = cap_user_rows("u1", rows, cap)
    assert s.kept() == kept_list  # same rows, same (input) order
    assert sorted(d.origin for d in dead) == sorted(d.origin for d in dead_list)
    assert s.seen == 200
    assert s.cut == len(dead) == (max(0, 200 - cap) if cap else 0)
    assert all(d.reason == REASON and FLAG in d.detail for d in dead)


def test_streaming_cap_holds_at_most_max_rows():
    s = UserRowCap("u1", 10)
    for i in range(1000):
        s.add(_row(i, 1000 - i))  # every new row is older: cut at once
        assert len(s._heap) <= 10
    assert [r["timestamp"] for r in s.kept()] == list(range(1000, 990, -1))


def test_invalid_caps_name_the_flag():
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ValueError, match="--max_rows_per_user"):
            cap_user_rows("u1", [_row(0, 0)], bad)
        with pytest.raises(ValueError, match="--max_rows_per_user"):
            UserRowCap("u1", bad)
    assert DEFAULT_MAX_ROWS_PER_USER > 0


def test_capped_rows_organize_and_account():
    """Cap then organize (as OrganizeUserFn would): every input row is kept exactly once, or
    dead-lettered exactly once (user_row_cap or duplicate_exposure)."""
    rows = [_row(i, 100 + i // 5, page=f"p{i // 5}") for i in range(40)]
    rows.append(_row(40, 107, page="p7", origin="/logs/part-0.csv:999"))
    rows[-1]["item_id"] = rows[35]["item_id"]  # a duplicate exposure on a kept page
    kept, cut = cap_user_rows("u1", rows, 12)
    log, dup = organize_user("u1", kept)
    assert log.num_rows() + len(dup) + len(cut) == len(rows)
    assert {d.reason for d in cut} == {REASON} and {d.reason for d in dup} == {"duplicate_exposure"}
    assert [pid for pid, _, _ in log.pages] == ["p5", "p6", "p7"]  # p5 straddles the cut
    assert len(log.pages[0][2]) == 1  # only its most recent row (origin line 31) is kept
