"""Offline CTR metrics, pure NumPy (no TensorFlow import).

All functions take 1-D array-likes and return Python floats (``nan`` where a metric is undefined,
e.g. AUC of a single class). Definitions:

* :func:`auc` - ROC AUC = P(score(pos) > score(neg)) + 0.5 P(tie): the Mann-Whitney statistic with
  average ranks for ties; equal to ``sklearn.metrics.roc_auc_score``.
* :func:`logloss` - mean binary cross-entropy with probabilities clipped to ``[eps, 1-eps]``.
* :func:`gauc` - group (user) AUC: the AUC within each user, averaged over the users that have
  *both* a clicked and an unclicked impression, **weighted by each such user's number of
  impressions** (the usual GAUC of DIN / Zhou et al. 2018). Users with a single class are skipped
  (their AUC is undefined). :func:`gauc_unweighted` is the plain mean over the same users.
* :func:`page_auc` - the AUC within each page (request), averaged *unweighted* over the pages
  that have both labels.
* :func:`relaimpr` - AQCL Eq. 9, in percent: ``((auc - 0.5) / (base_auc - 0.5) - 1) * 100``.
  Aggregation over seeds and the results tables built on it: :mod:`ctrcore.reporting`.
* :func:`activeness_group` - 0/1/2 = non/slightly/highly active from the history length and the
  ``activeness_thresholds`` ``[t1, t2]`` of ``stats.json``: ``L < t1``, ``t1 <= L < t2``,
  ``L >= t2`` (AQCL Sec. 3 / 5.2.3).
* :func:`evaluate_predictions` - all of the above, overall and per activeness group.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

GROUP_NAMES = ("non_active", "slightly_active", "highly_active")
METRIC_KEYS = ("auc", "logloss", "gauc", "gauc_unweighted", "page_auc", "n", "n_pos", "ctr",
               "mean_prob", "gauc_groups", "page_auc_groups")


def _as_1d(x, dtype=None) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        a = a.reshape(-1)
    return a


def _check_labels(labels: np.ndarray) -> np.ndarray:
    y = _as_1d(labels)
    if y.size and not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[(y != 0) & (y != 1)])[:5]
        raise ValueError(f"labels must be 0/1, got values {bad.tolist()}")
    return y.astype(np.int8)


def _group_ids(keys) -> np.ndarray:
    """Dense int ids 0..G-1 for arbitrary hashable keys (strings, bytes, ints)."""
    k = _as_1d(keys)
    if k.dtype == object:
        k = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in k])
    _, inv = np.unique(k, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def grouped_auc(labels, scores, groups) -> Dict[str, np.ndarray]:
    """AUC within every group, vectorised (O(n log n) overall).

    Returns a dict of arrays indexed by dense group id: ``auc`` (nan where the group lacks one
    class), ``n`` (impressions), ``n_pos``.
    """
    y = _check_labels(labels)
    s = _as_1d(scores, np.float64)
    g = _as_1d(groups).astype(np.int64)
    if not (len(y) == len(s) == len(g)):
        raise ValueError(f"length mismatch: labels {len(y)}, scores {len(s)}, groups {len(g)}")
    if np.any(np.isnan(s)):
        raise ValueError("scores contain NaN")
    n_groups = int(g.max()) + 1 if g.size else 0
    if n_groups == 0:
        empty = np.zeros(0)
        return {"auc": empty, "n": empty.astype(np.int64), "n_pos": empty.astype(np.int64)}
    order = np.lexsort((s, g))  # by group, then score ascending
    gs, ss, ys = g[order], s[order], y[order]
    n = np.bincount(gs, minlength=n_groups)
    n_pos = np.bincount(gs, weights=ys, minlength=n_groups).astype(np.int64)
    n_neg = n - n_pos
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    pos_in_group = np.arange(len(gs)) - starts[gs] + 1  # 1-based rank within the group
    # runs of equal (group, score): average the ranks inside each run
    new_run = np.ones(len(gs), dtype=bool)
    new_run[1:] = (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])
    run_id = np.cumsum(new_run) - 1
    run_first = pos_in_group[new_run]
    run_len = np.bincount(run_id)
    avg_rank = run_first + (run_len - 1) / 2.0
    ranks = avg_rank[run_id]
    r_pos = np.bincount(gs, weights=ranks * ys, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = r_pos - n_pos * (n_pos + 1) / 2.0
        auc_g = u / (n_pos * n_neg)
    auc_g = np.where((n_pos > 0) & (n_neg > 0), auc_g, np.nan)
    return {"auc": auc_g, "n": n.astype(np.int64), "n_pos": n_pos}


def auc(labels, scores) -> float:
    """ROC AUC with average-rank tie handling (== sklearn roc_auc_score); nan for one class."""
    y = _as_1d(labels)
    if y.size == 0:
        return float("nan")
    return float(grouped_auc(y, scores, np.zeros(len(y), np.int64))["auc"][0])


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities clipped to [eps, 1 - eps]."""
    y = _check_labels(labels).astype(np.float64)
    p = np.clip(_as_1d(probs, np.float64), eps, 1.0 - eps)
    if y.size == 0:
        return float("nan")
    if len(y) != len(p):
        raise ValueError(f"length mismatch: labels {len(y)}, probs {len(p)}")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def _gauc(labels, scores, groups, weighted: bool):
    r = grouped_auc(labels, scores, _group_ids(groups))
    ok = ~np.isnan(r["auc"])
    if not ok.any():
        return float("nan"), 0
    w = r["n"][ok].astype(np.float64) if weighted else np.ones(int(ok.sum()))
    return float(np.sum(r["auc"][ok] * w) / np.sum(w)), int(ok.sum())


