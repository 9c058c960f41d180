"""``amazon_beauty`` source: Amazon Beauty 5-core as preprocessed by S3Rec / TimeWeaver.

Input: the directory with ``s3rec_Beauty.txt`` (``user item_1 ... item_n``, chronological),
``timeweaver_Beauty_time_intervals.txt`` (the same items, a tab, then seconds since the user's
previous review, first = 0) and ``s3rec_Beauty_item2attributes.json`` (item -> attribute ids).
The two sequence files are joined line by line; a line whose items differ between them, or
whose number of deltas differs from its number of items, is a ``misaligned_line`` dead letter.

Positives only (every row is a review, ``clicked=1``); negatives are sampled by the
preprocessing job and the split is ``leave_last_out`` (AQCL's protocol). Documented choices:

* ``timestamp`` = cumulative sum of the deltas + the 0-based index in the sequence. The deltas
  have day resolution, so without the index several reviews of a day would share one
  timestamp and merge into one (user, timestamp) page; adding the index (< 205 s) keeps every
  review its own event and keeps "last interaction = test". The clock is relative per user
  (starts at 0): absolute dates are not in these files, so a ``time`` split is meaningless.
* ``page_id`` = ``"<user>:<index>"`` (canonical.py re-derives ``user@timestamp`` for
  positives-only sources; both identify the same event).
* ``trigger_item_id`` = the previous item of the user's sequence (``""`` for the first): a
  stand-in, the log has no trigger.
* Attributes are brand + sub-categories in one id space without names. S3Rec lists the brand
  first, then the category path from general to specific. Verified on the data: 443 ids occur
  first in some list, and 435 of them occur *only* first (brands); the 8 others also occur at
  later positions (categories of items without a brand). So: an attribute that never appears
  after the first position anywhere is a *brand*; ``seller_id`` = the item's brand (``""`` if
  its first attribute is not a brand) and ``category_id`` = its last non-brand attribute (the
  most specific sub-category; 195 distinct), ``""`` if it has none.
"""
from __future__ import annotations

import json
from typing import Dict, Iterator, List, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from pipelines.canonical import origin_key
from pipelines.sources.base import DeadLetter, RawRow
from pipelines.sources.generic import RowSource, iter_lines

SEQUENCES = "s3rec_Beauty.txt"
INTERVALS = "timeweaver_Beauty_time_intervals.txt"
ATTRIBUTES = "s3rec_Beauty_item2attributes.json"


def item_side_features(item2attrs: Dict[str, List[int]]) -> Dict[str, Tuple[str, str]]:
    """item -> (category_id, seller_id) by the brand rule of the module docstring."""
    later = {a for attrs in item2attrs.values() for a in attrs[1:]}
    out = {}
    for item, attrs in item2attrs.items():
        brand = attrs[0] if attrs and attrs[0] not in later else None
        cats = [a for a in attrs if a != brand]
        out[str(item)] = (str(cats[-1]) if cats else "", "" if brand is None else str(brand))
    return out


class AmazonBeautySource(RowSource):
    name = "amazon_beauty"
    positives_only = True
    split = "leave_last_out"
    timestamp_format = "unix"
    user_profile = ()
    label_values = None
    EXPECTED_COUNTS = {"users": 22363, "items": 12101, "interactions": 198502}

    def __init__(self, input: str):
        self.dir = input
        self.sequences = FileSystems.join(input, SEQUENCES)
        self.intervals = FileSystems.join(input, INTERVALS)
        self.attributes = FileSystems.join(input, ATTRIBUTES)
        for p in (self.sequences, self.intervals):
            if not FileSystems.exists(p):
                raise FileNotFoundError(f"Amazon Beauty file {p} not found (expected "
                                        f"{SEQUENCES}, {INTERVALS} and {ATTRIBUTES} in {input})")

    def files(self) -> List[str]:
        return [self.sequences]

    def item_features(self) -> Dict[str, Tuple[str, str]]:
        if not FileSystems.exists(self.attributes):
            return {}
        with FileSystems.open(self.attributes) as fh:
            return item_side_features(json.loads(fh.read().decode("utf-8-sig")))

    def read_file(self, path: str) -> Iterator[Union[RawRow, DeadLetter]]:
        feats = self.item_features()
        intervals = FileSystems.join(FileSystems.split(path)[0], INTERVALS)
        for line_no, seq, tw in _zip_lines(_lines(path), _lines(intervals)):
            origin = f"{path}:{line_no}"
            if isinstance(seq, DeadLetter):
                yield seq
                continue
            if isinstance(tw, DeadLetter):
                yield DeadLetter(tw.reason, f"{origin}: line {line_no} of {intervals}: "
                                 f"{tw.detail}", origin, tw.raw)
                continue
            if seq is None or tw is None:
                yield DeadLetter("misaligned_line", f"{origin}: {INTERVALS} has a different "
                                 "number of lines", origin, seq if seq is not None else tw)
                continue
            if not seq.strip():
                continue
            ids = seq.split()
            tw_items, _, tw_deltas = tw.partition("\t")
            deltas = tw_deltas.split()
            if tw_items.split() != ids or len(deltas) != len(ids) - 1:
                yield DeadLetter("misaligned_line",
                                 f"{origin}: items or number of time deltas differ from line "
                                 f"{line_no} of {intervals}", origin, {"sequence": seq,
                                                                       "intervals": tw})
                continue
            user, items = ids[0], ids[1:]
            try:
                steps = [int(d) for d in deltas]
            except ValueError:
                yield DeadLetter("unparsable_timestamp", f"{origin}: non-integer delta in line "
                                 f"{line_no} of {intervals}", origin, tw)
                continue
            clock = 0
            for i, (item, delta) in enumerate(zip(items, steps)):
                clock += delta
                cat, brand = feats.get(item, ("", ""))
                yield {"page_id": f"{user}:{i}", "user_id": user, "item_id": item,
                       "clicked": 1, "timestamp": clock + i, "position": 0,
                       "trigger_item_id": items[i - 1] if i else "", "category_id": cat,
                       "seller_id": brand, "is_history": 0, "_origin": origin,
                       "_raw": {"user": user, "index": i, "item": item, "delta": delta}}


def _lines(path: str):
    """(line_no, line) of a text file, a line that cannot be read as (line_no, DeadLetter)."""
    for item in iter_lines(path):
        yield (origin_key(item.origin)[1], item) if isinstance(item, DeadLetter) else item


def _zip_lines(a, b):
    """Join two (line_no, line) iterators line by line -> (line_no, line_a, line_b); the
    shorter one is padded with None."""
    while True:
        x, y = next(a, None), next(b, None)
        if x is None and y is None:
            return
        yield (x or y)[0], x and x[1], y and y[1]
