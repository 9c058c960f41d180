"""Deterministic generator of realistic, trigger-induced exposure logs (canonical schema).

``python -m pipelines.synthetic --output=PATH --rows=N --seed=S [--format=csv|jsonl|parquet]``

The planted structure (all of it driven by one ``numpy.random.Generator(seed)``):

* **Items** have a Zipf popularity (``rank ** -zipf_a``), belong to a category (category sizes
  are themselves power-law) and to a seller that sells in that category. An item's latent vector
  is its category vector plus noise (plus a small seller vector).
* **Users** belong to latent interest clusters; each cluster prefers a few categories (85 % of
  its preference mass) and its centre is the weighted mean of those categories' vectors; a
  user's latent vector is the centre plus noise. Profile columns ``user_gender`` and
  ``user_age`` are drawn from cluster-dependent distributions (so they carry some signal).
* **Activeness**: 60 / 30 / 10 % of users are non / slightly / highly active with 1-2 / 3-10 /
  11-50 pages each; pages are spread uniformly over the time window.
* **Pages** (5-30 items): each page is opened by a trigger item. With probability
  ``p_trigger_interest`` (0.8) the trigger comes from the user's interest categories
  ("trigger-driven entry"), otherwise it is a globally popular item ("entry driven by the
  mini-app"). The page's items are drawn ~45 % from the trigger's category, ~30 % from the
  user's cluster categories and ~25 % from global (tempered) popularity; the trigger itself and
  duplicates are never shown (CCN excludes the forced top trigger item).
* **Clicks**: ``logit = b0 + 1.2 z(user.item) + w_t z(trigger.item) + 0.25 z(log pop)
  + user_bias - 0.35 log1p(position)`` with ``w_t = 0.8`` for trigger-driven and ``0.1`` for
  mini-app-driven pages; ``b0`` is solved (bisection) so the expected CTR equals
  ``target_ctr``. Positions are the order of a noisy version of the same score (a recommender
  ranked the page), position 0 = top. Hence clicks on a page share latent structure: co-click
  pairs are more category-concentrated than mono-click pairs, which is the signal CCN's and
  AQCL's contrastive losses need.

Ids are prefixed strings (``p``/``u``/``i``/``c``/``s``); ``timestamp`` is unix seconds and
increases with ``page_id`` (pages are numbered in time order).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd

COLUMNS = ("page_id", "user_id", "item_id", "clicked", "timestamp", "position",
           "trigger_item_id", "category_id", "seller_id")
PROFILE_COLUMNS = ("user_gender", "user_age")
GENDERS = ("F", "M", "U")
AGES = ("18-24", "25-34", "35-44", "45-54", "55+")
FORMATS = ("csv", "jsonl", "parquet")


@dataclasses.dataclass
class SyntheticConfig:
    """Knobs of the generator. ``None`` sizes are derived from ``rows``."""

    rows: int = 100_000
    seed: int = 0
    n_items: Optional[int] = None
    n_categories: Optional[int] = None
    n_clusters: int = 24
    latent_dim: int = 16
    zipf_a: float = 1.05          # item popularity exponent
    candidate_temper: float = 0.6  # candidate sampling uses popularity ** temper
    page_min: int = 5
    page_max: int = 30
    activeness: Tuple[float, float, float] = (0.6, 0.3, 0.1)
    pages_per_user: Tuple[Tuple[int, int], ...] = ((1, 2), (3, 10), (11, 50))
    p_trigger_interest: float = 0.8
    mix: Tuple[float, float, float] = (0.45, 0.30, 0.25)  # trigger cat / user cats / popular
    target_ctr: float = 0.08
    start_ts: int = 1_700_000_000
    days: int = 30
    with_profile: bool = True

    def sizes(self) -> Tuple[int, int]:
        n_items = self.n_items or int(np.clip(self.rows // 40, 300, 200_000))
        n_cat = self.n_categories or int(np.clip(n_items // 100, 12, 400))
        return n_items, n_cat


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _zscore(x):
    s = x.std()
    return (x - x.mean()) / (s if s > 0 else 1.0)


def _categorical_rows(rng, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each i draw an index from the distribution ``probs[rows[i]]`` (vectorized).

    Row r's cumulative distribution is shifted by r, giving one monotone array, so one
    ``searchsorted`` serves every row without materialising a [len(rows), n] matrix."""
    n = probs.shape[1]
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    keys = (cum + np.arange(len(probs))[:, None]).ravel()
    u = np.clip(rng.random(len(rows)), 1e-12, 1 - 1e-9)
    idx = np.searchsorted(keys, rows + u) - rows * n
    return np.clip(idx, 0, n - 1)


