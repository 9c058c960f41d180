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
  ``max_context`` of them, a seeded sample is kept (:func:`choose_context`): by default
  label-stratified, the page's share of clicked items in expectation; with
  ``context_sampling="clicked_first"`` all clicked context items first (a seeded sample of them
  if they alone exceed ``max_context``), then a seeded uniform sample of the unclicked ones;
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

:meth:`UserExampleBuilder.build` runs these as steps, each a function or method here: pages in
time order (``UserLog.pages``) -> :func:`add_negatives` (positives-only sources) ->
:func:`assign_splits` -> :class:`ClickHistory` (sequence windows) -> per page
:func:`page_columns`, :func:`page_contexts` (context choice, :func:`choose_context`) ->
plain feature dicts (:meth:`~UserExampleBuilder.page_features`, once per page;
:meth:`~UserExampleBuilder.example_features`, per example) -> encoding by the feature spec
(:class:`pipelines.tfexample.SpecEncoder`: names, dtypes, lengths, padding values and entry
order all come from the spec; a dict that does not fit it raises naming the feature) ->
:func:`count_page` / :func:`count_tokens` (statistics, vocabulary).
"""
from __future__ import annotations

import bisect
import collections.abc
import dataclasses
from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ctrcore.schema import (EXAMPLE_SCOPE, ITEM_SIDE, PAGE_SCOPE, PROFILE_SCOPE,
                            USER_PROFILE_PREFIX, FeatureSpec, SpecConfig)
from pipelines.canonical import ORIGIN, origin_key
from pipelines.negatives import sample_negatives, stable_random
from pipelines.pages import UserLog
from pipelines.tfexample import SpecEncoder, Subsequence

SPLITS = ("train", "valid", "test")
INF = float("inf")

Row = Dict[str, Any]
Page = Tuple[str, int, List[Row]]  # (page_id, page timestamp, rows in page order)
Sides = Tuple[str, str]  # (category_id, seller_id)
ItemTable = Mapping[str, Sides]
#: a page's columns: (item ids, category ids, seller ids, labels), one entry per row
Columns = Tuple[Tuple[str, ...], Tuple[str, ...], Tuple[str, ...], Tuple[int, ...]]
NO_SIDES: Sides = ("", "")


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
    context_sampling: str = "stratified"  # CONTEXT_SAMPLINGS

    def spec_config(self) -> SpecConfig:
        return SpecConfig(short_len=self.short_len, long_len=self.long_len,
                          max_context=self.max_context, user_profile=tuple(self.user_profile))


# ---------------------------------------------------------------------------------------------
# context choice
# ---------------------------------------------------------------------------------------------
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


#: index lists up to this long are copied without the target (``random.sample`` copies a
#: small population anyway, item by item: slow through a view); longer ones are viewed
_COPY_MAX = 1024


def _without(indices: List[int], target: int) -> Sequence[int]:
    """``indices`` (sorted) minus ``target``: a list, or a :class:`_Without` view when long.
    Either gives ``random.sample`` the same population, hence the same draws."""
    if len(indices) <= _COPY_MAX:
        return [j for j in indices if j != target]
    return _Without(indices, target)


#: --context_sampling: how the context is chosen on a page with more other items than the cap
CONTEXT_SAMPLINGS = ("stratified", "clicked_first")


def stratified_counts(n_clicked: int, n_unclicked: int, cap: int, rng) -> Tuple[int, int]:
    """How many clicked and unclicked context items to keep (``cap`` < the two together): the
    page's own share of clicked items, ``cap * n_clicked / (n_clicked + n_unclicked)``, rounded
    up with probability equal to its fraction (so the expected count is exactly the share: the
    context's label mix is, on average, the page's), within what each label has."""
    share = cap * n_clicked / (n_clicked + n_unclicked)
    k = int(share)
    if rng.random() < share - k:
        k += 1
    k = min(k, n_clicked, cap)
    k = max(k, cap - n_unclicked)
    return k, cap - k


def choose_context(labels: Sequence[int], target: int, cap: int, rng_parts,
                   by_label: Optional[Tuple[List[int], List[int]]] = None,
                   sampling: str = "stratified") -> List[int]:
    """Indices of the context items kept for the target at index ``target`` (page order): every
    other item when they fit the cap; else a seeded sample of ``cap`` of them, drawn per label
    (``sampling``): ``stratified`` (default) keeps the page's label mix in expectation
    (:func:`stratified_counts`), ``clicked_first`` every clicked item first (a sample of them
    when they alone exceed the cap), then unclicked ones: the clicked share of a large page's
    context is then inflated (docs/method.md 1.6). ``by_label``: :func:`split_by_label` of
    ``labels``, computed once per page (a page of n items then costs O(cap) per target
    instead of O(n): a 20k-item crawler page took 53 s)."""
    n = len(labels)
    if n - 1 <= cap:
        return [j for j in range(n) if j != target]
    all_clicked, all_unclicked = by_label if by_label is not None else split_by_label(labels)
    clicked = _without(all_clicked, target)
    unclicked = _without(all_unclicked, target)
    rng = stable_random(*rng_parts)
    if sampling == "stratified":
        k_clicked, k_unclicked = stratified_counts(len(clicked), len(unclicked), cap, rng)
        chosen = rng.sample(clicked, k_clicked) + rng.sample(unclicked, k_unclicked)
    elif sampling == "clicked_first":
        if len(clicked) >= cap:
            chosen = rng.sample(clicked, cap)
        else:
            chosen = list(clicked) + rng.sample(unclicked, cap - len(clicked))
    else:
        raise ValueError(f"context sampling {sampling!r}: one of {list(CONTEXT_SAMPLINGS)}")
    chosen.sort()
    return chosen


def page_contexts(cols: Columns, cap: int, rng_parts: tuple, sampling: str = "stratified"
                  ) -> Iterator[Tuple[Subsequence, Subsequence, Subsequence, Subsequence]]:
    """Per target of the page (page order): its context columns (item, category and seller
    ids, labels) of the kept context items (:func:`choose_context`, seeded by
    ``rng_parts + (target index,)``), in page order, unpadded; as views of the page's columns
    (:class:`pipelines.tfexample.Subsequence`: the encoder encodes each column once per page)."""
    ids, cats, sels, labels = cols
    n = len(labels)
    if n - 1 <= cap:  # every other item of the page
        for i in range(n):
            yield (Subsequence(ids, i), Subsequence(cats, i), Subsequence(sels, i),
                   Subsequence(labels, i))
        return
    by_label = split_by_label(labels)
    for i in range(n):
        ctx = choose_context(labels, i, cap, rng_parts + (i,), by_label, sampling)
        yield (Subsequence(ids, picks=ctx), Subsequence(cats, picks=ctx),
               Subsequence(sels, picks=ctx), Subsequence(labels, picks=ctx))


# ---------------------------------------------------------------------------------------------
# the steps of one user's examples
# ---------------------------------------------------------------------------------------------
def assign_splits(pages: Sequence[Page], strategy: str, cutoffs: Tuple[float, float]
                  ) -> List[str]:
    """The split of each page (pages in time order): ``time`` compares the page timestamp with
    the cutoffs ``(q_valid, q_test)``; ``leave_last_out`` makes the last page test and the
    second-last valid when there are at least 3 pages, otherwise all pages are train."""
    if strategy == "time":
        q_valid, q_test = cutoffs
        return ["test" if ts >= q_test else "valid" if ts >= q_valid else "train"
                for _, ts, _ in pages]
    splits = ["train"] * len(pages)
    if len(pages) >= 3:
        splits[-1], splits[-2] = "test", "valid"
    return splits


def first_eval_timestamp(pages: Sequence[Page], splits: Sequence[str]) -> float:
    """Timestamp of the user's first non-train page (``inf`` when there is none)."""
    return min((ts for (_, ts, _), s in zip(pages, splits) if s != "train"), default=INF)


