"""An item-metadata side table for the generic source (the mapping's ``items`` section).

Many public logs keep the item attributes apart from the interactions: MovieLens' ``movies.dat``
(genres), Ali-CCP's ``ad_feature.csv`` (category, brand), MIND's ``news.tsv``, EB-NeRD's
``articles.parquet``. The ``items`` section names such a file and the columns of its item id,
category and seller; :class:`~pipelines.sources.generic.GenericSource` then fills the
``category_id`` / ``seller_id`` of every log row (exposures and history) that has none from it,
the way the built-in ``mind`` source joins ``news.tsv``. A value the row has itself wins.

The table is small next to the log (one line per item) and is read whole by every worker that
reads the log, once (:func:`load_item_table`), like MIND's news table. Its own bad lines are
dead letters of the job, read once: :class:`GenericSource` plans the item file as one more
input whose shard yields only them, so ``stats.json``'s ``rows_read == rows_used +
rows_dead_letter`` still holds (its good lines are item attributes, not log rows). Reasons:
the reader's (``bad_encoding``, ``bad_column_count``, ``bad_json``, ...), ``missing_field``
(no item id), ``control_character`` (in an id, a category or a seller) and ``duplicate_item``
(a second line for an item id: the first line wins, the detail names it).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from pipelines.sources.base import DeadLetter
from pipelines.sources.fileio import (Record, Shard, TextOptions, compression_of,
                                      iter_parquet_records, iter_text_records, plan_parquet)

__all__ = ["ItemSpec", "ItemSpecError", "parse_items", "load_item_table", "item_dead_letters",
           "ITEM_FIELDS", "ITEM_KEYS"]

#: canonical fields an item table can give (item_id is its key)
ITEM_FIELDS = ("item_id", "category_id", "seller_id")
#: keys of the ``items`` section (the reading keys default to the top-level mapping's)
ITEM_KEYS = ("input", "columns", "separator", "format", "delimiter", "header", "encoding",
             "compression", "quotechar", "max_line_bytes")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, as pipelines.canonical

Sides = Tuple[str, str]


class ItemSpecError(ValueError):
    """The ``items`` section is invalid (the caller names the mapping)."""


@dataclasses.dataclass(frozen=True)
class ItemSpec:
    """A validated ``items`` section: the file, its format and reading options, the source
    columns of ``item_id`` / ``category_id`` / ``seller_id``, and ``separator``: when set, a
    category or seller value holding several (MovieLens' ``Animation|Comedy``) gives its first
    non-empty piece."""

    input: str
    fmt: str
    columns: Dict[str, str]
    options: TextOptions
    compression: str = "auto"
    separator: Optional[str] = None

    def source_columns(self) -> List[str]:
        return list(self.columns.values())


def parse_items(d: Any, *, fmt: str, options: TextOptions, compression: str) -> Dict[str, Any]:
    """Check the section's own keys; ``fmt`` / ``options`` / ``compression``: the reading
    settings after the section's keys were applied over the top-level ones (the caller,
    :func:`pipelines.sources.generic.load_mapping`, validates those). Returns the keyword
    arguments of :class:`ItemSpec` but ``input``'s resolution, which the caller does."""
    if not isinstance(d, dict):
        raise ItemSpecError(f"\"items\" must be an object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(ITEM_KEYS))
    if unknown:
        raise ItemSpecError(f"unknown key(s) {unknown} in \"items\" (allowed: {list(ITEM_KEYS)})")
    src = d.get("input")
    if not isinstance(src, str) or not src:
        raise ItemSpecError("\"items\".input must be the path of the item file (relative paths "
                            "are resolved against the mapping file's directory)")
    cols = d.get("columns")
    if not isinstance(cols, dict) or "item_id" not in cols:
        raise ItemSpecError("\"items\".columns must map item_id (and category_id and/or "
                            "seller_id) to columns of the item file")
    cols = {f: str(c) if isinstance(c, int) and not isinstance(c, bool) else c
            for f, c in cols.items()}
    bad = sorted(f for f in cols if f not in ITEM_FIELDS)
    if bad:
        raise ItemSpecError(f"\"items\".columns maps {bad}: an item table gives only "
                            f"{list(ITEM_FIELDS)}")
    if len(cols) < 2:
        raise ItemSpecError("\"items\".columns must map category_id and/or seller_id besides "
                            "item_id")
    for f, c in cols.items():
        if not isinstance(c, str) or not c:
            raise ItemSpecError(f"\"items\".columns.{f} must be a column name, got {c!r}")
    if fmt == "csv" and not options.header and not all(c.isdigit() for c in cols.values()):
        raise ItemSpecError("\"items\" is read without a header, so its columns must be 0-based "
                            f"positions; got {cols}")
    sep = d.get("separator")
    if sep is not None and (not isinstance(sep, str) or not sep):
        raise ItemSpecError(f"\"items\".separator must be a non-empty string or null, got {sep!r}")
    return {"fmt": fmt, "columns": dict(cols), "options": options, "compression": compression,
            "separator": sep}


def _records(spec: ItemSpec, names: Optional[List[str]] = None
             ) -> Iterator[Union[Record, DeadLetter]]:
    if spec.fmt == "parquet":
        for shard in plan_parquet(spec.input):
            yield from iter_parquet_records(shard, spec.source_columns())
        return
    shard = Shard(spec.input, spec.fmt, compression=compression_of(spec.input, spec.compression))
    yield from iter_text_records(shard, 0, spec.options, names=names)


def _value(v: Any, separator: Optional[str]) -> Any:
    if separator is not None and isinstance(v, str):
        return next((p.strip() for p in v.split(separator) if p.strip()), "")
    if isinstance(v, (list, tuple)):  # a Parquet list / JSON array: its first element,
        for x in v:                     # depth first (Amazon's [["Beauty", "Skin Care"]])
            x = _value(x, separator)
            if x is not None and str(x).strip():
                return x
        return ""
    return v


def _text(field: str, v: Any) -> str:
    """A cell as an id string; raises ValueError naming what is wrong."""
    if v is None:
        return ""
    if isinstance(v, bool):
        raise ValueError(f"field {field!r} value {v!r}: expected a string id")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip()
    m = _CONTROL.search(s)
    if m:
        raise ValueError(f"field {field!r} value {v!r}: control character "
                         f"U+{ord(m.group()):04X} at index {m.start()}")
    return s


def iter_item_table(spec: ItemSpec, names: Optional[List[str]] = None
                    ) -> Iterator[Union[Tuple[str, Sides], DeadLetter]]:
    """``(item_id, (category, seller))`` for each good line of the item file, in file order, or
    a DeadLetter (see the module docstring). ``names``: the CSV columns (the header, or "0".."n-1"
    for a header-less file)."""
    seen: Dict[str, str] = {}  # item -> origin of its first line
    cols = spec.columns
    for rec in _records(spec, names):
        if isinstance(rec, DeadLetter):
            yield rec
            continue
        v = rec.values
        try:
            item = _text("item_id", v.get(cols["item_id"]))
            if not item:
                yield DeadLetter("missing_field", f"{rec.origin}: item table line has no "
                                 f"item_id (column {cols['item_id']!r})", rec.origin, rec.raw)
                continue
            sides = tuple(_text(f, _value(v.get(cols[f]), spec.separator)) if f in cols else ""
                          for f in ("category_id", "seller_id"))
        except ValueError as e:
            yield DeadLetter("control_character" if "control character" in str(e)
                             else "mistyped_field", f"{rec.origin}: item table {e}",
                             rec.origin, rec.raw)
            continue
        if item in seen:
            yield DeadLetter("duplicate_item", f"{rec.origin}: item {item!r} is already in the "
                             f"item table (first at {seen[item]}, which is kept)",
                             rec.origin, rec.raw)
            continue
        seen[item] = rec.origin
        yield item, sides  # type: ignore[misc]


def load_item_table(spec: ItemSpec, names: Optional[List[str]] = None) -> Dict[str, Sides]:
    """``{item_id: (category, seller)}`` of the item file's good lines."""
    return {x[0]: x[1] for x in iter_item_table(spec, names) if not isinstance(x, DeadLetter)}


def item_dead_letters(spec: ItemSpec, names: Optional[List[str]] = None) -> Iterator[DeadLetter]:
    """The item file's dead letters (read once by the job, see the module docstring)."""
    return (x for x in iter_item_table(spec, names) if isinstance(x, DeadLetter))


def fill_sides(row: Dict[str, Any], table: Mapping[str, Sides]) -> None:
    """Fill the raw row's missing or empty category / seller from the item table (the row's own
    value wins)."""
    item = row.get("item_id")
    if item is None:
        return
    if isinstance(item, float) and item.is_integer():
        item = int(item)  # as pipelines.canonical reads it
    sides = table.get(str(item).strip())
    if sides is None:
        return
    for f, val in zip(("category_id", "seller_id"), sides):
        cur = row.get(f)
        if val and (cur is None or (isinstance(cur, str) and not cur.strip())):
            row[f] = val
