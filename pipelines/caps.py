"""Per-user row cap: bound what one user key can cost the preprocessing job.

The job groups every row of a user on one worker (``pipelines.filegroup``) and builds all of
that user's examples in one call, with behaviour sequences drawn from the user's whole history.
A crawler, a bot or a shared device id with 10^5-10^7 events is then one key whose rows, pages
and examples must all fit one worker, and whose example building runs as one unsplittable
piece of work: one key can stall a worker or exhaust its memory while the others idle.

``--max_rows_per_user=N`` (default :data:`DEFAULT_MAX_ROWS_PER_USER`; 0 = no cap) keeps each
user's ``N`` most recent rows and cuts the rest *before* deduplication and page grouping:

* "most recent" orders rows by ``timestamp``, then by origin (:func:`pipelines.canonical
  .origin_key`: file, line number, row within a list-shaped record; a later origin is more
  recent, as in the example builder's click history). Every row of the user counts: exposures
  and history rows (``is_history=1``) alike. The order is total (origins are unique), so the
  rows kept do not depend on the order the runner delivers them in;
* every cut row becomes a :class:`~pipelines.sources.base.DeadLetter` with reason
  :data:`REASON` (``user_row_cap``) whose detail names the user, the cap, the flag and the
  user's row count, so ``rows_read == rows_used + rows_dead_letter`` still holds and
  ``stats.json``'s ``dead_letter_reasons`` says how many rows were cut;
* a page straddling the cut keeps its recent rows only (its context then lacks the cut items).

:class:`UserRowCap` does it in one pass over an iterable with a heap of at most ``N`` rows, so
it also bounds memory when a runner hands over a large group as a lazy iterable (Dataflow pages
large ``GroupByKey`` values from shuffle); :func:`cap_user_rows` is the list form.
"""
from __future__ import annotations

import heapq
from typing import Any, Dict, Iterable, List, Optional, Tuple

from pipelines.canonical import ORIGIN, RAW, origin_key
from pipelines.sources.base import DeadLetter

Row = Dict[str, Any]

#: reason of the dead letters of cut rows
REASON = "user_row_cap"
#: the job's flag (named in every dead letter's detail)
FLAG = "--max_rows_per_user"
#: intended default: well above every real user seen here (heaviest user: 970 rows in the 1M-row
#: synthetic log, 837 in the MIND sample, 204 in Amazon Beauty), and small enough that one
#: user's example building stays a few seconds and a few hundred MB (benchmarks/RESULTS_preprocess.md)
DEFAULT_MAX_ROWS_PER_USER = 20_000


def recency_key(row: Row) -> Tuple[Any, tuple]:
    """``(timestamp, origin_key(origin))``: larger = more recent."""
    return row["timestamp"], origin_key(str(row.get(ORIGIN, "?:0")))


def check_max_rows(max_rows: Optional[int]) -> int:
    """``max_rows`` as an int >= 0 (``None`` = 0 = no cap); raises naming the flag."""
    if max_rows is None:
        return 0
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0:
        raise ValueError(f"{FLAG}={max_rows!r} must be an integer >= 0 (0 = no cap)")
    return max_rows


def _dead(user_id: str, row: Row, max_rows: int, total: Optional[int]) -> DeadLetter:
    origin = str(row.get(ORIGIN, "?:0"))
    of = f"{total} rows" if total is not None else f"more than {max_rows} rows"
    return DeadLetter(
        reason=REASON,
        detail=(f"{origin}: user {user_id!r} has {of}, over the cap of {max_rows} rows per user "
                f"({FLAG}={max_rows}; 0 = no cap): this row (timestamp {row.get('timestamp')!r}) "
                f"is older than the user's {max_rows} most recent rows, which are kept"),
        origin=origin, raw=row.get(RAW))


class UserRowCap:
    """Streaming cap of one user's rows: ``add(row)`` returns the DeadLetter of a row cut now
    (or ``None``), ``kept()`` the rows kept, in arrival order. Holds at most ``max_rows`` rows.

    A row is cut as soon as ``max_rows`` more recent rows have been seen, so the cut rows can be
    emitted while the group is still being read; their detail then cannot know the user's
    final row count (it says "more than N rows"). :func:`cap_user_rows` gives the count."""

    def __init__(self, user_id: str, max_rows: int):
        self.user_id = user_id
        self.max_rows = check_max_rows(max_rows)
        self._heap: List[tuple] = []  # (recency key, arrival index, row): a min-heap
        self._all: List[Row] = []  # used only when there is no cap
        self.seen = 0
        self.cut = 0

    def add(self, row: Row) -> Optional[DeadLetter]:
        i = self.seen
        self.seen += 1
        if not self.max_rows:
            self._all.append(row)
            return None
        item = (recency_key(row), i, row)
        if len(self._heap) < self.max_rows:
            heapq.heappush(self._heap, item)
            return None
        if item[:2] < self._heap[0][:2]:
            oldest = item  # older than all kept: cut it at once
        else:
            oldest = heapq.heapreplace(self._heap, item)
        self.cut += 1
        return _dead(self.user_id, oldest[2], self.max_rows, None)

    def kept(self) -> List[Row]:
        if not self.max_rows:
            return list(self._all)
        return [r for _, _, r in sorted(self._heap, key=lambda t: t[1])]


def cap_user_rows(user_id: str, rows: Iterable[Row], max_rows: Optional[int]
                  ) -> Tuple[List[Row], List[DeadLetter]]:
    """Keep the user's ``max_rows`` most recent rows (by timestamp, then origin).

    Returns ``(kept_rows, dead_letters)``: the kept rows in their input order, and one
    ``user_row_cap`` DeadLetter per cut row, oldest first. ``max_rows`` 0 or ``None`` keeps
    every row. The rows are not copied or modified (``_raw`` stays for the dead letters of
    later steps)."""
    max_rows = check_max_rows(max_rows)
    rows = rows if isinstance(rows, list) else list(rows)
    n = len(rows)
    if not max_rows or n <= max_rows:
        return list(rows), []
    order = sorted(range(n), key=lambda i: (recency_key(rows[i]), i))
    cut = order[:n - max_rows]
    cut_set = set(cut)
    kept = [r for i, r in enumerate(rows) if i not in cut_set]
    return kept, [_dead(user_id, rows[i], max_rows, n) for i in cut]