def row_sides(r: Row, item_table: ItemTable) -> Sides:
    """The row's (category, seller), each taken from the item table when the row has none."""
    cat, sel = r["category_id"], r["seller_id"]
    if not cat or not sel:
        tc, ts = item_table.get(r["item_id"], NO_SIDES)
        cat, sel = cat or tc, sel or ts
    return cat, sel


def page_negatives(user: str, page: Page, excluded: set, item_table: ItemTable,
                   universe: Sequence[str], seed: int, per_positive: int,
                   profile_keys: Sequence[str]) -> List[Row]:
    """Sampled negative rows of one page: ``per_positive`` per positive row (seeded by
    ``(seed, user, page, item)``), none in ``excluded`` or on the page; each with the sampled
    item's sides from the item table, the positive's trigger and profile, origin
    ``negative:<page_id>:<n>``."""
    pid, pts, rows = page
    on_page = {r["item_id"] for r in rows}
    extra: List[Row] = []
    for r in rows:
        if r["clicked"] != 1:
            continue
        rng = stable_random(seed, "neg", user, pid, r["item_id"])
        for item in sample_negatives(rng, universe, excluded | on_page, per_positive):
            on_page.add(item)
            cat, sel = item_table.get(item, NO_SIDES)
            neg = {k: r.get(k, "") for k in profile_keys}
            neg.update(page_id=pid, user_id=user, item_id=item, clicked=0, timestamp=pts,
                       position=-1, is_history=0, trigger_item_id=r["trigger_item_id"],
                       category_id=cat, seller_id=sel)
            neg[ORIGIN] = f"negative:{pid}:{len(rows) + len(extra)}"
            extra.append(neg)
    return extra


