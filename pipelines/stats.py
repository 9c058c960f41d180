"""Dataset statistics written to ``OUT/stats.json`` and the time-split cutoffs.

Keys (docs/architecture.md §1): ``rows_read``, ``rows_used``, ``rows_dead_letter``,
``dead_letter_reasons``, ``negatives_sampled``, ``pages`` {split: n}, ``examples`` {split: n},
``avg_clicked_per_page`` (N1) and ``avg_unclicked_per_page`` (N0) over TRAIN pages (sampled
negatives included), ``p_s_plus`` / ``p_s_minus`` (CCN Eq. 9-10 from N0, N1),
``mean_history_length`` (L-bar over training examples), ``activeness_thresholds`` [t1, t2],
``source``, ``seed``, ``split``, plus ``config`` (every job flag) and a few extra counts
(``rows_history``, ``rows_exposure``, ``users``, ``num_users_with_train_examples``,
``time_cutoffs``, ``vocab_sizes``).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

INF = float("inf")


def p_s_plus(n0: float, n1: float) -> float:
    """CCN Eq. 9: probability that two distinct items of a page share the click label."""
    n = n0 + n1
    if n <= 1:
        return 1.0
    return (n0 * (n0 - 1) + n1 * (n1 - 1)) / (n * (n - 1))


def time_cutoffs(ts_counts: Mapping[int, int], valid_fraction: float,
                 test_fraction: float) -> Tuple[float, float]:
    """(q_valid, q_test) from a {page timestamp: number of pages} histogram.

    With N pages sorted by timestamp, ``q_test`` is the timestamp of the page at rank
    ``N - round(N * test_fraction)`` and ``q_valid`` the one at rank
    ``N - round(N * test_fraction) - round(N * valid_fraction)``. Pages with ``ts >= q_test`` are
    test, ``q_valid <= ts < q_test`` valid. Pages sharing a timestamp always land in the same split
    (ties go to the later split), so the split is deterministic and never cuts one instant.
    """
    if not 0 <= valid_fraction <= 1 or not 0 <= test_fraction <= 1 or \
            valid_fraction + test_fraction > 1:
        raise ValueError(f"bad split fractions valid={valid_fraction} test={test_fraction}")
    items = sorted(ts_counts.items())
    n = sum(c for _, c in items)
    n_test = int(round(n * test_fraction))
    n_valid = int(round(n * valid_fraction))

    def ts_at(rank: int) -> float:  # timestamp of the page at 0-based rank in sorted order
        acc = 0
        for ts, c in items:
            acc += c
            if rank < acc:
                return ts
        return INF

    q_test = ts_at(n - n_test) if n_test > 0 else INF
    q_valid = ts_at(n - n_test - n_valid) if n_valid > 0 else q_test
    return q_valid, q_test


def activeness_thresholds(user_L: Mapping[int, int], fractions=(0.6, 0.3)) -> List[int]:
    """[t1, t2] over a {history length: number of users} histogram so that ``L < t1`` holds for
    ~60% of users, ``t1 <= L < t2`` ~30%, ``L >= t2`` ~10% (AQCL §3.2). Each user's L is the
    history length at the user's latest page in the log (any split): the user's activeness
    where they are evaluated, so that with leave-last-out every test user falls in a group
    (with the last *training* example, every test history was >= t1 and the non-active group
    was empty). Ties make the groups approximate."""
    items = sorted(user_L.items())
    n = sum(c for _, c in items)
    if n == 0:
        return [0, 0]

    def value_at(rank: int) -> int:
        acc = 0
        for v, c in items:
            acc += c
            if rank < acc:
                return v
        return items[-1][0]

    t1 = value_at(int(math.floor(n * fractions[0] + 1e-9)))
    t2 = value_at(int(math.floor(n * (fractions[0] + fractions[1]) + 1e-9)))
    return [int(t1), int(max(t1, t2))]


def assemble(*, rows_read: int, dead_letter_reasons: Mapping[str, int], summary: Counter,
             vocab_sizes: Mapping[str, int], cutoffs: Optional[Tuple[float, float]],
             source: str, seed: int, split: str, config: dict) -> dict:
    """Build the stats dict and check the row accounting (raises on a mismatch)."""
    dead = int(sum(dead_letter_reasons.values()))
    used = int(summary.get("rows_used", 0))
    if rows_read != used + dead:
        raise RuntimeError(
            f"row accounting failed: rows_read={rows_read} != rows_used={used} + "
            f"rows_dead_letter={dead} (reasons {dict(dead_letter_reasons)}): rows were lost")
    if used != summary.get("rows_history", 0) + summary.get("rows_exposure", 0):
        raise RuntimeError(f"row accounting failed: rows_used={used} != history + exposure rows")
    ex_total = sum(summary.get(("examples", s), 0) for s in ("train", "valid", "test"))
    if ex_total != summary.get("rows_exposure", 0) + summary.get("negatives_sampled", 0):
        raise RuntimeError(f"example accounting failed: {ex_total} examples != exposure rows "
                           f"{summary.get('rows_exposure', 0)} + negatives "
                           f"{summary.get('negatives_sampled', 0)}")
    train_pages = summary.get(("pages", "train"), 0)
    n1 = summary.get("train_clicked", 0) / train_pages if train_pages else 0.0
    n0 = summary.get("train_unclicked", 0) / train_pages if train_pages else 0.0
    ps = p_s_plus(n0, n1)
    te = summary.get("train_examples", 0)
    user_L = {k[1]: v for k, v in summary.items() if isinstance(k, tuple) and k[0] == "user_L"}
    stats = {
        "rows_read": int(rows_read),
        "rows_used": used,
        "rows_dead_letter": dead,
        "dead_letter_reasons": {k: int(v) for k, v in sorted(dead_letter_reasons.items())},
        "rows_history": int(summary.get("rows_history", 0)),
        "rows_exposure": int(summary.get("rows_exposure", 0)),
        "negatives_sampled": int(summary.get("negatives_sampled", 0)),
        "users": int(summary.get("users", 0)),
        "pages": {s: int(summary.get(("pages", s), 0)) for s in ("train", "valid", "test")},
        "examples": {s: int(summary.get(("examples", s), 0)) for s in ("train", "valid", "test")},
        "avg_clicked_per_page": n1,
        "avg_unclicked_per_page": n0,
        "p_s_plus": ps,
        "p_s_minus": 1.0 - ps,
        "mean_history_length": summary.get("train_history_sum", 0) / te if te else 0.0,
        "activeness_thresholds": activeness_thresholds(user_L),
        "num_users_with_train_examples": int(summary.get("users_with_train_examples", 0)),
        "num_users_with_examples": int(sum(user_L.values())),
        "vocab_sizes": dict(sorted(vocab_sizes.items())),
        "time_cutoffs": None if cutoffs is None else [
            None if math.isinf(c) else int(c) for c in cutoffs],
        "source": source,
        "seed": int(seed),
        "split": split,
        "config": dict(config),
    }
    return stats


class SumCounters:
    """Merge helper for Counters (keeps zero / negative entries unlike ``Counter.__add__``)."""

    @staticmethod
    def merge(counters: Iterable[Counter]) -> Counter:
        out: Counter = Counter()
        for c in counters:
            out.update(c)
        return out
