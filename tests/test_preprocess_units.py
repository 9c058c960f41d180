"""Unit tests of the pure parts of the preprocessing job: the fast tf.Example encoder, context
choice, negative sampling, split cutoffs, activeness thresholds, CCN Eq. 9."""
from __future__ import annotations

import random

import pytest

from pipelines import tfexample as tfx
from pipelines.examples import choose_context
from pipelines.negatives import sample_negatives, stable_random
from pipelines.stats import activeness_thresholds, p_s_plus, time_cutoffs
from pipelines.vocab import vocab_lines


def test_encoder_matches_tf_example():
    import tensorflow as tf

    entries = [tfx.bytes_entry("ids", ["a", "", "é" * 200]),
               tfx.int64_entry("labels", [1, 0, -1, 2 ** 40]),
               tfx.int64_entry("empty", []),
               tfx.bytes_entry("k" * 300, ["x"])]
    ex = tf.train.Example.FromString(tfx.example(entries))
    f = ex.features.feature
    assert list(f["ids"].bytes_list.value) == [b"a", b"", ("é" * 200).encode()]
    assert list(f["labels"].int64_list.value) == [1, 0, -1, 2 ** 40]
    assert f["empty"].WhichOneof("kind") == "int64_list"
    assert list(f["k" * 300].bytes_list.value) == [b"x"]
    parsed = tf.io.parse_example(
        [tfx.example(entries)],
        {"ids": tf.io.FixedLenFeature([3], tf.string), "labels": tf.io.FixedLenFeature([4], tf.int64)})
    assert parsed["labels"].numpy().tolist() == [[1, 0, -1, 2 ** 40]]


def test_choose_context():
    labels = [1, 0, 1, 0, 0, 0]
    for mode in ("stratified", "clicked_first"):
        assert choose_context(labels, 0, 10, ("s",), sampling=mode) == [1, 2, 3, 4, 5]
        got = choose_context(labels, 1, 3, ("s", 1), sampling=mode)
        assert len(got) == 3 and got == sorted(got) and 1 not in got
        assert got == choose_context(labels, 1, 3, ("s", 1), sampling=mode)  # seeded
        assert len(choose_context([1] * 8, 0, 3, ("s",), sampling=mode)) == 3
        assert len(choose_context([0] * 8, 0, 3, ("s",), sampling=mode)) == 3
    # clicked first: both clicked items, then one unclicked
    assert choose_context(labels, 1, 3, ("s", 1), sampling="clicked_first")[:2] == [0, 2]
    with pytest.raises(ValueError, match="context sampling"):
        choose_context(labels, 1, 3, ("s",), sampling="first")


def test_stratified_context_keeps_the_page_label_mix():
    """A 101-item page, 10 clicked: over many targets and seeds the stratified context of 20
    holds 20 * 10/100 = 2 clicked items on average (clicked-first: all 10, 5x the page's
    share); every draw is within one of the share, and within what each label has."""
    from collections import Counter

    labels = [1] * 10 + [0] * 91
    strat, first = Counter(), Counter()
    n = 0
    for seed in range(40):
        for t in range(10, 101, 9):  # unclicked targets: 10 clicked others out of 100
            ctx = choose_context(labels, t, 20, ("s", seed, t))
            k = sum(labels[j] for j in ctx)
            strat[k] += 1
            first[sum(labels[j] for j in choose_context(labels, t, 20, ("s", seed, t),
                                                        sampling="clicked_first"))] += 1
            assert len(ctx) == 20 and t not in ctx
            n += 1
    mean = sum(k * c for k, c in strat.items()) / n
    assert abs(mean - 2.0) < 0.15, strat
    assert set(strat) <= {2}  # 20 * 10/100 = 2 exactly: no rounding left
    assert set(first) == {10}
    from pipelines.examples import stratified_counts

    rng = random.Random(0)
    draws = [stratified_counts(3, 97, 20, rng)[0] for _ in range(4000)]  # share 0.6
    assert set(draws) <= {0, 1} and abs(sum(draws) / len(draws) - 0.6) < 0.03
    for _ in range(500):  # within what each label has, the share rounded down or up
        c, u = rng.randint(0, 60), rng.randint(0, 60)
        cap = rng.randint(1, max(1, c + u - 1))
        if c + u <= cap:
            continue
        kc, ku = stratified_counts(c, u, cap, rng)
        share = cap * c / (c + u)
        assert kc + ku == cap and 0 <= kc <= c and 0 <= ku <= u and int(share) <= kc <= share + 1


def test_sample_negatives_excludes_and_is_seeded():
    universe = [f"i{k}" for k in range(50)]
    excluded = set(universe[:45])
    for seed in range(20):
        got = sample_negatives(stable_random(seed, "u"), universe, excluded, 3)
        assert len(got) == len(set(got)) == 3 and not set(got) & excluded
        assert got == sample_negatives(stable_random(seed, "u"), universe, excluded, 3)
    # fewer candidates than asked: all of them, no repeats
    assert sorted(sample_negatives(random.Random(0), universe, set(universe[2:]), 5)) == ["i0", "i1"]
    assert sample_negatives(random.Random(0), universe, set(universe), 2) == []


def test_time_cutoffs():
    hist = {t: 1 for t in range(10)}
    assert time_cutoffs(hist, 0.1, 0.1) == (8, 9)
    assert time_cutoffs(hist, 0.0, 0.0) == (float("inf"), float("inf"))
    # ties at the cutoff go to the later split together
    assert time_cutoffs({1: 5, 2: 5}, 0.0, 0.2) == (2, 2)
    with pytest.raises(ValueError):
        time_cutoffs(hist, 0.6, 0.6)


def test_activeness_thresholds_split_users_60_30_10():
    hist = {L: 1 for L in range(100)}
    t1, t2 = activeness_thresholds(hist)
    Ls = list(range(100))
    assert sum(L < t1 for L in Ls) == 60 and sum(t1 <= L < t2 for L in Ls) == 30
    assert activeness_thresholds({}) == [0, 0]


def test_p_s_plus_eq9():
    assert p_s_plus(2, 2) == pytest.approx((2 + 2) / 12)
    assert p_s_plus(3, 0) == 1.0


def test_vocab_lines_order_and_min_freq():
    assert vocab_lines([("b", 2), ("a", 2), ("c", 5), ("d", 1), ("", 9)], 2) == ["c", "a", "b"]
