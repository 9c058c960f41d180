#!/usr/bin/env python
"""What signal the MIND stand-in leaves to an id-based CTR model (why every model sits near
AUC 0.5 on its time split).

    python scripts/mind_diagnostics.py --data_dir=out/mind/data [--json=results/mind_diagnostics.json]

Reads the preprocessed TFRecords (train / test) and prints, all computed here:

* the share of test exposures whose item id never occurs as a train *target* (and as any
  train feature: the vocabulary), and the CTR of seen vs unseen items;
* the share of test exposures with a non-empty category;
* the log loss of the constant train CTR on test (a model must beat it);
* the test AUC of two non-learned scores: the item's smoothed train CTR, and its train
  exposure count (popularity), over all test exposures and over those with a seen item.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def auc(labels, scores) -> float:
    """Rank AUC with ties counted half (Mann-Whitney U)."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    pos = labels > 0.5
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def load(data_dir: str, split: str, names):
    from ctrcore import data

    cols = collections.defaultdict(list)
    for b in data.make_dataset(data_dir, split, 4096, shuffle=False, features=names):
        for k in names:
            cols[k].append(b[k].numpy())
    return {k: np.concatenate(v) for k, v in cols.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default="out/mind/data")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    from ctrcore import schema

    spec = schema.load_spec(a.data_dir)
    label = spec.label
    names = ["item_id", label, "category_id"]
    tr, te = load(a.data_dir, "train", names), load(a.data_dir, "test", names)
    vocab = set(v.encode() for v in spec.read_vocab(spec.features["item_id"].vocab))
    n, c = collections.Counter(tr["item_id"]), collections.Counter()
    for i, l in zip(tr["item_id"], tr[label]):
        c[i] += int(l)
    p = float(tr[label].mean())
    seen = np.array([i in n for i in te["item_id"]])
    in_vocab = np.array([i in vocab for i in te["item_id"]])
    y = te[label].astype(np.float64)
    ctr = np.array([(c[i] + p * 10) / (n[i] + 10) for i in te["item_id"]])  # smoothed item CTR
    pop = np.array([n[i] for i in te["item_id"]], dtype=np.float64)
    q = min(max(p, 1e-6), 1 - 1e-6)
    res = {
        "data_dir": a.data_dir,
        "test_exposures": int(len(y)),
        "train_exposures": int(len(tr[label])),
        "train_ctr": p, "test_ctr": float(y.mean()),
        "test_share_item_seen_as_train_target": float(seen.mean()),
        "test_share_item_in_vocabulary": float(in_vocab.mean()),
        "test_ctr_seen_items": float(y[seen].mean()) if seen.any() else None,
        "test_ctr_unseen_items": float(y[~seen].mean()) if (~seen).any() else None,
        "test_share_with_category": float((te["category_id"] != b"").mean()),
        "constant_train_ctr_test_logloss": float(-(y * math.log(q) + (1 - y) * math.log(1 - q)).mean()),
        "auc_item_train_ctr_all": auc(y, ctr),
        "auc_item_train_ctr_seen": auc(y[seen], ctr[seen]) if seen.any() else None,
        "auc_item_popularity_all": auc(y, pop),
        "auc_seen_vs_unseen_indicator": auc(y, seen.astype(np.float64)),
    }
    for k, v in res.items():
        print(f"{k:40s} {v:.4f}" if isinstance(v, float) else f"{k:40s} {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
