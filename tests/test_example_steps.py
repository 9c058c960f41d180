"""The steps of ``pipelines.examples.UserExampleBuilder.build`` on hand-made inputs: split
assignment, negatives, click history windows, context views, the feature dicts' names against
the spec's encoding layout, and the ``Subsequence`` views the encoder takes."""
from __future__ import annotations

import random

import pytest

from ctrcore.schema import (EXAMPLE_SCOPE, PAGE_SCOPE, PROFILE_SCOPE, FeatureDef,
                            encoding_layout)
from pipelines import examples as E
from pipelines import tfexample as tfx
from pipelines.pages import UserLog


def row(item, clicked, ts, line, page="p", cat="", sel="", trig="", hist=0, **kw):
    r = dict(page_id=page, user_id="u", item_id=item, clicked=clicked, timestamp=ts,
             position=-1, trigger_item_id=trig, category_id=cat, seller_id=sel,
             is_history=hist, _origin=f"log.csv:{line}")
    r.update(kw)
    return r


def test_assign_splits():
    pages = [("a", 1, []), ("b", 5, []), ("c", 9, []), ("d", 10, [])]
    assert E.assign_splits(pages, "time", (5, 10)) == ["train", "valid", "valid", "test"]
    assert E.assign_splits(pages, "time", (E.INF, E.INF)) == ["train"] * 4
    assert E.assign_splits(pages, "leave_last_out", (0, 0)) == ["train", "train", "valid",
                                                                "test"]
    assert E.assign_splits(pages[:2], "leave_last_out", (0, 0)) == ["train", "train"]
    splits = E.assign_splits(pages, "time", (5, 10))
    assert E.first_eval_timestamp(pages, splits) == 5
    assert E.first_eval_timestamp(pages[:1], splits[:1]) == E.INF


def test_click_history_windows_are_strictly_before_and_most_recent_first():
    table = {"h2": ("ct", "st")}
    history = [row("h1", 0, 5, 1, page="", cat="c1", sel="s1", hist=1),
               row("h2", 0, 20, 2, page="", hist=1)]  # sides from the item table
    pages = [("p1", 10, [row("a", 1, 10, 3, cat="ca", sel="sa"), row("b", 0, 10, 4)]),
             ("p2", 20, [row("c", 1, 20, 5, cat="cc", sel="sc"),
                         row("n", 1, 20, 6, _origin="negative:p2:1")]),  # never a click
             ("p3", 30, [row("d", 0, 30, 7)])]
    clicks = E.ClickHistory(history, pages, table)
    assert clicks.columns[0] == ("h1", "a", "h2", "c")  # (timestamp, origin) order
    assert clicks.window(3) == ([], [], [])
    assert clicks.advance(10) == 1 and clicks.window(3) == (["h1"], ["c1"], ["s1"])
    assert clicks.advance(20) == 2  # the same-timestamp history row is not before p2
    assert clicks.advance(30) == 4
    assert clicks.window(2) == (["c", "h2"], ["cc", "ct"], ["sc", "st"])
    assert clicks.window(10)[0] == ["c", "h2", "a", "h1"]


def test_negatives_are_seeded_and_exclude_what_the_user_touched():
    universe = [f"i{k}" for k in range(30)]
    table = {i: (f"c{i}", f"s{i}") for i in universe}
    log = UserLog("u", [("p1", 10, [row("i1", 1, 10, 1, trig="i9", user_gender="F")]),
                        ("p2", 20, [row("i2", 1, 20, 2), row("i3", 1, 20, 3)])],
                  [row("i4", 0, 5, 4, page="", hist=1)])
    pages, n = E.add_negatives(log, table, universe, seed=7, per_positive=2,
                               profile_keys=["user_gender"])
    assert n == 6 and [len(p[2]) for p in pages] == [3, 6]
    assert [len(p[2]) for p in log.pages] == [1, 2]  # the log is not changed
    negs = [r for _, _, rs in pages for r in rs if r["_origin"].startswith("negative:")]
    assert [r["_origin"] for r in negs[:2]] == ["negative:p1:1", "negative:p1:2"]
    assert not {r["item_id"] for r in negs} & {"i1", "i2", "i3", "i4"}
    assert len({r["item_id"] for r in pages[1][2]}) == 6  # no repeat on a page
    first = negs[0]
    assert first["clicked"] == 0 and first["timestamp"] == 10 and first["trigger_item_id"] == "i9"
    assert first["user_gender"] == "F" and first["category_id"] == "c" + first["item_id"]
    again, _ = E.add_negatives(log, table, universe, seed=7, per_positive=2,
                               profile_keys=["user_gender"])
    assert again == pages
    other, _ = E.add_negatives(log, table, universe, seed=8, per_positive=2,
                               profile_keys=["user_gender"])
    assert other != pages