class _CategorySampler:
    """Draw an item of a given category with probability ∝ weight, vectorized.

    Items sorted by category get keys ``category + within-category cumulative weight`` (a
    monotone array), so ``searchsorted(keys, c + u)`` samples an item of category ``c``."""

    def __init__(self, item_cat: np.ndarray, weights: np.ndarray, n_cat: int):
        order = np.argsort(item_cat, kind="stable")
        cats, w = item_cat[order], weights[order]
        tot = np.bincount(cats, weights=w, minlength=n_cat)
        start = np.r_[0.0, np.cumsum(tot)[:-1]]
        within = (np.cumsum(w) - start[cats]) / tot[cats]
        last = np.r_[cats[1:] != cats[:-1], True]
        within[last] = 1.0  # exact upper end of every category
        self.order, self.keys = order, cats + within

    def sample(self, rng, cats: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.keys, cats + np.clip(rng.random(len(cats)), 1e-12, 1 - 1e-9))
        return self.order[np.minimum(idx, len(self.order) - 1)]


def _page_counts(cfg: SyntheticConfig, rng) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users' activeness groups, pages per user and page sizes with sum(sizes) == cfg.rows."""
    mean_pages = sum(p * (lo + hi) / 2 for p, (lo, hi) in zip(cfg.activeness, cfg.pages_per_user))
    mean_size = (cfg.page_min + cfg.page_max) / 2
    n_users = max(1, int(cfg.rows / (mean_pages * mean_size) * 1.3) + 1)
    while True:
        group = rng.choice(3, size=n_users, p=np.asarray(cfg.activeness))
        lo = np.array([r[0] for r in cfg.pages_per_user])[group]
        hi = np.array([r[1] for r in cfg.pages_per_user])[group]
        pages = rng.integers(lo, hi + 1)
        sizes = rng.integers(cfg.page_min, cfg.page_max + 1, size=pages.sum())
        user_slots = np.add.reduceat(sizes, np.r_[0, np.cumsum(pages)[:-1]])
        cum = np.cumsum(user_slots)
        if cum[-1] >= cfg.rows:
            break
        n_users = int(n_users * 1.5) + 1
    keep = int(np.searchsorted(cum, cfg.rows)) + 1  # smallest user prefix with >= rows slots
    group, pages = group[:keep], pages[:keep]
    sizes = sizes[: pages.sum()].copy()
    excess = int(sizes.sum() - cfg.rows)
    floor = cfg.page_min
    while excess > 0:  # shrink random pages by one item (never below page_min if possible)
        eligible = np.flatnonzero(sizes > floor)
        if len(eligible) == 0:
            floor = 1
            continue
        pick = rng.choice(eligible, size=min(excess, len(eligible)), replace=False)
        sizes[pick] -= 1
        excess -= len(pick)
    return group, pages, sizes


