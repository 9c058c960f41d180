"""The compact item table side input (pipelines/itemtable.py)."""
from __future__ import annotations

import pickle
from collections import Counter

from apache_beam.coders import coders

from pipelines.examples import BuildConfig, UserExampleBuilder
from pipelines.itemtable import ItemTable, compact
from pipelines.pages import organize_user


def _table(n=3000):
    return {f"i{i}": (f"c{(i * 7) % 40 % 12}", f"s{(i * 7) % 40}") for i in range(n)}


def test_round_trip_through_pickle_and_beam_coder():
    plain = _table()
    t = compact(plain)
    for decode in (lambda x: pickle.loads(pickle.dumps(x)),
                   lambda x: coders.FastPrimitivesCoder().decode(
                       coders.FastPrimitivesCoder().encode(x))):
        got = decode(t)
        assert type(got) is ItemTable and got == plain
        assert got.universe() == sorted(plain)
        # values shared: one tuple per distinct (category, seller) pair
        assert len({id(v) for v in got.values()}) == len(set(plain.values())) == 40
        # the universe shares the dict's key strings (no second copy of the ids)
        keys = {id(k) for k in got}
        assert all(id(u) in keys for u in got.universe())
    # inside a tuple (a ContextFn-style side input value) too
    ctx = coders.FastPrimitivesCoder().decode(coders.FastPrimitivesCoder().encode(
        (t, None, (1.0, 2.0))))
    assert type(ctx[0]) is ItemTable and ctx[0] == plain and ctx[2] == (1.0, 2.0)


def test_smaller_than_a_dict_and_a_universe():
    plain = _table(20000)
    fpc = coders.FastPrimitivesCoder()
    kv = coders.TupleCoder([coders.StrUtf8Coder(), fpc])
    separate = sum(len(kv.encode(x)) for x in plain.items()) + len(fpc.encode(sorted(plain)))
    assert len(fpc.encode(compact(plain))) < 0.7 * separate


def test_empty_and_get():
    t = pickle.loads(pickle.dumps(ItemTable()))
    assert t == {} and t.universe() == [] and t.get("x", ("", "")) == ("", "")
    t2 = compact({"b": ["c1", "s1"], "a": ("c2", "s2")})
    assert t2["b"] == ("c1", "s1") and t2.universe() == ["a", "b"]


def test_builder_gives_the_same_examples():
    """Negative sampling draws from the universe, side features come from the table: the same
    examples with an ItemTable and its universe() as with a dict and a sorted list."""
    plain = _table(500)
    rows = []
    for k in range(30):
        rows.append({"page_id": f"p{k}", "user_id": "u1", "item_id": f"i{k * 3}", "clicked": 1,
                     "timestamp": 100 + k, "position": 0, "trigger_item_id": f"i{k}",
                     "category_id": "", "seller_id": "", "is_history": 0,
                     "_origin": f"f.csv:{k + 2}"})
    cfg = BuildConfig(positives_only=True, negatives_per_positive=2, seed=5)
    out = []
    t = pickle.loads(pickle.dumps(compact(plain)))
    for table, universe in ((plain, sorted(plain)), (t, t.universe())):
        log, _ = organize_user("u1", [dict(r) for r in rows])
        out.append(list(UserExampleBuilder(cfg).build(log, table, universe, (120, 125),
                                                      Counter(), Counter())))
    assert out[0] == out[1] and len(out[0]) == 90
