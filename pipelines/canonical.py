"""Type coercion and validation of raw canonical rows: the one place where every source's rows
become typed canonical rows (``ctrcore.schema.CANONICAL_FIELDS``) or dead letters.

:func:`canonicalize` never raises on bad data: a row it cannot coerce comes back as a
:class:`~pipelines.sources.base.DeadLetter` whose ``detail`` names the origin (``file:line``),
the field and the offending value. Reasons:

* ``missing_field``        a required field is absent (or ``None``);
* ``empty_field``          a required field is the empty string / whitespace;
* ``mistyped_field``       a value cannot be coerced to the field's type (``position="x"``,
                           ``is_history="2"``, a non-string profile value ...);
* ``unparsable_timestamp`` the timestamp does not match the source's ``timestamp_format``;
* ``timestamp_out_of_range`` the parsed timestamp (unix seconds) is outside the source's
                           ``timestamp_range`` ``[min, max)``; the default,
                           :data:`~pipelines.sources.base.DEFAULT_TIMESTAMP_RANGE`, is
                           ``[0, 4102444800)`` = 1970-01-01 .. 2100-01-01 UTC, which accepts every
                           built-in source (``amazon_beauty``'s relative per-user clock starts at
                           0; MIND's history rows sit seconds before its first impression,
                           2019-11-09) and rejects e.g. ``99999999999999999999``, a year in the
                           trillions, or unix milliseconds read as seconds;
* ``control_character``    a string id (``page_id``, ``user_id``, ``item_id``,
                           ``trigger_item_id``, ``category_id``, ``seller_id``, ``user_<p>``)
                           contains a control character (Unicode category Cc: the C0 controls
                           U+0000-U+001F such as NUL or a tab, DEL U+007F and the C1 controls
                           U+0080-U+009F) after the surrounding whitespace is stripped; the
                           detail shows the value escaped (``repr``);
* ``unknown_label``        the click label is not one of the accepted label values.

Rules for the optional fields: ``position`` defaults to -1, ``trigger_item_id`` /
``category_id`` / ``seller_id`` and ``user_<p>`` profile columns to ``""``, ``is_history`` to 0.
A history-only row (``is_history=1``) is a click known only as user history: it needs no
``page_id`` and its ``clicked`` defaults to 1. For positives-only sources each (user, timestamp)
event is a page: ``page_id`` is derived as ``"<user_id>@<timestamp>"`` (any source page id is
ignored) and ``clicked`` defaults to 1.
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from ctrcore.schema import CANONICAL_FIELDS, USER_PROFILE_PREFIX
from pipelines.sources.base import DEFAULT_TIMESTAMP_RANGE, DeadLetter, RawRow

ORIGIN = "_origin"
RAW = "_raw"

#: accepted click values when a source declares no ``label_values``
DEFAULT_LABEL_VALUES: Dict[str, int] = {
    "0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1, "False": 0, "True": 1}

_STR_FIELDS = tuple(k for k, (t, _) in CANONICAL_FIELDS.items() if t is str)
#: Unicode category Cc, exactly: C0 controls, DEL, C1 controls
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class _Bad(Exception):
    def __init__(self, reason: str, field: str, value: Any, why: str = ""):
        super().__init__(reason)
        self.reason, self.field, self.value, self.why = reason, field, value, why


def _is_empty(v: Any) -> bool:
    return isinstance(v, str) and not v.strip()


def _to_str(field: str, v: Any) -> str:
    if isinstance(v, str):
        s = v.strip()
        m = _CONTROL.search(s)
        if m:
            raise _Bad("control_character", field, v,
                       f"control character U+{ord(m.group()):04X} at index {m.start()}")
        return s
    if isinstance(v, bool):
        raise _Bad("mistyped_field", field, v, "expected a string id")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # ids read as floats by a CSV/Parquet reader
    raise _Bad("mistyped_field", field, v, "expected a string id")


def _to_int(field: str, v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise _Bad("mistyped_field", field, v, "expected an integer")
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise _Bad("mistyped_field", field, v, "expected an integer") from None
            if math.isfinite(f) and f.is_integer():
                return int(f)
    raise _Bad("mistyped_field", field, v, "expected an integer")


def parse_timestamp(v: Any, fmt: str) -> int:
    """Raw timestamp -> integer seconds. ``fmt``: "unix", "unix_ms", "iso" (ISO 8601 as
    :meth:`datetime.datetime.fromisoformat` reads it: ``2019-11-11T09:05:58Z``,
    ``2019-11-11 09:05:58.123+08:00``, ``2019-11-11``) or a strptime format (naive datetimes
    are taken as UTC). Raises ValueError when unparsable."""
    if fmt in ("unix", "unix_ms"):
        if isinstance(v, bool):
            raise ValueError("boolean timestamp")
        if isinstance(v, str):
            s = v.strip()
            try:
                x: Union[int, float] = int(s)
            except ValueError:
                x = float(s)  # raises ValueError
        elif isinstance(v, (int, float)):
            x = v
        else:
            raise ValueError(f"unsupported type {type(v).__name__}")
        if isinstance(x, float):
            if not math.isfinite(x):
                raise ValueError("non-finite timestamp")
            x = int(x)
        return x // 1000 if fmt == "unix_ms" else x
    if not isinstance(v, str):
        raise ValueError(f"expected a string for format {fmt!r}")
    if fmt == "iso":
        dt = datetime.datetime.fromisoformat(v.strip())
    else:
        dt = datetime.datetime.strptime(v.strip(), fmt)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp())


def _label(v: Any, label_values: Optional[Mapping[Any, int]]) -> int:
    if label_values is None:
        if isinstance(v, str):
            out = DEFAULT_LABEL_VALUES.get(v.strip())
        elif isinstance(v, (bool, int)) or (isinstance(v, float) and v.is_integer()):
            out = DEFAULT_LABEL_VALUES.get(str(int(v)))
        else:
            out = None
    else:
        out = label_values.get(v)
        if out is None:
            out = label_values.get(v.strip() if isinstance(v, str) else str(v))
    if out is None or out not in (0, 1):
        raise _Bad("unknown_label", "clicked", v,
                   f"accepted: {sorted(map(str, (label_values or DEFAULT_LABEL_VALUES)))}")
    return int(out)


def _utc(ts: int) -> str:
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "not a representable date"


def canonicalize(raw_row: RawRow, *, timestamp_format: str = "unix",
                 label_values: Optional[Mapping[Any, int]] = None,
                 positives_only: bool = False,
                 timestamp_range: Optional[Sequence[int]] = DEFAULT_TIMESTAMP_RANGE,
                 ) -> Union[Dict[str, Any], DeadLetter]:
    """Coerce one raw row to a typed canonical row, or return a DeadLetter.

    The returned row holds every key of CANONICAL_FIELDS, the ``user_<p>`` profile columns
    present in the raw row, and ``_origin`` / ``_raw`` (bookkeeping, kept for dead letters
    produced later in the job, e.g. ``duplicate_exposure``).

    ``label_values`` maps raw click values to 0/1 (e.g. ``{"click": 1, "view": 0}``); without it
    0/1/true/false are accepted. ``timestamp_range`` ``(min, max)`` in unix seconds: a parsed
    timestamp outside ``[min, max)`` is a ``timestamp_out_of_range`` dead letter (``None``: no
    check).
    """
    origin = str(raw_row.get(ORIGIN, "?:0"))
    raw = raw_row.get(RAW, {k: v for k, v in raw_row.items() if not k.startswith("_")})
    try:
        out: Dict[str, Any] = {}
        is_history = raw_row.get("is_history")
        is_history = 0 if is_history is None or _is_empty(is_history) else _to_int(
            "is_history", is_history)
        if is_history not in (0, 1):
            raise _Bad("mistyped_field", "is_history", raw_row.get("is_history"), "expected 0/1")
        out["is_history"] = is_history
        for field, (typ, required) in CANONICAL_FIELDS.items():
            if field == "is_history":
                continue
            v = raw_row.get(field)
            req = required
            if field == "page_id" and (is_history or positives_only):
                req = False
            if field == "clicked" and (is_history or positives_only) and (v is None or _is_empty(v)):
                out[field] = 1
                continue
            if v is None or _is_empty(v):
                if req:
                    raise _Bad("missing_field" if v is None else "empty_field", field, v)
                out[field] = "" if typ is str else (-1 if field == "position" else 0)
                continue
            if field == "timestamp":
                try:
                    out[field] = parse_timestamp(v, timestamp_format)
                except (ValueError, OverflowError) as e:
                    raise _Bad("unparsable_timestamp", field, v,
                               f"format {timestamp_format!r}: {e}") from None
                if timestamp_range is not None:
                    lo, hi = timestamp_range
                    ts = out[field]
                    if not lo <= ts < hi:
                        raise _Bad("timestamp_out_of_range", field, v,
                                   f"{ts} s ({_utc(ts)} UTC) is outside the timestamp_range "
                                   f"[{lo}, {hi}) = [{_utc(lo)}, {_utc(hi)}) UTC")
            elif field == "clicked":
                out[field] = _label(v, label_values)
            elif typ is str:
                out[field] = _to_str(field, v)
            else:
                out[field] = _to_int(field, v)
        for k, v in raw_row.items():
            if k.startswith(USER_PROFILE_PREFIX) and k not in out:
                out[k] = "" if v is None else _to_str(k, v)
        if positives_only:
            out["page_id"] = f"{out['user_id']}@{out['timestamp']}"
    except _Bad as b:
        why = f" ({b.why})" if b.why else ""
        return DeadLetter(reason=b.reason,
                          detail=f"{origin}: field {b.field!r} value {b.value!r}: {b.reason}{why}",
                          origin=origin, raw=raw)
    out[ORIGIN] = origin
    out[RAW] = raw
    return out


def origin_key(origin: str):
    """Sort key of an origin ``"<file>:<line>"`` or ``"<file>:<line>#<k>"`` (the k-th row
    expanded from one list-shaped record, 0-based): (file, line number, k)."""
    f, _, line = origin.rpartition(":")
    line, _, sub = line.partition("#")
    try:
        return (f, int(line), int(sub) if sub else -1)
    except ValueError:
        return (origin, 0, -1)
