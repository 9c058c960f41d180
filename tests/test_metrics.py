"""ctrcore.metrics against hand-computed values and an O(n^2) pairwise reference."""
import math
import sys

import numpy as np
import pytest

from ctrcore import metrics as M


def pairwise_auc(y, s):
    """Reference: P(s_pos > s_neg) + 0.5 P(tie) over all (pos, neg) pairs."""
    pos = [si for yi, si in zip(y, s) if yi == 1]
    neg = [si for yi, si in zip(y, s) if yi == 0]
    if not pos or not neg:
        return float("nan")
    tot = 0.0
    for a in pos:
        for b in neg:
            tot += 1.0 if a > b else (0.5 if a == b else 0.0)
    return tot / (len(pos) * len(neg))


def test_auc_hand_computed():
    # pairs (pos, neg): (0.8,0.1) win, (0.8,0.4) win, (0.35,0.1) win, (0.35,0.4) loss -> 3/4
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.auc([1, 0], [0.2, 0.9]) == 0.0
    assert M.auc([1, 0], [0.5, 0.5]) == 0.5  # tie counts half
    # ties across classes: pos {0.5, 0.7}, neg {0.5, 0.2}: 0.5 + 1 + 1 + 1 = 3.5 / 4
    assert M.auc([1, 1, 0, 0], [0.5, 0.7, 0.5, 0.2]) == pytest.approx(0.875)


def test_auc_single_class_is_nan():
    assert math.isnan(M.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(M.auc([0, 0], [0.1, 0.2]))
    assert math.isnan(M.auc([], []))


def test_auc_matches_pairwise_reference_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 80))
        y = rng.integers(0, 2, n)
        s = rng.integers(0, 6, n) / 5.0  # heavy ties
        ref = pairwise_auc(y, s)
        got = M.auc(y, s)
        if math.isnan(ref):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(ref, abs=1e-12)


def test_auc_invariant_to_monotone_transform_and_rejects_bad_labels():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500)
    assert M.auc(y, s) == pytest.approx(M.auc(y, 1 / (1 + np.exp(-3 * s))))
    with pytest.raises(ValueError, match="0/1"):
        M.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        M.auc([0, 1, 1], [0.1, 0.2])


def test_logloss_hand_computed_and_clipped():
    assert M.logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert M.logloss([1, 0], [0.9, 0.2]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    v = M.logloss([1, 0], [0.0, 1.0])  # clipped, finite
    assert math.isfinite(v) and v == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_gauc_weighted_and_unweighted_hand_computed():
    # user a: 4 impressions, AUC 0.75; user b: 2 impressions, AUC 0.0; user c: one class -> skipped
    y = [0, 0, 1, 1, 1, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.6]
    u = ["a", "a", "a", "a", "b", "b", "c", "c"]
    assert M.gauc(y, s, u) == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)
    assert M.gauc_unweighted(y, s, u) == pytest.approx((0.75 + 0.0) / 2)
    assert math.isnan(M.gauc([1, 1], [0.1, 0.2], ["x", "y"]))


def test_grouped_auc_matches_pairwise_per_group():
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 10, n).astype(float)
    g = rng.integers(0, 15, n)
    r = M.grouped_auc(y, s, g)
    w_num = w_den = 0.0
    for gi in range(15):
        m = g == gi
        ref = pairwise_auc(y[m], s[m])
        if math.isnan(ref):
            assert math.isnan(r["auc"][gi])
        else:
            assert r["auc"][gi] == pytest.approx(ref, abs=1e-12)
            w_num += ref * m.sum()
            w_den += m.sum()
    assert M.gauc(y, s, g) == pytest.approx(w_num / w_den)
    # string / bytes ids group identically
    assert M.gauc(y, s, [f"u{x}".encode() for x in g]) == pytest.approx(w_num / w_den)


def test_page_auc_is_unweighted_mean_over_pages_with_both_labels():
    y = [1, 0, 0, 1, 0, 1, 1]
    s = [0.9, 0.1, 0.2, 0.3, 0.6, 0.5, 0.4]
    p = ["p1", "p1", "p1", "p2", "p2", "p3", "p3"]
    # p1: AUC 1; p2: pos .3 vs neg .6 -> 0; p3 one class -> skipped
    assert M.page_auc(y, s, p) == pytest.approx(0.5)


def test_relaimpr_eq9():
    assert M.relaimpr(0.7078, 0.6956) == pytest.approx(6.24, abs=0.01)  # AQCL Table 2, Amazon
    assert M.relaimpr(0.6929, 0.6956) == pytest.approx(-1.38, abs=0.01)
    assert M.relaimpr(0.6956, 0.6956) == 0.0
    assert math.isnan(M.relaimpr(0.7, 0.5))
    assert math.isnan(M.relaimpr(float("nan"), 0.7))
    assert math.isnan(M.relaimpr(None, 0.7))
    # a base at or near chance has no lift to relate to (MIND stand-in: TAN at 0.497)
    assert math.isnan(M.relaimpr(0.5058, 0.4969)) and math.isnan(M.relaimpr(0.52, 0.505))
    assert M.relaimpr(0.52, 0.51) == pytest.approx(100.0)


def test_activeness_group_boundaries():
    th = [3, 10]
    assert [M.activeness_group(L, th) for L in (0, 2, 3, 9, 10, 50)] == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(M.activeness_group(np.array([0, 3, 10]), th), [0, 1, 2])
    with pytest.raises(ValueError):
        M.activeness_group(1, [5, 2])
    with pytest.raises(ValueError):
        M.activeness_group(1, [5])


def test_evaluate_predictions_keys_and_groups():
    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    users = rng.integers(0, 40, n).astype(str)
    pages = rng.integers(0, 120, n).astype(str)
    hl = rng.integers(0, 30, n)
    r = M.evaluate_predictions(y, p, users, pages, hl, [5, 20])
    for k in ("auc", "logloss", "gauc", "page_auc", "n", "groups"):
        assert k in r
    assert r["n"] == n
    assert r["auc"] == pytest.approx(pairwise_auc(y, p))
    assert set(r["groups"]) == {"non_active", "slightly_active", "highly_active"}
    sizes = [r["groups"][g]["n"] for g in M.GROUP_NAMES]
    assert sum(sizes) == n
    assert sizes == [int((hl < 5).sum()), int(((hl >= 5) & (hl < 20)).sum()), int((hl >= 20).sum())]
    m = hl >= 20
    assert r["groups"]["highly_active"]["auc"] == pytest.approx(pairwise_auc(y[m], p[m]))
    for g in M.GROUP_NAMES:
        for k in ("auc", "logloss", "gauc", "page_auc", "n"):
            assert k in r["groups"][g]
    # an empty group has nan metrics and n == 0; to_jsonable makes strict JSON of it
    r2 = M.evaluate_predictions(y, p, users, pages, np.zeros(n, int), [5, 20])
    assert r2["groups"]["highly_active"]["n"] == 0
    j = M.to_jsonable(r2)
    assert j["groups"]["highly_active"]["auc"] is None
    import json
    json.dumps(j, allow_nan=False)


def test_metrics_module_does_not_import_tensorflow():
    import subprocess
    code = "import sys, ctrcore.metrics; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