def generate(rows: int, seed: int = 0, *, with_truth: bool = False,
             **overrides) -> pd.DataFrame:
    """Return ``rows`` exposure rows (canonical columns, ordered by page then position).

    ``with_truth=True`` adds the hidden ground truth (``_affinity`` user-item latent score,
    ``_trigger_affinity`` trigger-item latent score, ``_p_click``, ``_entry_by_trigger``, ``_cluster``, ``_activeness``) for tests and analyses.
    Extra keyword arguments override :class:`SyntheticConfig` fields.
    """
    cfg = SyntheticConfig(rows=int(rows), seed=int(seed), **overrides)
    if cfg.rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(cfg.seed)
    n_items, n_cat = cfg.sizes()
    d, k = cfg.latent_dim, cfg.n_clusters

    # --- items: popularity, category, seller, latent vector --------------------------------
    pop = (1.0 + rng.permutation(n_items)) ** -cfg.zipf_a
    cat_w = (1.0 + np.arange(n_cat)) ** -0.8
    item_cat = rng.choice(n_cat, size=n_items, p=cat_w / cat_w.sum())
    item_cat[:n_cat] = np.arange(n_cat)  # every category non-empty
    n_sell_c = np.maximum(1, np.bincount(item_cat, minlength=n_cat) // 15)
    sell_off = np.r_[0, np.cumsum(n_sell_c)[:-1]]
    item_seller = sell_off[item_cat] + (rng.random(n_items) * n_sell_c[item_cat]).astype(int)
    cat_vec = rng.normal(size=(n_cat, d))
    seller_vec = 0.3 * rng.normal(size=(int(n_sell_c.sum()), d))
    item_vec = cat_vec[item_cat] + seller_vec[item_seller] + 0.6 * rng.normal(size=(n_items, d))
    cand_w = pop ** cfg.candidate_temper
    sampler = _CategorySampler(item_cat, cand_w, n_cat)
    cand_p = cand_w / cand_w.sum()

    # --- clusters and users ------------------------------------------------------------------
    fav = np.stack([rng.choice(n_cat, size=min(4, n_cat), replace=False) for _ in range(k)])
    pref = np.full((k, n_cat), 0.15 / n_cat)
    fav_w = rng.dirichlet(np.ones(fav.shape[1]), size=k) * 0.85
    np.put_along_axis(pref, fav, np.take_along_axis(pref, fav, 1) + fav_w, axis=1)
    centre = (pref[:, :, None] * cat_vec[None]).sum(1)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True) / np.sqrt(d)
    group, pages_per_user, sizes = _page_counts(cfg, rng)
    n_users = len(group)
    cluster_w = rng.dirichlet(np.full(k, 2.0))
    user_cluster = rng.choice(k, size=n_users, p=cluster_w)
    user_vec = centre[user_cluster] + 0.8 * rng.normal(size=(n_users, d))
    user_bias = 0.4 * rng.normal(size=n_users)
    gender = _categorical_rows(rng, rng.dirichlet(np.full(3, 1.5), size=k), user_cluster)
    age = _categorical_rows(rng, rng.dirichlet(np.full(5, 1.5), size=k), user_cluster)

    # --- pages: user, time, trigger ------------------------------------------------------------
    n_pages = len(sizes)
    page_user = rng.permutation(np.repeat(np.arange(n_users), pages_per_user))
    page_ts = np.sort(cfg.start_ts + rng.integers(0, cfg.days * 86400, size=n_pages))
    by_trigger = rng.random(n_pages) < cfg.p_trigger_interest
    trig_cat = _categorical_rows(rng, pref, user_cluster[page_user])
    trigger = np.where(by_trigger, sampler.sample(rng, trig_cat),
                       rng.choice(n_items, size=n_pages, p=cand_p))

    # --- page items: draw candidates in rounds until every page is full --------------------
    cand_page = np.empty(0, np.int64)
    cand_item = np.empty(0, np.int64)
    need = sizes.copy()
    for _ in range(20):
        todo = np.flatnonzero(need > 0)
        if len(todo) == 0:
            break
        n_draw = need[todo] + need[todo] // 2 + 3
        pg = np.repeat(todo, n_draw)
        kind = rng.choice(3, size=len(pg), p=np.asarray(cfg.mix))
        cats = np.where(kind == 0, item_cat[trigger[pg]],
                        _categorical_rows(rng, pref, user_cluster[page_user[pg]]))
        items = np.where(kind == 2, rng.choice(n_items, size=len(pg), p=cand_p),
                         sampler.sample(rng, cats))
        cand_page = np.concatenate([cand_page, pg])
        cand_item = np.concatenate([cand_item, items])
        key = cand_page * n_items + cand_item
        first = np.zeros(len(key), bool)
        first[np.unique(key, return_index=True)[1]] = True
        valid = first & (cand_item != trigger[cand_page])
        # rank of each valid candidate within its page, in draw order
        order = np.argsort(cand_page, kind="stable")
        vp, vv = cand_page[order], valid[order]
        csum = np.cumsum(vv)
        start = np.searchsorted(vp, vp, side="left")
        base = np.where(start > 0, csum[start - 1], 0)
        rank = np.empty(len(key), np.int64)
        rank[order] = csum - base - 1
        keep = valid & (rank < sizes[cand_page])
        need = sizes - np.bincount(cand_page[keep], minlength=n_pages)
    cand_page, cand_item = cand_page[keep], cand_item[keep]

    # --- clicks ------------------------------------------------------------------------------
    u = page_user[cand_page]
    aff = np.einsum("ij,ij->i", user_vec[u], item_vec[cand_item]) / np.sqrt(d)
    taff = np.einsum("ij,ij->i", item_vec[trigger[cand_page]], item_vec[cand_item]) / np.sqrt(d)
    w_t = np.where(by_trigger[cand_page], 0.8, 0.1)
    score = 1.2 * _zscore(aff) + w_t * _zscore(taff) + 0.25 * _zscore(np.log(pop[cand_item])) \
        + user_bias[u]
    # the recommender ranks each page by a noisy estimate of the score: position 0 = top
    est = score + rng.normal(size=len(score))
    order = np.lexsort((-est, cand_page))
    cand_page, cand_item, score, aff = cand_page[order], cand_item[order], score[order], aff[order]
    taff = taff[order]
    u = u[order]
    page_start = np.r_[0, np.cumsum(sizes)[:-1]]
    position = np.arange(len(cand_page)) - page_start[cand_page]
    logit = score - 0.35 * np.log1p(position)
    lo, hi = -20.0, 20.0
    for _ in range(60):  # solve b0 so that the expected CTR is target_ctr
        mid = (lo + hi) / 2
        if _sigmoid(mid + logit).mean() < cfg.target_ctr:
            lo = mid
        else:
            hi = mid
    p_click = _sigmoid((lo + hi) / 2 + logit)
    clicked = (rng.random(len(p_click)) < p_click).astype(np.int64)

    # --- frame -------------------------------------------------------------------------------
    def ids(prefix, x):
        return pd.Series(x).astype(str).radd(prefix).to_numpy(dtype=object)

    df = pd.DataFrame({
        "page_id": ids("p", cand_page),
        "user_id": ids("u", u),
        "item_id": ids("i", cand_item),
        "clicked": clicked,
        "timestamp": page_ts[cand_page].astype(np.int64),
        "position": position.astype(np.int64),
        "trigger_item_id": ids("i", trigger[cand_page]),
        "category_id": ids("c", item_cat[cand_item]),
        "seller_id": ids("s", item_seller[cand_item]),
    })
    if cfg.with_profile:
        df["user_gender"] = np.asarray(GENDERS, dtype=object)[gender[u]]
        df["user_age"] = np.asarray(AGES, dtype=object)[age[u]]
    if with_truth:
        df["_affinity"] = aff
        df["_trigger_affinity"] = taff
        df["_p_click"] = p_click
        df["_entry_by_trigger"] = by_trigger[cand_page]
        df["_cluster"] = user_cluster[u]
        df["_activeness"] = group[u]
    return df


