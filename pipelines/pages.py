"""Per-user organisation of canonical rows: duplicate detection and grouping into pages.

A *page* is one request of one user: the rows sharing ``(user_id, page_id)`` (the job groups by
user first, so the same ``page_id`` under two users is two pages). Its timestamp is the minimum
timestamp of its rows; its items keep log (origin) order.

Duplicates: the same item exposed twice on one page keeps the first row by origin order
(``file``, then line number) and dead-letters the others with reason ``duplicate_exposure``.

History-only rows (``is_history=1``) are deduplicated only when *exact* duplicates come from
different source records: list-shaped logs such as MIND repeat a user's whole history on every
impression row of the user, and a flat log may hold the same history line twice. Two history
rows are exact duplicates when every canonical field (user, item, timestamp, sides, profile
...) is equal. Within one record (``"<file>:<line>#<k>"`` origins share ``<file>:<line>``),
repeats are kept - they are the data (a user who clicked the same item twice): the n-th equal
row of a record is a duplicate only if an earlier record already had an n-th equal row. So a
user keeps, per distinct history row, the largest number of copies any one record holds (a
history that grows from one record to the next keeps its new ids). The others are
dead-lettered with reason ``duplicate_history``, naming the first kept origin, so
``rows_read == rows_used + rows_dead_letter`` still holds.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

from pipelines.canonical import ORIGIN, RAW, origin_key
from pipelines.sources.base import DeadLetter

Row = Dict[str, Any]


class UserLog:
    """A user's clean rows: ``pages`` = [(page_id, ts, [rows])] sorted by (ts, page_id),
    ``history`` = history-only rows (origin order)."""

    __slots__ = ("user_id", "pages", "history")

    def __init__(self, user_id: str, pages: List[Tuple[str, int, List[Row]]], history: List[Row]):
        self.user_id, self.pages, self.history = user_id, pages, history

    def __reduce__(self):
        return (UserLog, (self.user_id, self.pages, self.history))

    def num_rows(self) -> int:
        return len(self.history) + sum(len(r) for _, _, r in self.pages)


def _duplicate(r: Row, reason: str, what: str) -> DeadLetter:
    """The dead letter of row ``r``, a duplicate of an earlier row (``what`` says which)."""
    return DeadLetter(reason=reason, origin=r[ORIGIN], raw=r.get(RAW),
                      detail=f"{r[ORIGIN]}: field 'item_id' value {r['item_id']!r}: {what} "
                             "(first kept)")


def organize_user(user_id: str, rows: Iterable[Row]) -> Tuple[UserLog, List[DeadLetter]]:
    """Deduplicate and group one user's canonical rows. ``_raw`` is dropped from kept rows."""
    rows = sorted(rows, key=lambda r: origin_key(r[ORIGIN]))
    first: Dict[Tuple[str, str], str] = {}
    pages: Dict[str, List[Row]] = {}
    history: List[Row] = []
    dead: List[DeadLetter] = []
    hist_first: Dict[Tuple[tuple, int], str] = {}  # (content, n-th copy in its record) -> origin
    hist_copies: Dict[Tuple[tuple, tuple], int] = {}  # (record, content) -> copies so far
    for r in rows:
        if r["is_history"]:
            content = tuple(sorted((k, v) for k, v in r.items() if k not in (ORIGIN, RAW)))
            record = origin_key(r[ORIGIN])[:2]
            n = hist_copies.get((record, content), 0)
            hist_copies[(record, content)] = n + 1
            seen = hist_first.get((content, n))
            if seen is not None:
                dead.append(_duplicate(r, "duplicate_history", (
                    f"the same history row (timestamp {r['timestamp']!r}) of user "
                    f"{user_id!r} is already at {seen}")))
                continue
            hist_first[(content, n)] = r[ORIGIN]
            r.pop(RAW, None)
            history.append(r)
            continue
        key = (r["page_id"], r["item_id"])
        seen = first.get(key)
        if seen is not None:
            dead.append(_duplicate(r, "duplicate_exposure", (
                f"item already exposed on page {r['page_id']!r} of user {user_id!r} at {seen}")))
            continue
        first[key] = r[ORIGIN]
        r.pop(RAW, None)
        pages.setdefault(r["page_id"], []).append(r)
    page_list = sorted(((pid, min(x["timestamp"] for x in prs), prs)
                        for pid, prs in pages.items()), key=lambda t: (t[1], t[0]))
    return UserLog(user_id, page_list, history), dead
