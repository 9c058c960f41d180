"""A small, deterministic, *learnable* fake dataset in exactly the Beam job's output format.

``write_fake_dataset(out_dir)`` writes::

    out_dir/{split}-00000-of-00001.tfrecord.gz   GZIP tf.train.Example, one per exposed item
    out_dir/feature_spec.json                    ctrcore.schema.FeatureSpec.create + save_spec
    out_dir/vocab/<name>.txt                     one raw id per line, most frequent first (train split)
    out_dir/stats.json                           the keys of docs/architecture.md section 1

Generative story (so that a short training reaches a validation AUC clearly above 0.5):

* every item has a category and a seller; every user has two preferred categories;
* a user's behaviour history (most recent first) is mostly made of items from the preferred
  categories; clicked items are prepended to it as pages go by;
* a page is opened by a trigger item (usually from a preferred category) and shows 2 ..
  ``max_context + 1`` items, about 40% of which share the trigger's category;
* ``P(click) = sigmoid(-2.2 + 2.4 [cat in preferred] + 1.5 [cat == trigger cat] + item bias)``.

So the click depends on the target's category vs. the history (attention / SIM search), vs. the
trigger (trigger-aware models) and on the item id (bias). The in-page context of an example is
the other items of its page (their labels are consistent with the page), the page statistics
count the whole page. Pages are split by time: first 80% train, next 10% valid, last 10% test.

Ids are strings with a type prefix ("i12", "c3", "s7", "u5", "g0"). Items that never occur in
the training split are not in the vocabulary and map to OOV (as in the Beam job).
"""
from __future__ import annotations

import collections
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from ctrcore import schema
from ctrcore.schema import LABEL_PAD, PAD, FeatureSpec, SpecConfig

DEFAULT_SPEC_CONFIG = SpecConfig(short_len=5, long_len=12, max_context=4)


def _p_s_plus(n0: float, n1: float) -> float:
    """CCN Eq. 9 from the average numbers of unclicked (N0) and clicked (N1) items per page."""
    n = n0 + n1
    if n <= 1:
        return 0.5
    return float((n0 * (n0 - 1) + n1 * (n1 - 1)) / (n * (n - 1)))


def _feature(fd: schema.FeatureDef, value):
    import tensorflow as tf

    if fd.dtype == "string":
        vals = [value] if not fd.shape else list(value)
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in vals]))
    if fd.dtype == "int64":
        vals = [int(value)] if not fd.shape else [int(v) for v in value]
        return tf.train.Feature(int64_list=tf.train.Int64List(value=vals))
    vals = [float(value)] if not fd.shape else [float(v) for v in value]
    return tf.train.Feature(float_list=tf.train.FloatList(value=vals))


def _pad(seq: Sequence, n: int, pad) -> list:
    seq = list(seq)[:n]
    return seq + [pad] * (n - len(seq))


