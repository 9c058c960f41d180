"""Per-user organisation of canonical rows: duplicate detection and grouping into pages.

A *page* is one request of one user: the rows sharing ``(user_id, page_id)`` (the job groups by
user first, so the same ``page_id`` under two users is two pages). Its timestamp is the minimum
timestamp of its rows; its items keep log (origin) order.

Duplicates: the same item exposed twice on one page keeps the first row by origin order
(``file``, then line number) and dead-letters the others with reason ``duplicate_exposure``.
History-only rows (``is_history=1``) are not exposures and are never deduplicated.
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


def organize_user(user_id: str, rows: Iterable[Row]) -> Tuple[UserLog, List[DeadLetter]]:
    """Deduplicate and group one user's canonical rows. ``_raw`` is dropped from kept rows."""
    rows = sorted(rows, key=lambda r: origin_key(r[ORIGIN]))
    first: Dict[Tuple[str, str], str] = {}
    pages: Dict[str, List[Row]] = {}
    history: List[Row] = []
    dead: List[DeadLetter] = []
    for r in rows:
        if r["is_history"]:
            r.pop(RAW, None)
            history.append(r)
            continue
        key = (r["page_id"], r["item_id"])
        seen = first.get(key)
        if seen is not None:
            dead.append(DeadLetter(
                reason="duplicate_exposure",
                detail=(f"{r[ORIGIN]}: field 'item_id' value {r['item_id']!r}: item already "
                        f"exposed on page {r['page_id']!r} of user {user_id!r} at {seen} "
                        f"(first kept)"),
                origin=r[ORIGIN], raw=r.get(RAW)))
            continue
        first[key] = r[ORIGIN]
        r.pop(RAW, None)
        pages.setdefault(r["page_id"], []).append(r)
    page_list = sorted(((pid, min(x["timestamp"] for x in prs), prs)
                        for pid, prs in pages.items()), key=lambda t: (t[1], t[0]))
    return UserLog(user_id, page_list, history), dead
