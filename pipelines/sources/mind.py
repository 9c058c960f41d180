"""``mind`` source: MIND (Microsoft News Dataset) ``behaviors.tsv`` + ``news.tsv``.

Input: the directory holding both files (``/work/shared/data/mind_small_sample``; the full
MINDsmall_train / MINDlarge folders have the same layout). Reshaping, documented choices:

* **Page** = one impression row; ``page_id`` = ``impression_id``; every ``newsid-label`` token
  is one exposure row with ``position`` = its 0-based index in the impression list.
* **Trigger** (MIND has none): ``trigger_item_id`` = the last id of the row's ``history`` (the
  user's most recent click before the log window); ``""`` when the history is empty.
* ``category_id`` = the news category and ``seller_id`` = the news subcategory from
  ``news.tsv`` when the news has a row there, else ``""`` (only 284 of 7,457 shown news in the
  sample have one).
* **History**: a user's ``history`` clicks become rows with ``is_history=1``, ``clicked=1``,
  ``page_id=""`` (history rows belong to no page), emitted once per user (with the user's first
  impression row in file order: in MIND the history of a user is the same on all of their
  impression rows - 327 users of the sample have several), in history order; repeated ids within
  one history are kept (they are the data). Their timestamps are ``T0 - (L - i)`` seconds for
  the i-th of L history ids, T0 = the earliest impression time in the file: strictly before
  every impression in the log and in history order. They are written in the file's own time
  format so that one ``timestamp_format`` fits every row.
* **Malformed tokens**: a token with no ``-`` at all is a ``bad_impression_token`` dead letter;
  a token ``id-x`` with a label other than 0/1 becomes a row with ``clicked="x"``, which
  :mod:`pipelines.canonical` dead-letters as ``unknown_label`` naming the origin and value.
* A line without exactly 5 tab-separated columns is a ``bad_column_count`` dead letter (its
  ``raw`` is the whole line). A row's ``_raw`` is compact - the impression id, user, time and
  the one token (or the user, history index and news id) - not the whole line, which would be
  copied into every one of the line's ~38 exposure and ~33 history rows.
"""
from __future__ import annotations

import csv
import datetime
from typing import Dict, Iterator, List, Optional, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from pipelines.sources.base import DeadLetter, RawRow
from pipelines.sources.generic import Record, RowSource, iter_delimited

BEHAVIOR_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")
NEWS_COLUMNS = ("news_id", "category", "subcategory", "title", "abstract", "url",
                "title_entities", "abstract_entities")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"  # e.g. "11/12/2019 2:14:46 PM"


class MindSource(RowSource):
    name = "mind"
    positives_only = False
    split = "time"
    timestamp_format = TIME_FORMAT
    user_profile = ()
    label_values = None  # "0" / "1"
    EXPECTED_COUNTS = {"pages": 5000, "users": 4637, "exposures": 189359, "clicks": 7542}

    def __init__(self, input: str, behaviors: str = "behaviors.tsv", news: str = "news.tsv"):
        self.dir = input
        self.behaviors = FileSystems.join(input, behaviors)
        self.news = FileSystems.join(input, news)
        if not FileSystems.exists(self.behaviors):
            raise FileNotFoundError(f"MIND behaviors file {self.behaviors} not found "
                                    f"(expected {behaviors} and {news} in {input})")
        self._news: Optional[Dict[str, Tuple[str, str]]] = None

    def files(self) -> List[str]:
        return [self.behaviors]

    # -- side input ---------------------------------------------------------------------------
    def news_table(self) -> Dict[str, Tuple[str, str]]:
        """news_id -> (category, subcategory); empty if news.tsv is absent."""
        if self._news is None:
            self._news = {}
            if FileSystems.exists(self.news):
                for rec in iter_delimited(self.news, delimiter="\t", header=False,
                                          fieldnames=NEWS_COLUMNS, quoting=csv.QUOTE_NONE,
                                          strict_columns=False):
                    if isinstance(rec, Record):
                        v = rec.values
                        self._news.setdefault(v["news_id"], (v.get("category") or "",
                                                             v.get("subcategory") or ""))
        return self._news

    def _records(self, path: str):
        return iter_delimited(path, delimiter="\t", header=False, fieldnames=BEHAVIOR_COLUMNS,
                              quoting=csv.QUOTE_NONE)

    def _window_start(self, path: str) -> Optional[datetime.datetime]:
        """Earliest parseable impression time of the file (first pass)."""
        t0 = None
        for rec in self._records(path):
            if isinstance(rec, Record):
                try:
                    t = datetime.datetime.strptime(rec.values["time"].strip(), TIME_FORMAT)
                except ValueError:
                    continue  # canonical.py dead-letters that row's exposures
                t0 = t if t0 is None or t < t0 else t0
        return t0

    # -- reading ------------------------------------------------------------------------------
    def read_file(self, path: str) -> Iterator[Union[RawRow, DeadLetter]]:
        news = self.news_table()
        t0 = self._window_start(path)
        seen_users = set()
        for rec in self._records(path):
            if isinstance(rec, DeadLetter):
                yield rec
                continue
            v = rec.values
            user = v["user_id"]
            history = v["history"].split()
            if user not in seen_users:
                seen_users.add(user)
                if t0 is not None:
                    yield from self._history_rows(rec, user, history, t0, news)
            trigger = history[-1] if history else ""
            for pos, token in enumerate(v["impressions"].split()):
                item, sep, label = token.rpartition("-")
                if not sep or not item:
                    yield DeadLetter("bad_impression_token",
                                     f"{rec.origin}: impression token #{pos} {token!r} is not "
                                     "'<news_id>-<0|1>'", rec.origin, rec.raw)
                    continue
                cat, sub = news.get(item, ("", ""))
                yield {"page_id": v["impression_id"], "user_id": user, "item_id": item,
                       "clicked": label, "timestamp": v["time"], "position": pos,
                       "trigger_item_id": trigger, "category_id": cat, "seller_id": sub,
                       "is_history": 0, "_origin": rec.origin,
                       "_raw": {"impression_id": v["impression_id"], "user_id": user,
                                "time": v["time"], "token": token, "position": pos}}

    @staticmethod
    def _history_rows(rec: Record, user: str, history: List[str], t0: datetime.datetime,
                      news) -> Iterator[RawRow]:
        n = len(history)
        for i, item in enumerate(history):
            ts = (t0 - datetime.timedelta(seconds=n - i)).strftime(TIME_FORMAT)
            cat, sub = news.get(item, ("", ""))
            yield {"page_id": "", "user_id": user, "item_id": item, "clicked": 1,
                   "timestamp": ts, "position": None, "trigger_item_id": "", "category_id": cat,
                   "seller_id": sub, "is_history": 1, "_origin": rec.origin,
                   "_raw": {"user_id": user, "history_index": i, "news_id": item}}