def write_fake_dataset(out_dir: str, n_examples: int = 2000, seed: int = 0,
                       spec_config: SpecConfig = DEFAULT_SPEC_CONFIG, n_items: int = 200,
                       splits: Sequence[str] = ("train", "valid", "test"), n_users: Optional[int] = None,
                       n_categories: int = 8, n_sellers: int = 12) -> FeatureSpec:
    """Write a fake dataset with about ``n_examples`` examples in total (all splits) to ``out_dir``.

    Deterministic for a given ``seed``; ~2000 examples take well under a second to write.
    ``splits`` lists the splits to write (a subset of train/valid/test); the time split is always
    80/10/10 so the content of a split does not depend on which others are written.
    Profile columns of ``spec_config.user_profile`` get 3 random values per user each.
    Returns the :class:`FeatureSpec` (with ``root=out_dir``).
    """
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    cfg = spec_config
    n_users = n_users or max(10, n_examples // 40)
    item_cat = rng.randint(0, n_categories, size=n_items)
    item_seller = rng.randint(0, n_sellers, size=n_items)
    item_bias = rng.normal(0.0, 0.5, size=n_items)
    items_of_cat = [np.flatnonzero(item_cat == c) for c in range(n_categories)]
    items_of_cat = [a if len(a) else np.arange(n_items) for a in items_of_cat]
    pref = np.stack([rng.choice(n_categories, size=2, replace=False) for _ in range(n_users)])
    profile = {p: rng.randint(0, 3, size=n_users) for p in cfg.user_profile}

    def draw_item(u: int, p_pref: float) -> int:
        if rng.rand() < p_pref:
            return int(rng.choice(items_of_cat[int(pref[u, rng.randint(2)])]))
        return int(rng.randint(n_items))

    # initial histories: ~60% short (0-3), ~30% medium (4-10), ~10% long (11-30)
    history: List[List[int]] = []
    n_history_rows = 0
    for u in range(n_users):
        r = rng.rand()
        n = rng.randint(0, 4) if r < 0.6 else rng.randint(4, 11) if r < 0.9 else rng.randint(11, 31)
        history.append([draw_item(u, 0.8) for _ in range(n)])
        n_history_rows += n

    # pages
    pages = []  # (user, trigger, items, labels, history snapshot (most recent first), ts)
    total, ts = 0, 1_600_000_000
    while total < n_examples:
        u = int(rng.randint(n_users))
        trig = draw_item(u, 0.7)
        size = int(rng.randint(2, cfg.max_context + 2))
        items, labels = [], []
        for _ in range(size):
            if rng.rand() < 0.4:
                it = int(rng.choice(items_of_cat[item_cat[trig]]))
            else:
                it = int(rng.randint(n_items))
            c = item_cat[it]
            logit = -2.2 + 2.4 * (c in pref[u]) + 1.5 * (c == item_cat[trig]) + item_bias[it]
            items.append(it)
            labels.append(int(rng.rand() < 1.0 / (1.0 + np.exp(-logit))))
        pages.append((u, trig, items, labels, list(history[u]), ts))
        for it, y in zip(items, labels):
            if y:
                history[u].insert(0, it)
        ts += int(rng.randint(1, 60))
        total += size

    n_pages = len(pages)
    bounds = {"train": (0, int(0.8 * n_pages)), "valid": (int(0.8 * n_pages), int(0.9 * n_pages)),
              "test": (int(0.9 * n_pages), n_pages)}
    unknown = set(splits) - set(bounds)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}")

    iid = lambda i: f"i{i}"
    side_value = {"item_id": lambda i: f"i{i}", "category_id": lambda i: f"c{item_cat[i]}",
                  "seller_id": lambda i: f"s{item_seller[i]}"}

    def examples_of_page(pi: int):
        u, trig, items, labels, hist, t = pages[pi]
        for j, (it, y) in enumerate(zip(items, labels)):
            ctx = [(items[k], labels[k]) for k in range(len(items)) if k != j][: cfg.max_context]
            v = {"user_id": f"u{u}", "label": y, "page_id": f"p{pi}", "timestamp": t,
                 "history_length": len(hist), "page_num_clicked": sum(labels),
                 "page_num_unclicked": len(labels) - sum(labels),
                 "context_labels": _pad([l for _, l in ctx], cfg.max_context, LABEL_PAD)}
            for p in cfg.user_profile:
                v[schema.USER_PROFILE_PREFIX + p] = f"g{profile[p][u]}"
            for side in cfg.item_side:
                f = side_value[side]
                v[side] = f(it)
                v["trigger_" + side] = f(trig)
                v[f"short_{side}s"] = _pad([f(h) for h in hist[: cfg.short_len]], cfg.short_len, PAD)
                v[f"long_{side}s"] = _pad([f(h) for h in hist[: cfg.long_len]], cfg.long_len, PAD)
                v[f"context_{side}s"] = _pad([f(c) for c, _ in ctx], cfg.max_context, PAD)
            yield v

    os.makedirs(os.path.join(out_dir, "vocab"), exist_ok=True)
    spec = FeatureSpec.create(cfg, root=out_dir)
    schema.save_spec(spec, out_dir)

    # vocabularies from the training split: most frequent first, ties by id
    counts: Dict[str, collections.Counter] = {v: collections.Counter() for v in spec.vocabularies}
    train_examples = [e for pi in range(*bounds["train"]) for e in examples_of_page(pi)]
    for e in train_examples:
        for name, fd in spec.features.items():
            if fd.vocab:
                vals = [e[name]] if not fd.shape else e[name]
                counts[fd.vocab].update(x for x in vals if x != PAD)
    for vocab, cnt in counts.items():
        with open(spec.vocab_path(vocab), "w") as fh:
            for k, _ in sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0])):
                fh.write(k + "\n")

    opts = tf.io.TFRecordOptions(compression_type="GZIP")
    n_ex: Dict[str, int] = {}
    for split in splits:
        lo, hi = bounds[split]
        path = os.path.join(out_dir, f"{split}-00000-of-00001.tfrecord.gz")
        n_ex[split] = 0
        with tf.io.TFRecordWriter(path, opts) as w:
            for pi in range(lo, hi):
                for e in examples_of_page(pi):
                    ex = tf.train.Example(features=tf.train.Features(feature={
                        k: _feature(fd, e[k]) for k, fd in spec.features.items()}))
                    w.write(ex.SerializeToString())
                    n_ex[split] += 1

    # stats
    tr_pages = [pages[pi] for pi in range(*bounds["train"])]
    n1 = float(np.mean([sum(p[3]) for p in tr_pages])) if tr_pages else 0.0
    n0 = float(np.mean([len(p[3]) - sum(p[3]) for p in tr_pages])) if tr_pages else 0.0
    hl = np.array([e["history_length"] for e in train_examples] or [0])
    user_len: Dict[str, int] = {}
    for e in train_examples:
        user_len[e["user_id"]] = max(user_len.get(e["user_id"], 0), e["history_length"])
    ul = np.array(list(user_len.values()) or [0])
    t1 = int(np.quantile(ul, 0.6)) + 1
    t2 = max(t1 + 1, int(np.quantile(ul, 0.9)) + 1)
    p_plus = _p_s_plus(n0, n1)
    n_exposures = sum(len(p[2]) for p in pages)
    stats = {
        "rows_read": n_exposures + n_history_rows,
        "rows_used": n_exposures + n_history_rows,
        "rows_dead_letter": 0,
        "dead_letter_reasons": {},
        "negatives_sampled": 0,
        "pages": {s: bounds[s][1] - bounds[s][0] for s in splits},
        "examples": n_ex,
        "avg_clicked_per_page": n1,
        "avg_unclicked_per_page": n0,
        "p_s_plus": p_plus,
        "p_s_minus": 1.0 - p_plus,
        "mean_history_length": float(hl.mean()),
        "activeness_thresholds": [t1, t2],
        "source": "fake",
        "seed": seed,
        "split": {"method": "time", "fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}},
    }
    with open(os.path.join(out_dir, schema.STATS_FILENAME), "w") as fh:
        json.dump(stats, fh, indent=1, sort_keys=True)
    return spec
