"""From one user's organised log to serialized training examples (pure Python, no Beam).

For every page of the user (pages in (timestamp, page_id) order) and every exposed item on it,
one ``tf.train.Example`` with exactly the features of ``ctrcore.schema.build_feature_defs``:

* target ``item_id``/``category_id``/``seller_id`` and ``label`` (the row's ``clicked``);
  side features are the row's own, or the item table's when the row has none;
* ``trigger_*``: the row's ``trigger_item_id`` and that item's category/seller from the item
  table (the item's most frequent category/seller in the clean log);
* ``user_id`` and ``user_<p>`` profile values of the row;
* ``short_*s`` / ``long_*s``: the user's clicks (``clicked=1`` exposures and ``is_history=1``
  rows) with timestamp *strictly before* the page timestamp (the minimum timestamp of the
  page's rows), most recent first (ties by origin order, later origin = more recent), the last
  ``short_len`` / ``long_len`` of them, padded with ``""``; ``history_length`` = number of such
  clicks (AQCL's L). One sorted click list and one moving pointer per user: O(rows log rows);
* context: the other items of the page with their labels. When there are more than
  ``max_context`` of them, the kept set is: all clicked context items first (a seeded sample of
  them if they alone exceed ``max_context``), then a seeded uniform sample of the unclicked ones;
  the seed is ``(seed, user, page, target position)``. Kept items stay in page order, padded
  with ``""`` / label ``-1``. ``page_num_clicked`` / ``page_num_unclicked`` are the page's true
  counts (target included), whatever the cap;
* ``page_id``, ``timestamp`` (page timestamp), ``history_length``.

Positives-only sources get ``negatives_per_positive`` sampled negatives per positive row
appended to its page (see :mod:`pipelines.negatives`); they carry the sampled item's side
features from the item table, the positive's trigger and profile, and origin
``negative:<page_id>:<n>``.

Split: ``time`` compares the page timestamp with the global cutoffs ``(q_valid, q_test)``
(``ts >= q_test`` test, ``q_valid <= ts < q_test`` valid, else train; see
:func:`pipelines.stats.time_cutoffs`); ``leave_last_out`` makes the user's last page test and
second-last valid when the user has at least 3 pages, otherwise all of the user's pages are train.

Vocabulary tokens counted for the training split: every row of a train page (sampled negatives
included) and every history-only row earlier than the user's first non-train page.
"""
from __future__ import annotations

import bisect
import collections.abc
import dataclasses
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ctrcore.schema import ITEM_SIDE, USER_PROFILE_PREFIX, SpecConfig, build_feature_defs
from pipelines import tfexample as tfx
from pipelines.canonical import ORIGIN, origin_key
from pipelines.negatives import sample_negatives, stable_random
from pipelines.pages import UserLog

SPLITS = ("train", "valid", "test")
INF = float("inf")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    short_len: int = 20
    long_len: int = 100
    max_context: int = 20
    user_profile: Tuple[str, ...] = ()
    seed: int = 0
    negatives_per_positive: int = 1
    positives_only: bool = False
    split: str = "time"  # "time" | "leave_last_out"

    def spec_config(self) -> SpecConfig:
        return SpecConfig(short_len=self.short_len, long_len=self.long_len,
                          max_context=self.max_context, user_profile=tuple(self.user_profile))


def split_by_label(labels: Sequence[int]) -> Tuple[List[int], List[int]]:
    """(indices of clicked items, indices of the others), each in page order."""
    clicked = [j for j, y in enumerate(labels) if y == 1]
    unclicked = [j for j, y in enumerate(labels) if y != 1]
    return clicked, unclicked


class _Without(collections.abc.Sequence):
    """A sorted index list minus one value, as a read-only view (``random.sample`` only takes
    ``len`` and items of it, so sampling a huge page costs O(cap), not O(page))."""

    def __init__(self, indices: List[int], target: int):
        k = bisect.bisect_left(indices, target)
        self.base, self.k = indices, k
        self.n = len(indices) - (1 if k < len(indices) and indices[k] == target else 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j: int) -> int:
        if not 0 <= j < self.n:
            raise IndexError(j)
        return self.base[j if j < self.k or self.n == len(self.base) else j + 1]


def choose_context(labels: Sequence[int], target: int, cap: int, rng_parts,
                   by_label: Optional[Tuple[List[int], List[int]]] = None) -> List[int]:
    """Indices of the context items kept for the target at index ``target`` (page order).
    ``by_label``: :func:`split_by_label` of ``labels``, computed once per page (a page of n
    items then costs O(cap) per target instead of O(n): a 20k-item crawler page took 53 s)."""
    n = len(labels)
    if n - 1 <= cap:
        return [j for j in range(n) if j != target]
    all_clicked, all_unclicked = by_label if by_label is not None else split_by_label(labels)
    clicked = _Without(all_clicked, target)
    unclicked = _Without(all_unclicked, target)
    rng = stable_random(*rng_parts)
    if len(clicked) >= cap:
        chosen = rng.sample(clicked, cap)
    else:
        chosen = list(clicked) + rng.sample(unclicked, cap - len(clicked))
    chosen.sort()
    return chosen