def infer_format(path: str, fmt: Optional[str] = None) -> str:
    """``fmt`` if given, else from the extension (.csv, .jsonl/.json, .parquet/.pq)."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (expected one of {FORMATS})")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    by_ext = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
              ".pq": "parquet"}
    if ext not in by_ext:
        raise ValueError(f"cannot infer the format of {path!r} from its extension; "
                         f"pass --format (one of {FORMATS})")
    return by_ext[ext]


def write(df: pd.DataFrame, path: str, fmt: Optional[str] = None) -> str:
    """Write the public columns of ``df`` (hidden ``_*`` truth columns are dropped)."""
    fmt = infer_format(path, fmt)
    df = df[[c for c in df.columns if not c.startswith("_")]]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path, index=False)
    return path


def main(argv: Sequence[str]) -> None:
    del argv
    from absl import logging
    import time

    t0 = time.time()
    df = generate(FLAGS.rows, FLAGS.seed, target_ctr=FLAGS.target_ctr,
                  with_profile=FLAGS.with_profile)
    path = write(df, FLAGS.output, FLAGS.format)
    logging.info("wrote %d rows (%d pages, %d users, %d items, CTR %.4f) to %s in %.1fs",
                 len(df), df.page_id.nunique(), df.user_id.nunique(), df.item_id.nunique(),
                 df.clicked.mean(), path, time.time() - t0)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("output", None, "Output file (.csv, .jsonl or .parquet).", required=True)
    flags.DEFINE_integer("rows", 100_000, "Number of exposure rows.")
    flags.DEFINE_integer("seed", 0, "Random seed (same seed -> identical file).")
    flags.DEFINE_enum("format", None, list(FORMATS), "Output format (default: from extension).")
    flags.DEFINE_float("target_ctr", 0.08, "Expected click-through rate.")
    flags.DEFINE_bool("with_profile", True, "Write user_gender / user_age columns.")
    FLAGS = flags.FLAGS
    app.run(main)
