"""List-shaped log records -> raw canonical rows (pure functions, no Beam, no I/O).

Used by :class:`pipelines.sources.generic.GenericSource` when a mapping (or one of its
``tables``) has an ``exposures`` and/or a ``history`` section (docs/mapping.md, "List-shaped
logs"). One source record (a page row or a user row) expands into several raw canonical rows:

* **exposures** - one row per shown item of a page row, from
  - ``items`` (a list of shown ids) + ``clicked_items`` (a list, usually a subset, of the clicked
    ids: ``clicked`` = 1 if the id is in it, else 0), or
  - ``items`` + ``labels`` (a list of raw click labels, parallel to ``items``), or
  - ``tokens``: ``item<label_separator>label`` tokens such as MIND's ``N123-1 N456-0`` (split at
    the *last* ``label_separator``), or
  - ``items`` alone, for positives-only logs (every item clicked).

  Every exposure row also gets the record's scalar mapped columns and ``constants`` (page id,
  user, timestamp, trigger, profile, ...), ``position`` = its 0-based index in the list (unless
  ``"position": false``) and, with ``"trigger_from_history": true``, ``trigger_item_id`` = the
  last id of the same record's history list (``""`` if empty).
* **history** - one ``is_history=1`` row per id of a user's history list, with its timestamp
  from a parallel ``timestamps`` list, or the constant raw ``timestamp`` of the mapping (for
  logs whose history has no times, such as MIND: a time before the log window). History rows
  carry ``user_id``, the ``user_<p>`` profile values, ``constants`` of ``category_id`` /
  ``seller_id`` / ``user_<p>``, ``clicked=1`` and ``page_id=""`` - nothing page-level.

A list value may be a real list (Parquet list column, JSON array), a delimited string
(``separator``; ``null`` = any whitespace; pieces are stripped and empty pieces skipped), a
scalar (a one-element list) or ``None`` / missing.

Origins: the k-th item (row *or* dead letter) emitted for a record gets ``"<file>:<line>#<k>"``
(history rows first, in history order, then the exposures in list order), which
:func:`pipelines.canonical.origin_key` sorts as (file, line, k). ``_raw`` is compact: the
record's scalar mapped source values (a history row: the user column only) plus the one list
element and its ``index``.

Dead letters (every one names the origin, the mapping field, the source column and the value):

* ``bad_list_token``      a token without the label separator, or with an empty item id
                          (the record's other tokens are still used);
* ``list_length_mismatch`` ``items``/``labels`` or history ``items``/``timestamps`` of different
                          lengths (one dead letter for that list pair; the record's other list
                          section is still used);
* ``clicked_not_shown``   an id of ``clicked_items`` that is not in ``items`` (one per id);
* ``empty_list``          a page row whose shown list is empty (it would otherwise vanish
                          without a trace; an empty *history* is normal and yields nothing);
* ``missing_field``       the shown-items / tokens column is null or absent in the record.

Values are not coerced here (``clicked`` stays the raw label, timestamps raw): that is
:func:`pipelines.canonical.canonicalize`'s job, as for flat records.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ctrcore.schema import USER_PROFILE_PREFIX
from pipelines.sources.base import DeadLetter, RawRow

#: fields a history row takes from ``constants`` (everything else there is page-level)
HISTORY_CONSTANT_FIELDS = ("category_id", "seller_id")

EXPOSURE_KEYS = ("items", "clicked_items", "labels", "tokens", "separator", "label_separator",
                 "position", "trigger_from_history")
HISTORY_KEYS = ("items", "timestamps", "timestamp", "separator")


class ListSpecError(ValueError):
    """An invalid ``exposures`` / ``history`` section (wrapped into a MappingError)."""


@dataclasses.dataclass(frozen=True)
class ExposureSpec:
    """``exposures`` section: where a page row's shown items and their labels are."""

    items: Optional[str] = None  # source column: list of shown ids
    clicked_items: Optional[str] = None  # source column: list of clicked ids (subset of items)
    labels: Optional[str] = None  # source column: list of raw labels parallel to items
    tokens: Optional[str] = None  # source column: "item<label_separator>label" tokens
    separator: Optional[str] = None  # for string values; None = any whitespace
    label_separator: str = "-"
    position: bool = True  # position = 0-based index in the list
    trigger_from_history: bool = False  # trigger_item_id = last id of the record's history

    def columns(self) -> Dict[str, str]:
        """Pseudo field ("exposures.<key>") -> source column, for header checks/column reads."""
        return {f"exposures.{k}": getattr(self, k)
                for k in ("items", "clicked_items", "labels", "tokens") if getattr(self, k)}

    def fields(self) -> Tuple[str, ...]:
        """Canonical fields this section provides (must not be mapped in ``columns``)."""
        out = ("item_id", "clicked", "is_history")
        if self.position:
            out += ("position",)
        if self.trigger_from_history:
            out += ("trigger_item_id",)
        return out