def gauc(labels, scores, user_ids) -> float:
    """Per-user AUC averaged over users having both labels, weighted by the user's impressions."""
    return _gauc(labels, scores, user_ids, weighted=True)[0]


def gauc_unweighted(labels, scores, user_ids) -> float:
    """Per-user AUC averaged (unweighted) over users having both labels."""
    return _gauc(labels, scores, user_ids, weighted=False)[0]


def page_auc(labels, scores, page_ids) -> float:
    """Mean (unweighted) AUC within the pages that have both a clicked and an unclicked item."""
    return _gauc(labels, scores, page_ids, weighted=False)[0]


RELAIMPR_MIN_BASE_LIFT = 0.01


def relaimpr(auc_value: float, base_auc: float, min_base_lift: float = RELAIMPR_MIN_BASE_LIFT) -> float:
    """AQCL Eq. 9 in percent: ((AUC(target) - 0.5) / (AUC(base) - 0.5) - 1) * 100.

    nan when either value is missing/nan or the base is not at least ``min_base_lift`` above
    0.5: Eq. 9 divides by the base's lift over chance, so a base at (or below) chance gives
    arbitrary numbers (a base of 0.497 turns +0.01 AUC into -300 %).
    """
    if auc_value is None or base_auc is None:
        return float("nan")
    a, b = float(auc_value), float(base_auc)
    if math.isnan(a) or math.isnan(b) or b - 0.5 < min_base_lift:
        return float("nan")
    return ((a - 0.5) / (b - 0.5) - 1.0) * 100.0


def activeness_group(history_length, thresholds: Sequence[float]):
    """0 = non-active (L < t1), 1 = slightly active (t1 <= L < t2), 2 = highly active (L >= t2).

    Works on a scalar (returns int) or an array (returns an int array).
    """
    if thresholds is None or len(thresholds) != 2:
        raise ValueError(f"activeness thresholds must be [t1, t2], got {thresholds!r}")
    t1, t2 = float(thresholds[0]), float(thresholds[1])
    if t1 > t2:
        raise ValueError(f"activeness thresholds must satisfy t1 <= t2, got {thresholds!r}")
    L = np.asarray(history_length)
    out = (L >= t1).astype(np.int64) + (L >= t2).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def _metrics_block(y, p, users, pages) -> dict:
    n = int(len(y))
    d = {"n": n, "n_pos": int(np.sum(y)) if n else 0}
    d["ctr"] = float(np.mean(y)) if n else float("nan")
    d["mean_prob"] = float(np.mean(p)) if n else float("nan")
    d["auc"] = auc(y, p) if n else float("nan")
    d["logloss"] = logloss(y, p) if n else float("nan")
    if n and users is not None:
        d["gauc"], d["gauc_groups"] = _gauc(y, p, users, weighted=True)
        d["gauc_unweighted"] = _gauc(y, p, users, weighted=False)[0]
    else:
        d["gauc"], d["gauc_groups"], d["gauc_unweighted"] = float("nan"), 0, float("nan")
    if n and pages is not None:
        d["page_auc"], d["page_auc_groups"] = _gauc(y, p, pages, weighted=False)
    else:
        d["page_auc"], d["page_auc_groups"] = float("nan"), 0
    return d


def evaluate_predictions(labels, probs, user_ids=None, page_ids=None, history_lengths=None,
                         thresholds: Optional[Sequence[float]] = None) -> dict:
    """All metrics overall and per activeness group.

    Returns ``{auc, logloss, gauc, gauc_unweighted, page_auc, n, n_pos, ctr, mean_prob,
    gauc_groups (users counted in GAUC), page_auc_groups (pages counted), groups: {non_active,
    slightly_active, highly_active: {same keys}}}``. ``groups`` is empty when history lengths or
    thresholds are not given. Undefined values are ``nan`` (see :func:`to_jsonable`).
    """
    y = _check_labels(labels)
    p = _as_1d(probs, np.float64)
    if len(y) != len(p):
        raise ValueError(f"length mismatch: labels {len(y)}, probs {len(p)}")
    users = None if user_ids is None else _as_1d(user_ids)
    pages = None if page_ids is None else _as_1d(page_ids)
    for name, a in (("user_ids", users), ("page_ids", pages)):
        if a is not None and len(a) != len(y):
            raise ValueError(f"length mismatch: labels {len(y)}, {name} {len(a)}")
    out = _metrics_block(y, p, users, pages)
    out["groups"] = {}
    if history_lengths is not None and thresholds is not None:
        hl = _as_1d(history_lengths)
        if len(hl) != len(y):
            raise ValueError(f"length mismatch: labels {len(y)}, history_lengths {len(hl)}")
        grp = activeness_group(hl, thresholds)
        for gi, gname in enumerate(GROUP_NAMES):
            m = grp == gi
            out["groups"][gname] = _metrics_block(
                y[m], p[m], None if users is None else users[m], None if pages is None else pages[m])
        out["thresholds"] = [float(t) for t in thresholds]
    return out


def to_jsonable(obj):
    """Recursively turn numpy scalars into Python ones and nan/inf into None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if (math.isnan(f) or math.isinf(f)) else f
    return obj
