"""The interface every log source implements.

A source reshapes its input format into *raw canonical rows*: dicts keyed by the canonical field
names of :data:`ctrcore.schema.CANONICAL_FIELDS` (plus ``user_<name>`` profile columns), whose
values are still raw (usually strings, as read). Two bookkeeping keys ride along:

* ``_origin``: where the row came from, ``"<file>:<line>"`` (1-based line / record number),
  used in every error message and dead-letter record;
* ``_raw``: the original line or record (a JSON-able value) for the dead-letter output.

Type coercion and validation happen once, in :mod:`pipelines.canonical`, for every source.
A line a source cannot reshape at all (wrong column count, broken JSON, ...) is emitted as a
:class:`DeadLetter` instead of a row.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

RawRow = Dict[str, Any]

#: default plausible timestamps, unix seconds ``[min, max)``: 1970-01-01 .. 2100-01-01 UTC.
#: It accepts every built-in source (``amazon_beauty``'s relative per-user clock starts at 0;
#: MIND's history rows are synthesized seconds before its first impression, 2019-11-09).
DEFAULT_TIMESTAMP_RANGE: Tuple[int, int] = (0, 4102444800)


@dataclasses.dataclass
class DeadLetter:
    reason: str  # short machine-readable reason, e.g. "missing_field", "unparsable_timestamp"
    detail: str  # human-readable: names the file/row/field/value
    origin: str  # "<file>:<line>"
    raw: Any  # the original line/record

    def to_json(self) -> dict:
        return {"reason": self.reason, "detail": self.detail, "origin": self.origin,
                "raw": self.raw}


class Source:
    """Base class. Subclasses set the class attributes and implement :meth:`read`."""

    name: str = "base"
    #: True for logs with positives only (reviews, purchases): negatives are sampled by the
    #: preprocessing job (``--negatives_per_positive``, seeded) from items the user never
    #: interacted with, and every (user, timestamp) event becomes a page.
    positives_only: bool = False
    #: "time" (split pages by timestamp quantiles) or "leave_last_out" (per user: last page test,
    #: second-last valid, rest train).
    split: str = "time"
    #: format of the raw timestamp values: "unix" (int seconds), "unix_ms", "iso" (ISO 8601) or a strptime format.
    timestamp_format: str = "unix"
    #: user profile column names (without the "user_" prefix) the source provides.
    user_profile: Sequence[str] = ()
    #: raw click value -> 0/1 (``None`` = accept 0/1/true/false).
    label_values: Optional[Dict[str, int]] = None
    #: plausible timestamps, unix seconds ``(min, max)`` (max excluded); a row outside is a
    #: ``timestamp_out_of_range`` dead letter. ``None`` = no check.
    timestamp_range: Optional[Tuple[int, int]] = DEFAULT_TIMESTAMP_RANGE

    def canonical_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`pipelines.canonical.canonicalize` for this source."""
        return {"timestamp_format": self.timestamp_format, "label_values": self.label_values,
                "positives_only": self.positives_only,
                "timestamp_range": self.timestamp_range}

    def files(self) -> Sequence[str]:
        """Input files (for documentation / stats)."""
        raise NotImplementedError

    def read(self) -> Iterator[Union[RawRow, DeadLetter]]:
        """Yield raw canonical rows and dead letters, in a deterministic order.

        The Beam job does not call this: :class:`pipelines.transforms.ReadSource` reads the
        pieces of every file (:meth:`plan`, :meth:`read_shard`) in parallel.
        """
        for path in self.files():
            yield from self.read_file(path)

    def read_file(self, path: str) -> Iterator[Union[RawRow, DeadLetter]]:
        raise NotImplementedError

    def plan(self, path: str) -> Sequence[Any]:
        """The pieces (:class:`pipelines.sources.fileio.Shard`) the Beam job reads ``path`` as,
        in parallel. Default: the whole file, read by :meth:`read_file`."""
        from pipelines.sources.fileio import Shard

        return [Shard(path, "file")]

    def read_shard(self, shard: Any, newlines_before: int = 0
                   ) -> Iterator[Union[RawRow, DeadLetter]]:
        """Rows of one piece from :meth:`plan`; ``newlines_before``: newlines in the file before
        a text shard's byte range (its first line number is derived from it)."""
        return self.read_file(shard.path)