@dataclasses.dataclass(frozen=True)
class HistorySpec:
    """``history`` section: a user's history ids and their timestamps."""

    items: str  # source column: list of history ids
    timestamps: Optional[str] = None  # source column: list of raw timestamps parallel to items
    timestamp: Any = None  # constant raw timestamp of every history row (no timestamps list)
    separator: Optional[str] = None

    def columns(self) -> Dict[str, str]:
        return {f"history.{k}": getattr(self, k) for k in ("items", "timestamps")
                if getattr(self, k)}


def _column(d: Mapping[str, Any], key: str, section: str) -> Optional[str]:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)  # header-less CSV position
    if not isinstance(v, str) or not v:
        raise ListSpecError(f"\"{section}\".{key} must be a source column name, got {v!r}")
    return v


def _separator(d: Mapping[str, Any], key: str, section: str, default=None) -> Optional[str]:
    v = d.get(key, default)
    if v is not None and (not isinstance(v, str) or not v):
        raise ListSpecError(f"\"{section}\".{key} must be a non-empty string or null "
                            f"(null = any whitespace), got {v!r}")
    return v


def _bool(d: Mapping[str, Any], key: str, section: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise ListSpecError(f"\"{section}\".{key} must be true/false, got {v!r}")
    return v


def _check_keys(d: Any, allowed: Tuple[str, ...], section: str) -> None:
    if not isinstance(d, dict):
        raise ListSpecError(f"\"{section}\" must be an object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ListSpecError(f"unknown key(s) {unknown} in \"{section}\" (allowed: {list(allowed)})")


def parse_exposures(d: Any, *, positives_only: bool = False) -> ExposureSpec:
    """Validate an ``exposures`` section. Raises ListSpecError."""
    _check_keys(d, EXPOSURE_KEYS, "exposures")
    s = "exposures"
    spec = ExposureSpec(items=_column(d, "items", s), clicked_items=_column(d, "clicked_items", s),
                        labels=_column(d, "labels", s), tokens=_column(d, "tokens", s),
                        separator=_separator(d, "separator", s),
                        label_separator=_separator(d, "label_separator", s, "-"),
                        position=_bool(d, "position", s, True),
                        trigger_from_history=_bool(d, "trigger_from_history", s, False))
    if spec.label_separator is None:
        raise ListSpecError("\"exposures\".label_separator must be a non-empty string")
    if spec.tokens:
        if spec.items or spec.clicked_items or spec.labels:
            raise ListSpecError("\"exposures\": give either \"tokens\" or \"items\" (with "
                                "\"clicked_items\" or \"labels\"), not both")
        return spec
    if not spec.items:
        raise ListSpecError("\"exposures\" needs \"items\" (a list column of shown ids) or "
                            "\"tokens\" (item-label tokens)")
    if spec.clicked_items and spec.labels:
        raise ListSpecError("\"exposures\": give \"clicked_items\" or \"labels\", not both")
    if not (spec.clicked_items or spec.labels or positives_only):
        raise ListSpecError("\"exposures\" needs \"clicked_items\" (list of clicked ids) or "
                            "\"labels\" (labels parallel to \"items\"); \"items\" alone only "
                            "for positives_only logs")
    return spec


def parse_history(d: Any) -> HistorySpec:
    """Validate a ``history`` section. Raises ListSpecError."""
    _check_keys(d, HISTORY_KEYS, "history")
    s = "history"
    items = _column(d, "items", s)
    if not items:
        raise ListSpecError("\"history\" needs \"items\" (a list column of history ids)")
    ts_col, ts_const = _column(d, "timestamps", s), d.get("timestamp")
    if (ts_col is None) == (ts_const is None):
        raise ListSpecError("\"history\" needs exactly one of \"timestamps\" (a list column "
                            "parallel to \"items\") or \"timestamp\" (one constant raw "
                            "timestamp, e.g. before the log window, for logs whose history "
                            "has no times)")
    if isinstance(ts_const, (bool, dict, list)):
        raise ListSpecError(f"\"history\".timestamp must be a raw timestamp (string or number) "
                            f"in the mapping's timestamp_format, got {ts_const!r}")
    return HistorySpec(items=items, timestamps=ts_col, timestamp=ts_const,
                       separator=_separator(d, "separator", s))


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------
def split_list(value: Any, separator: Optional[str] = None) -> Optional[List[Any]]:
    """A list-valued cell -> Python list (``None`` stays ``None``): lists/tuples as they are,
    strings split at ``separator`` (``None`` = whitespace; pieces stripped, empty ones
    skipped), any other scalar -> a one-element list."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        if separator is None:
            return value.split()
        return [p.strip() for p in value.split(separator) if p.strip()]
    return [value]


def _id_key(v: Any) -> Any:
    """Comparable form of an id (``7``, ``7.0`` and ``" 7 "`` are the same id)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v.strip()
    try:
        return json.dumps(v, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(v)


def _short(v: Any, limit: int = 200) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


class _Emitter:
    """Numbers the items emitted for one record: origin ``<origin>#<k>``."""

    def __init__(self, origin: str):
        self.origin, self.k = origin, 0

    def next_origin(self) -> str:
        o = f"{self.origin}#{self.k}"
        self.k += 1
        return o


def _dead(em: _Emitter, reason: str, what: str, raw: Any) -> DeadLetter:
    o = em.next_origin()
    return DeadLetter(reason, f"{o}: {what}", o, raw)


def expand_record(origin: str, values: Mapping[str, Any], *, scalars: Mapping[str, str],
                  constants: Mapping[str, Any], exposures: Optional[ExposureSpec] = None,
                  history: Optional[HistorySpec] = None, positives_only: bool = False
                  ) -> Iterator[Union[RawRow, DeadLetter]]:
    """One list-shaped record -> raw canonical rows and dead letters.

    ``values``: the record (source column -> value); ``scalars``: output field (canonical or
    ``user_<p>``) -> source column of the record's scalar fields (copied into every exposure
    row; history rows take ``user_id`` and the profile only); ``constants``: the mapping's
    constants."""
    em = _Emitter(origin)
    base: RawRow = {f: values.get(c) for f, c in scalars.items()}
    raw_base = {c: values.get(c) for c in scalars.values()}
    if history is not None:
        user_raw = {c: raw_base[c] for f, c in scalars.items() if f == "user_id"}
        yield from history_rows(em, values, base, user_raw, constants, history)
    if exposures is not None:
        row_base = dict(base)
        row_base.update(constants)
        if exposures.trigger_from_history:
            hl = (split_list(values.get(history.items), history.separator) or []) \
                if history is not None else []
            row_base["trigger_item_id"] = hl[-1] if hl else ""
        yield from exposure_rows(em, values, row_base, raw_base, exposures, positives_only)


def _length_mismatch(em: "_Emitter", raw_base: Dict[str, Any], what: str, section: str,
                     items_col: str, items_cell: Any, n_items: int, other: str, other_col: str,
                     other_cell: Any, n_other: int, consequence: str) -> DeadLetter:
    """The ``list_length_mismatch`` dead letter of the ``section.items`` list and its parallel
    list ``section.other`` (``what``: how the message names the items field, e.g. ``"field"``)."""
    return _dead(em, "list_length_mismatch",
                 f"{what} '{section}.items' (column {items_col!r}) has {n_items} ids but "
                 f"'{section}.{other}' (column {other_col!r}) has {n_other} {other}; "
                 f"{consequence}",
                 {**raw_base, items_col: items_cell, other_col: other_cell})


def history_rows(em: _Emitter, values: Mapping[str, Any], base: RawRow, raw_base: Dict[str, Any],
                 constants: Mapping[str, Any], spec: HistorySpec
                 ) -> Iterator[Union[RawRow, DeadLetter]]:
    """The ``is_history=1`` rows of one user record (see the module docstring). ``raw_base``:
    the user's source column -> value (the start of every row's and dead letter's ``_raw``)."""
    items = split_list(values.get(spec.items), spec.separator) or []
    if spec.timestamps is not None:
        times = split_list(values.get(spec.timestamps), spec.separator) or []
        if len(times) != len(items):
            yield _length_mismatch(em, raw_base, "history field", "history", spec.items,
                                   values.get(spec.items), len(items), "timestamps",
                                   spec.timestamps, values.get(spec.timestamps), len(times),
                                   "the user's history is not used")
            return
    else:
        times = [spec.timestamp] * len(items)
    hbase: RawRow = {f: v for f, v in base.items()
                     if f == "user_id" or f.startswith(USER_PROFILE_PREFIX)}
    hbase.update({f: v for f, v in constants.items()
                  if f in HISTORY_CONSTANT_FIELDS or f.startswith(USER_PROFILE_PREFIX)})
    hbase.update(page_id="", clicked=1, is_history=1)
    for i, (item, ts) in enumerate(zip(items, times)):
        row = dict(hbase)
        row["item_id"] = item
        row["timestamp"] = ts
        row["_origin"] = em.next_origin()
        raw = {**raw_base, spec.items: item, "index": i}
        if spec.timestamps is not None:
            raw[spec.timestamps] = ts
        row["_raw"] = raw
        yield row


def exposure_rows(em: _Emitter, values: Mapping[str, Any], base: RawRow, raw_base: Dict[str, Any],
                  spec: ExposureSpec, positives_only: bool = False
                  ) -> Iterator[Union[RawRow, DeadLetter]]:
    """The exposure rows of one page record (see the module docstring)."""
    col = spec.tokens or spec.items
    field = "exposures.tokens" if spec.tokens else "exposures.items"
    cell = values.get(col)
    shown = split_list(cell, spec.separator)
    if shown is None:
        yield _dead(em, "missing_field", f"field {field!r} (column {col!r}) is missing or null: "
                    "the page has no list of shown items", dict(raw_base))
        return
    if not shown:
        yield _dead(em, "empty_list", f"field {field!r} (column {col!r}) value {_short(cell)} "
                    "holds no shown items", {**raw_base, col: cell})
        return

    if spec.tokens:
        for i, tok in enumerate(shown):
            item, sep, label = str(tok).strip().rpartition(spec.label_separator)
            if not sep or not item.strip():
                yield _dead(em, "bad_list_token",
                            f"field {field!r} (column {col!r}) token #{i} {_short(tok)} is not "
                            f"'<item>{spec.label_separator}<label>'; the record's other "
                            "tokens are used",
                            {**raw_base, col: tok, "index": i})
                continue
            yield _exposure(em, base, raw_base, spec, i, item.strip(), label.strip(), {col: tok})
        return

    if spec.labels is not None:
        labels = split_list(values.get(spec.labels), spec.separator) or []
        if len(labels) != len(shown):
            yield _length_mismatch(em, raw_base, "field", "exposures", spec.items, cell,
                                   len(shown), "labels", spec.labels, values.get(spec.labels),
                                   len(labels), "the page is not used")
            return
        for i, (item, label) in enumerate(zip(shown, labels)):
            yield _exposure(em, base, raw_base, spec, i, item, label,
                            {spec.items: item, spec.labels: label})
        return

    if spec.clicked_items is None:  # positives-only: every listed item is a positive
        for i, item in enumerate(shown):
            yield _exposure(em, base, raw_base, spec, i, item, 1, {spec.items: item})
        return

    clicked = split_list(values.get(spec.clicked_items), spec.separator) or []
    clicked_keys = {_id_key(c) for c in clicked}
    shown_keys = {_id_key(s) for s in shown}
    for i, item in enumerate(shown):
        hit = _id_key(item) in clicked_keys
        yield _exposure(em, base, raw_base, spec, i, item, int(hit),
                        {spec.items: item, spec.clicked_items: hit})
    for j, c in enumerate(clicked):
        if _id_key(c) not in shown_keys:
            yield _dead(em, "clicked_not_shown",
                        f"field 'exposures.clicked_items' (column {spec.clicked_items!r}) id "
                        f"#{j} {_short(c)} is not in 'exposures.items' (column {spec.items!r})",
                        {**raw_base, spec.clicked_items: c, "index": j})


def _exposure(em: _Emitter, base: RawRow, raw_base: Dict[str, Any], spec: ExposureSpec, i: int,
              item: Any, label: Any, raw_extra: Dict[str, Any]) -> RawRow:
    row = dict(base)
    row["item_id"] = item
    row["clicked"] = label
    row["is_history"] = 0
    if spec.position:
        row["position"] = i
    row["_origin"] = em.next_origin()
    row["_raw"] = {**raw_base, **raw_extra, "index": i}
    return row