class UserExampleBuilder:
    """Builds one user's examples; accumulates statistics and train vocabulary tokens."""

    def __init__(self, cfg: BuildConfig):
        if cfg.split not in ("time", "leave_last_out"):
            raise ValueError(f"unknown split strategy {cfg.split!r} (time | leave_last_out)")
        self.cfg = cfg
        self.profile_keys = [USER_PROFILE_PREFIX + p for p in cfg.user_profile]
        spec_names = [f.name for f in build_feature_defs(cfg.spec_config())]
        if list(cfg.spec_config().item_side) != list(ITEM_SIDE):
            raise ValueError("only the streamlined item side features are supported")
        mine = (["user_id"] + self.profile_keys + list(ITEM_SIDE)
                + ["trigger_" + s for s in ITEM_SIDE]
                + [f"{q}_{s}s" for q in ("short", "long") for s in ITEM_SIDE] + ["label"]
                + [f"context_{s}s" for s in ITEM_SIDE]
                + ["context_labels", "page_num_clicked", "page_num_unclicked", "page_id",
                   "timestamp", "history_length"])
        if sorted(mine) != sorted(spec_names):
            raise AssertionError(f"example encoder out of sync with the feature spec: "
                                 f"{sorted(set(mine) ^ set(spec_names))}")

    # ------------------------------------------------------------------------------------------
    def build(self, log: UserLog, item_table: Dict[str, Tuple[str, str]], universe: Sequence[str],
              cutoffs: Tuple[float, float], stats: Counter, tokens: Counter
              ) -> Iterator[Tuple[str, bytes]]:
        cfg = self.cfg
        user = log.user_id
        pages = log.pages
        no_side = ("", "")

        def side(r):
            cat, sel = r["category_id"], r["seller_id"]
            if not cat or not sel:
                tc, ts = item_table.get(r["item_id"], no_side)
                cat, sel = cat or tc, sel or ts
            return cat, sel

        stats["rows_used"] += log.num_rows()
        stats["rows_history"] += len(log.history)
        stats["rows_exposure"] += log.num_rows() - len(log.history)
        stats["users"] += 1

        # --- negatives (positives-only sources) -------------------------------------------------
        if cfg.positives_only and cfg.negatives_per_positive > 0:
            interacted = {r["item_id"] for r in log.history}
            for _, _, prs in pages:
                interacted.update(r["item_id"] for r in prs)
            new_pages = []
            for pid, pts, prs in pages:
                on_page = {r["item_id"] for r in prs}
                extra = []
                for r in prs:
                    if r["clicked"] != 1:
                        continue
                    rng = stable_random(cfg.seed, "neg", user, pid, r["item_id"])
                    for item in sample_negatives(rng, universe, interacted | on_page,
                                                 cfg.negatives_per_positive):
                        on_page.add(item)
                        cat, sel = item_table.get(item, no_side)
                        neg = {k: r.get(k, "") for k in self.profile_keys}
                        neg.update(page_id=pid, user_id=user, item_id=item, clicked=0,
                                   timestamp=pts, position=-1, is_history=0,
                                   trigger_item_id=r["trigger_item_id"], category_id=cat,
                                   seller_id=sel)
                        neg[ORIGIN] = f"negative:{pid}:{len(prs) + len(extra)}"
                        extra.append(neg)
                stats["negatives_sampled"] += len(extra)
                new_pages.append((pid, pts, prs + extra))
            pages = new_pages

        # --- split -------------------------------------------------------------------------------
        n_pages = len(pages)
        if cfg.split == "time":
            q_valid, q_test = cutoffs
            splits = ["test" if ts >= q_test else "valid" if ts >= q_valid else "train"
                      for _, ts, _ in pages]
        else:
            splits = ["train"] * n_pages
            if n_pages >= 3:
                splits[-1], splits[-2] = "test", "valid"
        first_eval_ts = min((ts for (_, ts, _), s in zip(pages, splits) if s != "train"),
                            default=INF)

        # --- click history, sorted once ------------------------------------------------------------
        clicks = []
        for r in log.history:
            clicks.append((r["timestamp"], origin_key(r[ORIGIN]), r))
            if r["timestamp"] < first_eval_ts:
                self._count_tokens(tokens, r, side(r), with_user=False)
        for _, _, prs in pages:
            for r in prs:
                if r["clicked"] == 1 and not r[ORIGIN].startswith("negative:"):
                    clicks.append((r["timestamp"], origin_key(r[ORIGIN]), r))
        clicks.sort(key=lambda c: (c[0], c[1]))
        click_ts = [c[0] for c in clicks]
        click_enc = []
        for _, _, r in clicks:
            cat, sel = side(r)
            click_enc.append((tfx.bytes_value(r["item_id"]), tfx.bytes_value(cat),
                              tfx.bytes_value(sel)))

        # --- pages -> examples -------------------------------------------------------------------
        S, Lg, C = cfg.short_len, cfg.long_len, cfg.max_context
        pad = tfx.PAD_VALUE
        neg1 = tfx.varint(-1)
        sbe = tfx.scalar_bytes_entry
        label_entry = {0: tfx.scalar_int64_entry("label", 0), 1: tfx.scalar_int64_entry("label", 1)}
        j = 0
        max_L = -1  # the user's activeness: history length at their latest page (any split)
        had_train = False
        user_enc = tfx.bytes_entry("user_id", [user])
        for (pid, pts, prs), split in zip(pages, splits):
            while j < len(clicks) and click_ts[j] < pts:
                j += 1
            L = j
            n = len(prs)
            labels = [r["clicked"] for r in prs]
            n1 = sum(labels)
            n0 = n - n1
            # page-common entries
            common = [user_enc]
            for q, m in (("short", S), ("long", Lg)):
                seq = click_enc[max(0, j - m):j][::-1]
                padn = [pad] * (m - len(seq))
                for k, s in enumerate(ITEM_SIDE):
                    common.append(tfx.bytes_entry_encoded(f"{q}_{s}s", [e[k] for e in seq] + padn))
            common.append(tfx.int64_entry("page_num_clicked", [n1]))
            common.append(tfx.int64_entry("page_num_unclicked", [n0]))
            common.append(tfx.bytes_entry("page_id", [pid]))
            common.append(tfx.int64_entry("timestamp", [pts]))
            common.append(tfx.int64_entry("history_length", [L]))
            common_b = b"".join(common)

            sides = [side(r) for r in prs]
            bv = tfx.bytes_value
            cols = ([bv(r["item_id"]) for r in prs], [bv(c[0]) for c in sides],
                    [bv(c[1]) for c in sides])
            nocap = n - 1 <= C
            by_label = None if nocap else split_by_label(labels)
            if nocap:
                pad_tail = pad * (C - n + 1)
                lab_tail = neg1 * (C - n + 1)
            lab_bytes = bytes(labels)  # 0/1 labels are their own one-byte varints
            for i, r in enumerate(prs):
                if nocap:
                    ctx_inner = [b"".join(col[:i]) + b"".join(col[i + 1:]) + pad_tail
                                 for col in cols]
                    ctx_lab = lab_bytes[:i] + lab_bytes[i + 1:] + lab_tail
                else:
                    ctx = choose_context(labels, i, C, (cfg.seed, "ctx", user, pid, i),
                                         by_label)
                    fill = C - len(ctx)
                    ctx_inner = [b"".join([col[c] for c in ctx]) + pad * fill for col in cols]
                    ctx_lab = bytes([labels[c] for c in ctx]) + neg1 * fill
                trig = r["trigger_item_id"]
                tc, tsel = item_table.get(trig, no_side) if trig else no_side
                cs = sides[i]
                entries = [common_b,
                           sbe("item_id", r["item_id"]),
                           sbe("category_id", cs[0]),
                           sbe("seller_id", cs[1]),
                           sbe("trigger_item_id", trig),
                           sbe("trigger_category_id", tc),
                           sbe("trigger_seller_id", tsel),
                           label_entry[labels[i]],
                           tfx.bytes_entry_joined("context_item_ids", ctx_inner[0]),
                           tfx.bytes_entry_joined("context_category_ids", ctx_inner[1]),
                           tfx.bytes_entry_joined("context_seller_ids", ctx_inner[2]),
                           tfx.int64_entry_packed("context_labels", ctx_lab)]
                for k in self.profile_keys:
                    entries.append(sbe(k, r.get(k, "")))
                yield split, tfx.example(entries)
            max_L = max(max_L, L)
            stats[("pages", split)] += 1
            stats[("examples", split)] += n
            if split == "train":
                had_train = True
                stats["train_clicked"] += n1
                stats["train_unclicked"] += n0
                stats["train_history_sum"] += L * n
                stats["train_examples"] += n
                for r, cs in zip(prs, sides):
                    self._count_tokens(tokens, r, cs, with_user=True)
        if max_L >= 0:
            stats[("user_L", max_L)] += 1
        if had_train:
            stats["users_with_train_examples"] += 1

    def _count_tokens(self, tokens: Counter, r, cs, with_user: bool) -> None:
        tokens[("item_id", r["item_id"])] += 1
        if cs[0]:
            tokens[("category_id", cs[0])] += 1
        if cs[1]:
            tokens[("seller_id", cs[1])] += 1
        if with_user:
            tokens[("user_id", r["user_id"])] += 1
            for k in self.profile_keys:
                v = r.get(k, "")
                if v:
                    tokens[(k, v)] += 1
