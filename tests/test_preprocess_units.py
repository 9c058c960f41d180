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
    assert choose_context(labels, 0, 10, ("s",)) == [1, 2, 3, 4, 5]
    got = choose_context(labels, 1, 3, ("s", 1))
    assert got[:2] == [0, 2] and len(got) == 3 and got == sorted(got) and 1 not in got
    assert got == choose_context(labels, 1, 3, ("s", 1))  # seeded
    many = [1] * 8
    assert len(choose_context(many, 0, 3, ("s",))) == 3


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