def add_negatives(log: UserLog, item_table: ItemTable, universe: Sequence[str], seed: int,
                  per_positive: int, profile_keys: Sequence[str]) -> Tuple[List[Page], int]:
    """The user's pages with their sampled negatives appended (:func:`page_negatives`,
    excluding every item the user interacted with), and the number sampled."""
    interacted = {r["item_id"] for r in log.history}
    for _, _, rows in log.pages:
        interacted.update(r["item_id"] for r in rows)
    pages, sampled = [], 0
    for page in log.pages:
        extra = page_negatives(log.user_id, page, interacted, item_table, universe, seed,
                               per_positive, profile_keys)
        sampled += len(extra)
        pages.append((page[0], page[1], page[2] + extra))
    return pages, sampled


class ClickHistory:
    """The user's clicks (history-only rows and clicked exposures, sampled negatives never) in
    (timestamp, origin) order, as columns of item / category / seller ids, with a pointer moved
    forward page by page (:meth:`advance`): O(rows log rows) per user."""

    def __init__(self, history: Sequence[Row], pages: Sequence[Page], item_table: ItemTable):
        clicks = list(history)
        for _, _, rows in pages:
            clicks.extend(r for r in rows
                          if r["clicked"] == 1 and not r[ORIGIN].startswith("negative:"))
        clicks.sort(key=lambda r: (r["timestamp"], origin_key(r[ORIGIN])))
        self.timestamps = [r["timestamp"] for r in clicks]
        sides = [row_sides(r, item_table) for r in clicks]
        self.columns = (tuple([r["item_id"] for r in clicks]), tuple([c for c, _ in sides]),
                        tuple([s for _, s in sides]))
        self.count = 0

    def advance(self, ts: int) -> int:
        """Move the pointer past the clicks strictly before ``ts`` (non-decreasing across
        calls); returns their number (the history length L)."""
        j, tss = self.count, self.timestamps
        while j < len(tss) and tss[j] < ts:
            j += 1
        self.count = j
        return j

    def window(self, length: int) -> Tuple[Subsequence, Subsequence, Subsequence]:
        """The last ``length`` clicks before the pointer, most recent first, per column (views
        of the columns: the encoder encodes a user's clicks once)."""
        picks = range(self.count - 1, max(0, self.count - length) - 1, -1)
        ids, cats, sels = self.columns
        return (Subsequence(ids, picks=picks), Subsequence(cats, picks=picks),
                Subsequence(sels, picks=picks))