def test_page_contexts_views():
    cols = (("a", "b", "c", "d"), ("ca", "cb", "cc", "cd"), ("sa", "sb", "sc", "sd"),
            (1, 0, 0, 1))
    nocap = list(E.page_contexts(cols, 3, ("s",)))
    assert [list(c[0]) for c in nocap] == [["b", "c", "d"], ["a", "c", "d"], ["a", "b", "d"],
                                           ["a", "b", "c"]]
    assert list(nocap[3][3]) == [1, 0, 0] and list(nocap[0][1]) == ["cb", "cc", "cd"]
    capped = list(E.page_contexts(cols, 2, (0, "ctx", "u", "p")))
    for i, ctx in enumerate(capped):
        kept = E.choose_context(cols[3], i, 2, (0, "ctx", "u", "p", i))
        assert list(ctx[0]) == [cols[0][k] for k in kept]
        assert list(ctx[3]) == [cols[3][k] for k in kept]


def test_choose_context_copy_and_view_draw_the_same(monkeypatch):
    rng = random.Random(3)
    pages = [[int(rng.random() < p) for _ in range(n)] for n, p in ((40, 0.1), (60, 0.8),
                                                                    (30, 0.5))]
    want = [[E.choose_context(lab, i, 7, ("s", i)) for i in range(len(lab))] for lab in pages]
    monkeypatch.setattr(E, "_COPY_MAX", 0)  # every index list through the _Without view
    got = [[E.choose_context(lab, i, 7, ("s", i)) for i in range(len(lab))] for lab in pages]
    assert got == want


def test_builder_feature_dicts_are_the_spec_scopes():
    cfg = E.BuildConfig(short_len=2, long_len=3, max_context=2, user_profile=("gender",))
    b = E.UserExampleBuilder(cfg)
    layout = dict(encoding_layout(cfg.spec_config()))
    rows = [row("a", 1, 10, 1, cat="c", sel="s", trig="z", user_gender="F"), row("b", 0, 10, 2)]
    page = ("p", 10, rows)
    cols = E.page_columns(rows, {"b": ("cb", "sb")})
    assert cols == (("a", "b"), ("c", "cb"), ("s", "sb"), (1, 0))
    clicks = E.ClickHistory([], [page], {})
    pf = b.page_features("u", page, cols, clicks.advance(10), clicks)
    assert list(pf) == layout[PAGE_SCOPE]
    assert pf["page_num_clicked"] == 1 and pf["page_num_unclicked"] == 1
    ctx = next(E.page_contexts(cols, 2, ("s",)))
    ef = b.example_features(rows[0], 0, cols, ctx, {"z": ("cz", "sz")})
    assert sorted(ef) == sorted(layout[EXAMPLE_SCOPE] + layout[PROFILE_SCOPE])
    assert ef["trigger_category_id"] == "cz" and ef["user_gender"] == "F"
    assert list(ef["context_item_ids"]) == ["b"] and list(ef["context_labels"]) == [0]


def test_subsequence_view_and_its_encoding():
    base = ("a", "bb", "é", "d")
    v = tfx.Subsequence(base, 1)
    assert list(v) == ["a", "é", "d"] and len(v) == 3 and v[-1] == "d" and v[1:] == ["é", "d"]
    assert v == ["a", "é", "d"] and "bb" not in v
    p = tfx.Subsequence(base, picks=[3, 0])
    assert list(p) == ["d", "a"]
    with pytest.raises(TypeError):
        tfx.Subsequence(list(base), 0)
    with pytest.raises(IndexError):
        tfx.Subsequence(base, 4)
    with pytest.raises(IndexError):
        tfx.Subsequence(base, picks=range(2, -2, -1))
    assert list(tfx.Subsequence(base, picks=range(2, -1, -1))) == ["é", "bb", "a"]
    s_enc = tfx.field_encoder(FeatureDef("s", "string", [3], "train", None, ""))
    i_enc = tfx.field_encoder(FeatureDef("i", "int64", [3], "train", None, -1))
    views = [v, p, tfx.Subsequence(base, 0), tfx.Subsequence(base, picks=[])]
    views += [tfx.Subsequence(base, picks=range(j - 1, max(0, j - m) - 1, -1))
              for j in range(5) for m in (1, 2, 3)]  # history windows
    views += [tfx.Subsequence(base, picks=range(1, 4)),
              tfx.Subsequence(base, picks=range(3, 0, -2))]
    for view in views:
        assert s_enc(view) == s_enc(list(view)), view
    for ints in ((0, 1, 1, 0), (5, 200, -1, 2 ** 40)):  # one-byte and longer varints
        for view in (tfx.Subsequence(ints, 2), tfx.Subsequence(ints, picks=[3, 1]),
                     tfx.Subsequence(ints, picks=range(2, -1, -1)),
                     tfx.Subsequence(ints, picks=range(-1, -1, -1))):
            assert i_enc(view) == i_enc(list(view))
    with pytest.raises(TypeError, match="more than its length"):
        s_enc(tfx.Subsequence(base, picks=[0, 1, 2, 3]))
