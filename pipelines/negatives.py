"""Seeded randomness and negative sampling for positives-only logs (reviews, purchases).

Every random choice of the job draws from :func:`stable_random` seeded by ``--seed`` and the
identity of what is being decided (user, page, target), never by worker, bundle or arrival order,
so the job's output is the same on any runner and any parallelism.

Negative sampling: for every positive exposure of a page, ``negatives_per_positive`` items are
drawn uniformly (without replacement within the page) from the item universe - every distinct
item of the clean log, sorted - minus the items the user ever interacted with in the whole log
(exposures and history). If the user interacted with (nearly) every item, fewer negatives are
drawn; the number actually drawn is reported as ``negatives_sampled``.
"""
from __future__ import annotations

import hashlib
import random
from typing import Collection, List, Sequence


def stable_seed(*parts) -> int:
    """A 64-bit seed from the parts' string forms (stable across processes and Python runs)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def stable_random(*parts) -> random.Random:
    return random.Random(stable_seed(*parts))


def sample_negatives(rng: random.Random, universe: Sequence[str], excluded: Collection[str],
                     n: int) -> List[str]:
    """Draw up to ``n`` distinct items uniformly from ``universe`` minus ``excluded``.

    Rejection sampling (expected O(n) when few items are excluded); falls back to an explicit
    complement when rejection keeps failing (a user who interacted with most of the universe).
    """
    if n <= 0 or not universe:
        return []
    out: List[str] = []
    taken = set()
    tries = 0
    limit = 20 * n + 20
    while len(out) < n and tries < limit:
        tries += 1
        item = universe[rng.randrange(len(universe))]
        if item in excluded or item in taken:
            continue
        taken.add(item)
        out.append(item)
    if len(out) < n:
        rest = [i for i in universe if i not in excluded and i not in taken]
        out.extend(rng.sample(rest, min(n - len(out), len(rest))))
    return out