def page_columns(rows: Sequence[Row], item_table: ItemTable) -> Columns:
    """(item ids, category ids, seller ids (:func:`row_sides`), labels) of a page's rows."""
    sides = [row_sides(r, item_table) for r in rows]
    return (tuple([r["item_id"] for r in rows]), tuple([c for c, _ in sides]),
            tuple([s for _, s in sides]), tuple([r["clicked"] for r in rows]))


def count_tokens(tokens: Counter, r: Row, cat: str, sel: str, profile_keys: Sequence[str],
                 with_user: bool) -> None:
    """Count one row's vocabulary tokens (item, non-empty sides, and with ``with_user`` the
    user and the non-empty profile values)."""
    tokens[("item_id", r["item_id"])] += 1
    if cat:
        tokens[("category_id", cat)] += 1
    if sel:
        tokens[("seller_id", sel)] += 1
    if with_user:
        tokens[("user_id", r["user_id"])] += 1
        for k in profile_keys:
            v = r.get(k, "")
            if v:
                tokens[(k, v)] += 1


def count_user_rows(stats: Counter, log: UserLog) -> None:
    """Row statistics of one user (before negatives)."""
    stats["rows_used"] += log.num_rows()
    stats["rows_history"] += len(log.history)
    stats["rows_exposure"] += log.num_rows() - len(log.history)
    stats["users"] += 1


def count_page(stats: Counter, split: str, n: int, n_clicked: int, history_length: int
               ) -> None:
    """Statistics of one page of ``n`` examples."""
    stats[("pages", split)] += 1
    stats[("examples", split)] += n
    if split == "train":
        stats["train_clicked"] += n_clicked
        stats["train_unclicked"] += n - n_clicked
        stats["train_history_sum"] += history_length * n
        stats["train_examples"] += n


# ---------------------------------------------------------------------------------------------
# the builder
# ---------------------------------------------------------------------------------------------
class UserExampleBuilder:
    """Builds one user's examples; accumulates statistics and train vocabulary tokens.

    The examples are feature dicts encoded by a :class:`pipelines.tfexample.SpecEncoder` of
    the configuration's ``FeatureSpec`` (names, dtypes, lengths, padding and entry order from
    the spec): the page-scope features once per page (:meth:`page_features`), the example and
    profile features per example (:meth:`example_features`)."""

    def __init__(self, cfg: BuildConfig):
        if cfg.split not in ("time", "leave_last_out"):
            raise ValueError(f"unknown split strategy {cfg.split!r} (time | leave_last_out)")
        if list(cfg.spec_config().item_side) != list(ITEM_SIDE):
            raise ValueError("only the streamlined item side features are supported")
        self.cfg = cfg
        self.profile_keys = [USER_PROFILE_PREFIX + p for p in cfg.user_profile]
        self.spec = FeatureSpec.create(cfg.spec_config())
        encoder = SpecEncoder(self.spec)
        self._encode_page = encoder.part(PAGE_SCOPE).encode
        self._encode_example = encoder.part(EXAMPLE_SCOPE, PROFILE_SCOPE).encode
        self._join = encoder.join

    # ------------------------------------------------------------------------------------------
    def build(self, log: UserLog, item_table: ItemTable, universe: Sequence[str],
              cutoffs: Tuple[float, float], stats: Counter, tokens: Counter
              ) -> Iterator[Tuple[str, bytes]]:
        """``(split, serialized example)`` of every exposure of the user (sampled negatives
        included), page by page; adds the user's statistics to ``stats`` and the train
        vocabulary tokens to ``tokens``."""
        cfg = self.cfg
        count_user_rows(stats, log)
        pages = log.pages
        if cfg.positives_only and cfg.negatives_per_positive > 0:
            pages, sampled = add_negatives(log, item_table, universe, cfg.seed,
                                           cfg.negatives_per_positive, self.profile_keys)
            stats["negatives_sampled"] += sampled
        splits = assign_splits(pages, cfg.split, cutoffs)
        self.count_history_tokens(tokens, log.history, first_eval_timestamp(pages, splits),
                                  item_table)
        clicks = ClickHistory(log.history, pages, item_table)
        max_L = -1  # the user's activeness: history length at their latest page (any split)
        for page, split in zip(pages, splits):
            L = clicks.advance(page[1])
            cols = page_columns(page[2], item_table)
            for ex in self.page_examples(log.user_id, page, cols, L, clicks, item_table):
                yield split, ex
            max_L = max(max_L, L)
            count_page(stats, split, len(cols[3]), sum(cols[3]), L)
            if split == "train":
                for r, cat, sel in zip(page[2], cols[1], cols[2]):
                    count_tokens(tokens, r, cat, sel, self.profile_keys, with_user=True)
        if max_L >= 0:
            stats[("user_L", max_L)] += 1
        if "train" in splits:
            stats["users_with_train_examples"] += 1

    def count_history_tokens(self, tokens: Counter, history: Sequence[Row], before: float,
                             item_table: ItemTable) -> None:
        """Train vocabulary tokens of the history-only rows earlier than ``before`` (the
        user's first non-train page)."""
        for r in history:
            if r["timestamp"] < before:
                cat, sel = row_sides(r, item_table)
                count_tokens(tokens, r, cat, sel, self.profile_keys, with_user=False)

    def page_examples(self, user: str, page: Page, cols: Columns, history_length: int,
                      clicks: ClickHistory, item_table: ItemTable) -> Iterator[bytes]:
        """The serialized examples of one page, one per row (page order)."""
        pid, _, rows = page
        page_entries = self._encode_page(
            self.page_features(user, page, cols, history_length, clicks))
        contexts = page_contexts(cols, self.cfg.max_context, (self.cfg.seed, "ctx", user, pid),
                                 self.cfg.context_sampling)
        for i, (r, ctx) in enumerate(zip(rows, contexts)):
            yield self._join(page_entries,
                             self._encode_example(self.example_features(r, i, cols, ctx,
                                                                        item_table)))

    def page_features(self, user: str, page: Page, cols: Columns, history_length: int,
                      clicks: ClickHistory) -> Dict[str, Any]:
        """The page-scope features: the same for every example of the page."""
        pid, pts, _ = page
        n_clicked = sum(cols[3])
        short = clicks.window(self.cfg.short_len)
        long = clicks.window(self.cfg.long_len)
        return {"user_id": user,
                "short_item_ids": short[0], "short_category_ids": short[1],
                "short_seller_ids": short[2],
                "long_item_ids": long[0], "long_category_ids": long[1],
                "long_seller_ids": long[2],
                "page_num_clicked": n_clicked, "page_num_unclicked": len(cols[3]) - n_clicked,
                "page_id": pid, "timestamp": pts, "history_length": history_length}

    def example_features(self, r: Row, i: int, cols: Columns, ctx, item_table: ItemTable
                         ) -> Dict[str, Any]:
        """The example-scope and profile features of the page's ``i``-th row ``r``; ``ctx``:
        its context columns (:func:`page_contexts`)."""
        trig = r["trigger_item_id"]
        tcat, tsel = item_table.get(trig, NO_SIDES) if trig else NO_SIDES
        f = {"item_id": cols[0][i], "category_id": cols[1][i], "seller_id": cols[2][i],
             "trigger_item_id": trig, "trigger_category_id": tcat, "trigger_seller_id": tsel,
             "label": cols[3][i],
             "context_item_ids": ctx[0], "context_category_ids": ctx[1],
             "context_seller_ids": ctx[2], "context_labels": ctx[3]}
        for k in self.profile_keys:
            f[k] = r.get(k, "")
        return f
