"""Generic log source: any CSV, Parquet or JSON-lines log + a JSON mapping -> raw canonical rows.

Also the shared reading machinery of every built-in source (``synthetic``, ``mind``,
``amazon_beauty``): :func:`resolve_files`, :func:`iter_lines`, :func:`iter_delimited`,
:func:`iter_jsonl`, :func:`iter_parquet` and :func:`iter_records`. Each reader yields, in file
order, either a :class:`Record` (``origin`` "file:line", ``values`` keyed by column name, ``raw``
the original line/record) or a :class:`~pipelines.sources.base.DeadLetter` for a line that
cannot be split into columns at all (wrong column count, broken JSON, ...).

The mapping format is documented in ``docs/mapping.md``. :func:`load_mapping` validates it up
front (unknown keys / canonical fields, required fields not mapped, bad enum values) and
:class:`GenericSource` checks that every mapped column exists in every input file's header,
raising :class:`MappingError` messages that name the mapping, the field, the column and the file.
Values are *not* coerced here: that is :func:`pipelines.canonical.canonicalize`'s job, which reads
``label_values`` / ``timestamp_format`` / ``positives_only`` from the source object.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from ctrcore.schema import CANONICAL_FIELDS, USER_PROFILE_PREFIX
from pipelines.sources import items as items_mod
from pipelines.sources import lists
from pipelines.sources.base import DEFAULT_TIMESTAMP_RANGE, DeadLetter, RawRow, Source
from apache_beam.io.filesystem import CompressionTypes

from pipelines.sources.fileio import (COMPRESSIONS, DEFAULT_MAX_LINE_BYTES, DEFAULT_SPLIT_BYTES,
                                      LINE_FORMATS, Record, Shard, TextOptions, check_encoding,
                                      compression_of, extension, iter_parquet_records,
                                      headerless_width, iter_raw_lines, iter_text_records,
                                      match_files, parquet_schema, plan_file, plan_parquet,
                                      read_header, read_shards_serially)

FORMATS = ("csv", "parquet", "jsonl")
SPLITS = ("time", "leave_last_out")
EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".json": "jsonl",
              ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED = tuple(k for k, (_, req) in CANONICAL_FIELDS.items() if req)
#: required fields that positives-only logs may omit (page = (user, timestamp); clicked = 1)
NOT_REQUIRED_IF_POSITIVES_ONLY = ("page_id", "clicked")
MAPPING_KEYS = ("format", "delimiter", "header", "columns", "user_profile", "timestamp_format",
                "positives_only", "label_values", "optional", "split", "constants",
                "description", "encoding", "compression", "quotechar", "max_line_bytes")
#: list-shaped logs (docs/mapping.md "List-shaped logs", pipelines/sources/lists.py)
MAPPING_KEYS += ("exposures", "history", "tables")
#: plausible timestamps [min, max) (pipelines.canonical: ``timestamp_out_of_range``)
MAPPING_KEYS += ("timestamp_range",)
#: a page id made of other fields, for logs without one (Ali-CCP's (user, time_stamp))
MAPPING_KEYS += ("page_from",)
#: an item-metadata side table (pipelines/sources/items.py)
MAPPING_KEYS += ("items",)
#: the keys that say how a text file is read (validated by _reading_keys)
READING_KEYS = ("delimiter", "header", "encoding", "compression", "quotechar",
                "max_line_bytes")
#: fields ``page_from`` may not use: the page id itself and the per-exposure fields
NOT_PAGE_FROM = ("page_id", "item_id", "clicked", "position", "is_history", "category_id",
                 "seller_id")
#: keys of a ``tables`` mapping that hold for the whole source (a table may not set them)
SOURCE_WIDE_KEYS = ("timestamp_format", "positives_only", "label_values", "split",
                    "timestamp_range", "items")
#: keys of a ``tables`` mapping that belong in each table (not at its top level)
TABLE_ONLY_KEYS = ("columns", "exposures", "history", "optional")

Item = Union[Record, DeadLetter]


class MappingError(ValueError):
    """The mapping file is invalid or does not fit the input files."""


# ---------------------------------------------------------------------------------------------
# File readers (shared by every source; all I/O through Beam FileSystems, see fileio.py)
# ---------------------------------------------------------------------------------------------
def resolve_files(input: Union[str, Sequence[str]], exts: Sequence[str] = ()) -> List[str]:
    """A file, a directory (its files with one of ``exts``, non-recursive; compressed files
    count by the extension before ``.gz`` etc.), a glob, a comma-separated list or a list of
    those -> sorted list of paths (any Beam filesystem). Raises FileNotFoundError naming the
    input."""
    return [p for p, _ in match_files(input, exts)]


def infer_format(path: str) -> str:
    ext = extension(path)
    if ext not in EXTENSIONS:
        raise MappingError(f"cannot infer the format of {path!r} from its extension; set "
                           f"\"format\" ({'|'.join(FORMATS)}) in the mapping")
    return EXTENSIONS[ext]


def _whole(path: str, fmt: str, compression: str = "auto") -> Shard:
    return Shard(path, fmt, compression=compression_of(path, compression))


def iter_lines(path: str, encoding: str = "utf-8", compression: str = "auto"
               ) -> Iterator[Union[tuple, DeadLetter]]:
    """(1-based line number, line without the newline) for every line of a text file, or a
    ``bad_encoding`` / ``line_too_long`` DeadLetter for a line that cannot be read."""
    return iter_raw_lines(_whole(path, "lines", compression), 0, TextOptions(
        fmt="lines", encoding=encoding))


def iter_delimited(path: str, *, delimiter: str = ",", header: bool = True,
                   fieldnames: Optional[Sequence[str]] = None, quoting: int = csv.QUOTE_MINIMAL,
                   strict_columns: bool = True, encoding: str = "utf-8",
                   compression: str = "auto") -> Iterator[Item]:
    """Records of a delimited text file. Column names: the header line, ``fieldnames``, or
    "0", "1", ... . A line with a different number of columns is a ``bad_column_count``
    dead letter (unless ``strict_columns`` is False). Blank lines are skipped."""
    opts = TextOptions(fmt="csv", delimiter=delimiter, header=header,
                       quotechar=None if quoting == csv.QUOTE_NONE else '"',
                       fieldnames=tuple(fieldnames) if fieldnames else None,
                       strict_columns=strict_columns, encoding=encoding)
    return iter_text_records(_whole(path, "csv", compression), 0, opts)


def iter_jsonl(path: str, encoding: str = "utf-8", compression: str = "auto"
               ) -> Iterator[Item]:
    """Records of a JSON-lines file (one JSON object per line; blank lines skipped)."""
    return iter_text_records(_whole(path, "jsonl", compression), 0,
                             TextOptions(fmt="jsonl", encoding=encoding))


def iter_parquet(path: str, columns: Optional[Sequence[str]] = None) -> Iterator[Item]:
    """Records of a Parquet file (origin = 1-based record number). Timestamp-typed columns
    come out as unix seconds (ints)."""
    for shard in plan_parquet(path):
        yield from iter_parquet_records(shard, columns)


def file_columns(path: str, fmt: str, *, delimiter: str = ",", header: bool = True,
                 encoding: str = "utf-8", compression: str = "auto",
                 quotechar: Optional[str] = '"') -> List[str]:
    """Column names of a file: CSV header line, Parquet schema, or the keys of the first
    JSON-lines record. [] when they cannot be known (header-less CSV, empty or unreadable
    file)."""
    if fmt == "parquet":
        return parquet_schema(path)
    return read_header(path, TextOptions(fmt=fmt, delimiter=delimiter, header=header,
                                         encoding=encoding, quotechar=quotechar), compression)


def iter_records(path: str, fmt: str, *, delimiter: str = ",", header: bool = True,
                 columns: Optional[Sequence[str]] = None) -> Iterator[Item]:
    """Records of ``path`` in format ``fmt`` (csv | jsonl | parquet)."""
    if fmt == "csv":
        return iter_delimited(path, delimiter=delimiter, header=header)
    if fmt == "jsonl":
        return iter_jsonl(path)
    if fmt == "parquet":
        return iter_parquet(path, columns)
    raise MappingError(f"unknown format {fmt!r} (expected one of {FORMATS})")


# ---------------------------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class LogMapping:
    """A validated mapping (see docs/mapping.md). ``columns`` / ``user_profile`` values are
    source column names (or "0", "1", ... positions for header-less CSV)."""

    columns: Dict[str, str]
    format: Optional[str] = None
    delimiter: str = ","
    header: bool = True
    user_profile: Dict[str, str] = dataclasses.field(default_factory=dict)
    timestamp_format: str = "unix"
    positives_only: bool = False
    label_values: Optional[Dict[str, int]] = None
    optional: List[str] = dataclasses.field(default_factory=list)
    split: str = "time"
    constants: Dict[str, Any] = dataclasses.field(default_factory=dict)
    timestamp_range: Optional[Tuple[int, int]] = DEFAULT_TIMESTAMP_RANGE  # unix s, [min, max)
    encoding: str = "utf-8"  # text formats; ASCII-compatible (fileio.check_encoding)
    compression: str = "auto"  # a key of fileio.COMPRESSIONS; "auto" = from the suffix
    quotechar: Optional[str] = '"'  # csv; None = quotes are ordinary characters
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES  # longer lines are dead letters
    name: str = "<mapping>"  # the mapping file, for error messages
    exposures: Optional[lists.ExposureSpec] = None  # list-shaped page rows
    history: Optional[lists.HistorySpec] = None  # list-shaped user history
    files: Optional[str] = None  # a table's basename glob (``tables`` entries only)
    tables: List["LogMapping"] = dataclasses.field(default_factory=list)  # sub-mappings
    page_from: Tuple[str, ...] = ()  # page_id = these fields' raw values joined by "@"
    items: Optional[items_mod.ItemSpec] = None  # the item-metadata side table

    def text_options(self, fmt: str) -> TextOptions:
        """How the lines of a ``fmt`` file of this mapping become records."""
        return TextOptions(fmt=fmt, delimiter=self.delimiter, quotechar=self.quotechar,
                           header=self.header, encoding=self.encoding,
                           max_line_bytes=self.max_line_bytes)

    def targets(self) -> Dict[str, str]:
        """Field -> source column of every column this mapping reads: canonical fields,
        ``user_<p>`` profile columns and the list columns (pseudo fields
        ``exposures.<key>`` / ``history.<key>``)."""
        out = self.scalar_targets()
        if self.exposures is not None:
            out.update(self.exposures.columns())
        if self.history is not None:
            out.update(self.history.columns())
        return out

    def scalar_targets(self) -> Dict[str, str]:
        """Output field (canonical or ``user_<p>``) -> source column (one value per record)."""
        out = dict(self.columns)
        out.update({USER_PROFILE_PREFIX + p: c for p, c in self.user_profile.items()})
        return out

    def is_list_shaped(self) -> bool:
        return self.exposures is not None or self.history is not None


def identity_mapping(columns: Sequence[str], **kw) -> LogMapping:
    """The mapping of a file already in the canonical schema (e.g. the synthetic generator's
    output): canonical columns map to themselves, ``user_<p>`` columns become the profile."""
    cols = {c: c for c in columns if c in CANONICAL_FIELDS}
    prof = {c[len(USER_PROFILE_PREFIX):]: c for c in columns
            if c.startswith(USER_PROFILE_PREFIX) and c not in CANONICAL_FIELDS}
    return load_mapping({"columns": cols, "user_profile": prof, **kw}, name="<identity mapping>")


def _err(name: str, msg: str) -> MappingError:
    return MappingError(f"mapping {name}: {msg}")


def load_mapping(mapping: Union[str, os.PathLike, Mapping[str, Any]],
                 name: Optional[str] = None) -> LogMapping:
    """Parse and validate a mapping (a path to a JSON file or an already-loaded dict)."""
    if isinstance(mapping, (str, os.PathLike)):
        name = name or str(mapping)
        try:
            with FileSystems.open(str(mapping)) as fh:
                text = fh.read()
        except (IOError, OSError) as e:
            raise MappingError(f"mapping file {mapping} not found ({e})") from None
        try:
            d = json.loads(text.decode("utf-8-sig"))
        except ValueError as e:
            raise MappingError(f"mapping file {mapping} is not valid JSON: {e}") from None
    else:
        d, name = dict(mapping), name or "<dict>"
    if not isinstance(d, dict):
        raise _err(name, f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(MAPPING_KEYS))
    if unknown:
        raise _err(name, f"unknown key(s) {unknown} (allowed: {list(MAPPING_KEYS)})")
    if "tables" in d:
        return _load_tables(d, name)

    fmt = d.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise _err(name, f"\"format\" is {fmt!r}, expected one of {list(FORMATS)}")
    cols = d.get("columns")
    if not isinstance(cols, dict) or not cols:
        raise _err(name, "\"columns\" must be a non-empty object {canonical_field: source_column}")
    for field, col in cols.items():
        if field.startswith(USER_PROFILE_PREFIX) and field not in CANONICAL_FIELDS:
            raise _err(name, f"\"columns\" maps {field!r}: declare user profile columns under "
                             f"\"user_profile\" as {{\"{field[len(USER_PROFILE_PREFIX):]}\": "
                             f"{col!r}}}")
        if field not in CANONICAL_FIELDS:
            raise _err(name, f"unknown canonical field {field!r} in \"columns\" "
                             f"(known: {list(CANONICAL_FIELDS)})")
        if isinstance(col, int) and not isinstance(col, bool):
            cols[field] = col = str(col)
        if not isinstance(col, str) or not col:
            raise _err(name, f"\"columns\".{field} must be a source column name, got {col!r}")
    prof = d.get("user_profile") or {}
    if not isinstance(prof, dict):
        raise _err(name, "\"user_profile\" must be an object {profile_name: source_column}")
    prof = {p: str(c) for p, c in prof.items()}
    for p in prof:
        if not p or not p.replace("_", "").isalnum():
            raise _err(name, f"user profile name {p!r} must be alphanumeric/underscore")
    consts = d.get("constants") or {}
    if not isinstance(consts, dict):
        raise _err(name, "\"constants\" must be an object {canonical_field: value}")
    for field in consts:
        if field not in CANONICAL_FIELDS and not field.startswith(USER_PROFILE_PREFIX):
            raise _err(name, f"unknown canonical field {field!r} in \"constants\"")
        if field in cols:
            raise _err(name, f"field {field!r} is both in \"columns\" and \"constants\"")
    positives_only = d.get("positives_only", False)
    if not isinstance(positives_only, bool):
        raise _err(name, f"\"positives_only\" must be true/false, got {positives_only!r}")
    exempt = NOT_REQUIRED_IF_POSITIVES_ONLY if positives_only else ()
    exposures, history = _list_sections(d, name, cols, consts, positives_only)
    if exposures is not None:
        exempt += exposures.fields()
    elif history is not None:  # a history-only mapping/table: every row is is_history=1
        exempt += ("page_id", "item_id", "clicked", "timestamp")
    page_from = _page_from(d.get("page_from"), name, cols, consts, prof, positives_only,
                           history_only=history is not None and exposures is None)
    if page_from:
        exempt += ("page_id",)
    missing = [f for f in REQUIRED if f not in cols and f not in consts and f not in exempt]
    if missing:
        raise _err(name, f"required canonical field(s) {missing} not mapped in \"columns\" "
                         "(or \"constants\")")
    ts_fmt = d.get("timestamp_format", "unix")
    if not isinstance(ts_fmt, str) or (ts_fmt not in ("unix", "unix_ms", "iso")
                                       and "%" not in ts_fmt):
        raise _err(name, f"\"timestamp_format\" is {ts_fmt!r}: expected \"unix\", \"unix_ms\", "
                         "\"iso\" or a strptime format such as \"%Y-%m-%d %H:%M:%S\"")
    if history is not None and history.timestamps is None:
        from pipelines.canonical import parse_timestamp
        try:
            parse_timestamp(history.timestamp, ts_fmt)
        except (ValueError, OverflowError) as e:
            raise _err(name, f"\"history\".timestamp {history.timestamp!r} does not parse with "
                             f"timestamp_format {ts_fmt!r}: {e}") from None
    ts_range = parse_timestamp_range(d.get("timestamp_range", DEFAULT_TIMESTAMP_RANGE), name)
    labels = d.get("label_values")
    if labels is not None:
        if not isinstance(labels, dict) or not labels:
            raise _err(name, "\"label_values\" must be a non-empty object {raw_value: 0|1}")
        bad = {k: v for k, v in labels.items() if v not in (0, 1) or isinstance(v, bool)}
        if bad:
            raise _err(name, f"\"label_values\" must map to 0 or 1, got {bad}")
        labels = {str(k): int(v) for k, v in labels.items()}
    split = d.get("split", "leave_last_out" if positives_only else "time")
    if split not in SPLITS:
        raise _err(name, f"\"split\" is {split!r}, expected one of {list(SPLITS)}")
    optional = d.get("optional") or []
    if not isinstance(optional, list):
        raise _err(name, "\"optional\" must be a list of field names")
    targets = set(cols) | {USER_PROFILE_PREFIX + p for p in prof}
    for f in optional:
        if f not in targets:
            raise _err(name, f"\"optional\" lists {f!r}, which is not a mapped field "
                             f"(mapped: {sorted(targets)})")
        if f in REQUIRED and f not in exempt:
            raise _err(name, f"\"optional\" lists {f!r}, but it is a required canonical field")
    rk = _reading_keys(d, name)
    items = _item_spec(d, name, rk)
    return LogMapping(columns=dict(cols), format=fmt, delimiter=rk["delimiter"],
                      header=rk["header"], encoding=rk["encoding"],
                      compression=rk["compression"], quotechar=rk["quotechar"],
                      max_line_bytes=rk["max_line_bytes"], items=items,
                    user_profile=prof, timestamp_format=ts_fmt, positives_only=positives_only,
                    label_values=labels, optional=list(optional), split=split,
                    constants=dict(consts), name=name, timestamp_range=ts_range,
                      exposures=exposures, history=history, page_from=page_from)


def _reading_keys(d: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """The validated keys that say how a text file is read: ``delimiter``, ``header``,
    ``encoding``, ``compression``, ``quotechar`` and ``max_line_bytes``."""
    delimiter = d.get("delimiter", ",")
    if not isinstance(delimiter, str) or not delimiter or "\n" in delimiter or "\r" in delimiter:
        raise _err(name, f"\"delimiter\" must be a non-empty string without line breaks, "
                         f"got {delimiter!r}")
    header = d.get("header", True)
    if not isinstance(header, bool):
        raise _err(name, f"\"header\" must be true/false, got {header!r}")
    encoding = d.get("encoding", "utf-8")
    try:
        encoding = check_encoding(encoding) if isinstance(encoding, str) else None
    except ValueError as e:
        raise _err(name, f"\"encoding\": {e}") from None
    if encoding is None:
        raise _err(name, "\"encoding\" must be a codec name such as \"utf-8\"")
    compression = d.get("compression", "auto")
    if compression not in COMPRESSIONS:
        raise _err(name, f"\"compression\" is {compression!r}, expected one of "
                         f"{list(COMPRESSIONS)}")
    # a delimiter of several characters (MovieLens' "::") splits plainly: no quoting
    quotechar = d.get("quotechar", '"' if len(delimiter) == 1 else None)
    if quotechar is not None and (not isinstance(quotechar, str) or len(quotechar) != 1):
        raise _err(name, f"\"quotechar\" must be one character or null, got {quotechar!r}")
    if quotechar is not None and len(delimiter) > 1:
        raise _err(name, f"\"delimiter\" {delimiter!r} has several characters, which is read "
                         f"by plain splitting without quotes: set \"quotechar\": null (got "
                         f"{quotechar!r})")
    max_line = d.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)
    if isinstance(max_line, bool) or not isinstance(max_line, int) or max_line < 1:
        raise _err(name, f"\"max_line_bytes\" must be a positive integer, got {max_line!r}")
    return {"delimiter": delimiter, "header": header, "encoding": encoding,
            "compression": compression, "quotechar": quotechar, "max_line_bytes": max_line}


def _item_spec(d: Mapping[str, Any], name: str, rk: Mapping[str, Any]
               ) -> Optional[items_mod.ItemSpec]:
    """The ``items`` section (pipelines/sources/items.py): its reading keys default to the
    mapping's (``rk``, ``format``), its format to the item file's extension, then the mapping's;
    a relative ``input`` is resolved against the mapping file's directory."""
    sec = d.get("items")
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise _err(name, f"\"items\" must be an object, got {type(sec).__name__}")
    own = {k: sec[k] for k in READING_KEYS if k in sec}
    merged = {**{k: d[k] for k in READING_KEYS if k in d and k not in own}, **own}
    if "delimiter" in own and "quotechar" not in own:
        merged.pop("quotechar", None)  # the quote default follows the item file's delimiter
    irk = _reading_keys(merged, f"{name} \"items\"")
    src = sec.get("input")
    if isinstance(src, str) and src and name not in ("<dict>",) and not _is_absolute(src):
        src = FileSystems.join(FileSystems.split(name)[0] or ".", src)
    fmt = sec.get("format")
    if fmt is None and isinstance(src, str) and src:
        fmt = EXTENSIONS.get(extension(src))
    fmt = fmt or d.get("format")
    if fmt not in FORMATS:
        raise _err(name, f"\"items\".format is {fmt!r}: set it to one of {list(FORMATS)} (it is "
                         f"not known from the item file's name {src!r})")
    opts = TextOptions(fmt=fmt, delimiter=irk["delimiter"], quotechar=irk["quotechar"],
                       header=irk["header"], encoding=irk["encoding"],
                       max_line_bytes=irk["max_line_bytes"])
    try:
        kw = items_mod.parse_items(sec, fmt=fmt, options=opts, compression=irk["compression"])
    except items_mod.ItemSpecError as e:
        raise _err(name, str(e)) from None
    return items_mod.ItemSpec(input=src, **kw)


def _is_absolute(path: str) -> bool:
    return "://" in path or path.startswith("/") or (len(path) > 2 and path[1] == ":")


def _page_from(value: Any, name: str, cols: Mapping[str, str], consts: Mapping[str, Any],
               prof: Mapping[str, str], positives_only: bool, history_only: bool
               ) -> Tuple[str, ...]:
    """The mapping key ``page_from``: canonical fields (or ``user_<p>``) whose raw values,
    joined by ``"@"``, are the page id of a log that has none (Ali-CCP's ``raw_sample.csv``:
    ``["user_id", "timestamp"]``). Validated against ``columns`` / ``constants``."""
    if value is None:
        return ()
    if (not isinstance(value, list) or not value
            or not all(isinstance(f, str) and f for f in value)):
        raise _err(name, f"\"page_from\" must be a non-empty list of field names such as "
                         f"[\"user_id\", \"timestamp\"], got {value!r}")
    if positives_only:
        raise _err(name, "\"page_from\" with \"positives_only\": a positives-only log's pages "
                         "are already (user_id, timestamp); remove \"page_from\"")
    if "page_id" in cols or "page_id" in consts:
        raise _err(name, "\"page_from\" builds page_id: remove page_id from \"columns\" / "
                         "\"constants\"")
    bad = [f for f in value if f in NOT_PAGE_FROM]
    if bad:
        raise _err(name, f"\"page_from\" may not use {bad}: a page is shared by the items "
                         f"shown on it (use fields such as user_id, timestamp, a session column "
                         f"mapped to a user_<name> profile)")
    if len(set(value)) != len(value):
        raise _err(name, f"\"page_from\" lists a field twice: {value}")
    if history_only:
        return ()  # a history-only table has no pages
    profile = {USER_PROFILE_PREFIX + p for p in prof}
    unmapped = [f for f in value if f not in cols and f not in consts and f not in profile]
    if unmapped:
        raise _err(name, f"\"page_from\" field(s) {unmapped} are not mapped in \"columns\" "
                         f"(or \"constants\" / \"user_profile\")")
    return tuple(value)


def parse_timestamp_range(value: Any, name: str = "<dict>") -> Optional[Tuple[int, int]]:
    """The mapping key ``timestamp_range``: ``[min, max]`` (max excluded), each bound unix
    seconds or an ISO date/time such as ``"1990-01-01"`` / ``"2030-06-30T12:00:00"`` (naive =
    UTC) -> ``(min, max)`` in unix seconds; ``null`` -> None (no check)."""
    import datetime
    import math

    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _err(name, f"\"timestamp_range\" must be [min, max] (unix seconds or ISO dates "
                         f"such as \"1990-01-01\"), got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool):
            ok = None
        elif isinstance(v, int):
            ok = v
        elif isinstance(v, float) and math.isfinite(v):
            ok = math.floor(v)
        elif isinstance(v, str):
            try:
                dt = datetime.datetime.fromisoformat(v.strip())
            except ValueError:
                ok = None
            else:
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=datetime.timezone.utc)
                ok = int(dt.timestamp())
        else:
            ok = None
        if ok is None:
            raise _err(name, f"\"timestamp_range\" bound {v!r} is neither unix seconds nor an "
                             "ISO date/time such as \"1990-01-01\"")
        out.append(ok)
    if out[0] >= out[1]:
        raise _err(name, f"\"timestamp_range\" {value!r}: min must be before max")
    return out[0], out[1]


def _list_sections(d: Mapping[str, Any], name: str, cols: Mapping[str, str],
                   consts: Mapping[str, Any], positives_only: bool):
    """Validate the ``exposures`` / ``history`` sections against ``columns``/``constants``."""
    try:
        exposures = (lists.parse_exposures(d["exposures"], positives_only=positives_only)
                     if d.get("exposures") is not None else None)
        history = lists.parse_history(d["history"]) if d.get("history") is not None else None
    except lists.ListSpecError as e:
        raise _err(name, str(e)) from None
    if exposures is not None:
        for f in exposures.fields():
            if f in cols or f in consts:
                raise _err(name, f"field {f!r} comes from \"exposures\" (one row per listed "
                                 f"item); remove it from \"columns\"/\"constants\"")
        if exposures.trigger_from_history and history is None:
            raise _err(name, "\"exposures\".trigger_from_history needs a \"history\" section")
    elif history is not None:
        extra = sorted(set(cols) - {"user_id"})
        if extra:
            raise _err(name, f"a history-only mapping (\"history\" without \"exposures\") "
                             f"maps only user_id in \"columns\" (and profile columns in "
                             f"\"user_profile\"); got {extra}")
    return exposures, history


def _load_tables(d: Mapping[str, Any], name: str) -> LogMapping:
    """A mapping with ``tables``: one sub-mapping per kind of input file, chosen by the file's
    basename glob (``files``; the first matching table wins). Every top-level key except
    ``tables`` is inherited by each table; the source-wide keys (SOURCE_WIDE_KEYS) may only be
    set at the top level, the per-table keys (TABLE_ONLY_KEYS) only in the tables."""
    tables = d["tables"]
    if not isinstance(tables, list) or not tables:
        raise _err(name, "\"tables\" must be a non-empty list of table mappings")
    misplaced = [k for k in TABLE_ONLY_KEYS if k in d]
    if misplaced:
        raise _err(name, f"with \"tables\", key(s) {misplaced} belong in each table")
    shared = {k: v for k, v in d.items() if k not in ("tables", "items")}
    subs: List[LogMapping] = []
    for i, t in enumerate(tables):
        tname = f"{name} tables[{i}]"
        if not isinstance(t, dict):
            raise _err(tname, f"expected a JSON object, got {type(t).__name__}")
        files = t.get("files")
        if not isinstance(files, str) or not files:
            raise _err(tname, "needs \"files\": a glob of the basenames of the files this "
                              "table reads, e.g. \"behaviors*.parquet\"")
        wide = [k for k in t if k in SOURCE_WIDE_KEYS or k == "tables"]
        if wide:
            raise _err(tname, f"key(s) {wide} hold for the whole source: set them at the top "
                              "level, not in a table")
        sub = dict(shared)
        sub.update({k: v for k, v in t.items() if k != "files"})
        m = load_mapping(sub, name=tname)
        m.files = files
        subs.append(m)
    profile: Dict[str, str] = {}
    for m in subs:
        for p, c in m.user_profile.items():
            profile.setdefault(p, c)
    return dataclasses.replace(subs[0], columns={}, user_profile=profile, optional=[],
                               constants={}, exposures=None, history=None, files=None,
                               tables=subs, name=name,
                               items=_item_spec(d, name, _reading_keys(d, name)))


def page_id_from(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The page id of a log without one: the raw values of ``fields`` (``page_from``), stripped
    and joined by ``"@"``. A missing part stays empty, so that the row's own missing field (say
    ``user_id``) is what ``canonical.py`` dead-letters, under its name."""
    return "@".join("" if row.get(f) is None else str(row[f]).strip() for f in fields)


def _is_history_row(row: Mapping[str, Any]) -> bool:
    h = row.get("is_history")
    return h is not None and str(h).strip() not in ("", "0", "false", "False")


def basename(path: str) -> str:
    """Last component of a local or ``scheme://`` path (no filesystem access)."""
    return path.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
class RowSource(Source):
    """Base of the built-in sources: the attributes :mod:`pipelines.canonical` reads, plus
    ``label_values`` (raw click value -> 0/1, ``None`` = accept 0/1/true/false)."""

    #: expected counts (SOURCE.md) for :func:`pipelines.sources.verify_counts`
    EXPECTED_COUNTS: Dict[str, int] = {}


class GenericSource(RowSource):
    """Any CSV / Parquet / JSON-lines log reshaped through a mapping (docs/mapping.md).

    ``input``: a file, a directory (all its csv/tsv/jsonl/parquet files), a glob or a list.
    ``mapping``: a path to the JSON mapping or a dict. Raises :class:`MappingError` if the
    mapping is invalid or a mapped column is missing from a file's header.

    List-shaped records (a mapping with ``exposures`` / ``history``) expand into several rows
    (:mod:`pipelines.sources.lists`); a ``tables`` mapping reads each file through the table
    whose ``files`` glob matches its basename (:meth:`mapping_for`).
    """

    name = "generic"

    def __init__(self, input: Union[str, Sequence[str]],
                 mapping: Union[str, Mapping[str, Any], LogMapping]):
        self.mapping = mapping if isinstance(mapping, LogMapping) else load_mapping(mapping)
        m = self.mapping
        fmts = {t.format for t in m.tables} if m.tables else {m.format}
        exts = [e for e, f in EXTENSIONS.items() if None in fmts or f in fmts]
        self._sizes = dict(match_files(input, exts))  # path -> bytes
        self._files = sorted(self._sizes)
        self.split_bytes = DEFAULT_SPLIT_BYTES
        self.positives_only = m.positives_only
        self.split = m.split
        self.timestamp_format = m.timestamp_format
        self.timestamp_range = m.timestamp_range
        self.label_values = m.label_values
        self.user_profile = tuple(m.user_profile)
        self._targets = m.targets()
        self._table_of: Dict[str, LogMapping] = {}  # file -> its table (``tables`` mappings)
        if m.tables:
            self._assign_tables()
        self._absent: Dict[str, set] = {}  # file -> optional fields absent from its header
        self._items_path: Optional[str] = None  # the item-metadata file (``items``)
        self._item_names: Optional[List[str]] = None  # its CSV columns
        self._item_table: Optional[Dict[str, Tuple[str, str]]] = None  # loaded on first read
        if m.items is not None:
            self._check_items(m.items)
        self._header: Dict[str, Optional[List[str]]] = {}  # file -> CSV columns ("0".. if none)
        for path in self._files:
            self._check_header(path)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_item_table"] = None  # each worker reads the item file itself, once
        return state

    def files(self) -> List[str]:
        """The log files, then the item file (read for its dead letters only)."""
        return list(self._files) + ([self._items_path] if self._items_path else [])

    def _check_items(self, spec: items_mod.ItemSpec) -> None:
        """The item file exists, is not also a log input, and has the mapped columns."""
        m = self.mapping
        try:
            found = match_files(spec.input)
        except (FileNotFoundError, IOError, OSError) as e:
            raise _err(m.name, f"\"items\".input: item file {spec.input} not found ({e})"
                       ) from None
        if len(found) != 1:
            raise _err(m.name, f"\"items\".input {spec.input} matches {len(found)} files; "
                               "name one item file")
        path = found[0][0]
        if path in self._sizes:
            raise _err(m.name, f"the item file {path} is also one of the log inputs: narrow "
                               "--input to the log files (a file, a glob or a list)")
        names: List[str] = []
        if spec.fmt == "csv" and not spec.options.header:
            width = headerless_width(path, spec.options, spec.compression)[0]
            names = [str(i) for i in range(width)]
            self._item_names = names
        elif spec.fmt == "parquet":
            names = parquet_schema(path)
        else:
            names = read_header(path, spec.options, spec.compression)
            if spec.fmt == "csv":
                self._item_names = names
        missing = {f: c for f, c in spec.columns.items() if c not in names}
        if names and missing:
            raise _err(m.name, f"\"items\": column(s) {missing} not found in the item file "
                               f"{path} (its columns: {names})")
        self._items_path = path
        self.mapping = dataclasses.replace(m, items=dataclasses.replace(spec, input=path))

    def item_table(self) -> Dict[str, Tuple[str, str]]:
        """``{item_id: (category, seller)}`` from the item file (empty without one)."""
        if self._item_table is None:
            spec = self.mapping.items
            self._item_table = ({} if spec is None else
                                items_mod.load_item_table(spec, self._item_names))
        return self._item_table

    def splittable_bytes(self) -> int:
        """Total size of the inputs read in byte ranges (uncompressed line files)."""
        return sum(size for path, size in self._sizes.items()
                   if self.format_of(path) in LINE_FORMATS
                   and compression_of(path, self.mapping_for(path).compression)
                   == CompressionTypes.UNCOMPRESSED)

    def format_of(self, path: str) -> str:
        return self.mapping_for(path).format or infer_format(path)

    def mapping_for(self, path: str) -> LogMapping:
        """The mapping that reads file ``path``: the mapping itself, or the table of a
        ``tables`` mapping whose ``files`` glob matches the file's basename."""
        if not self.mapping.tables:
            return self.mapping
        t = self._table_of.get(path)
        if t is None:
            t = self._table_for(path)
            if t is None:
                raise _err(self.mapping.name, f"file {path} matches no table's \"files\" glob "
                                              f"{[x.files for x in self.mapping.tables]}")
            self._table_of[path] = t
        return t

    def _table_for(self, path: str) -> Optional[LogMapping]:
        base = basename(path)
        return next((t for t in self.mapping.tables if fnmatch.fnmatchcase(base, t.files)), None)

    def _assign_tables(self) -> None:
        m = self.mapping
        used = set()
        for path in self._files:
            t = self._table_for(path)
            if t is None:
                raise _err(m.name, f"input file {path} matches no table's \"files\" glob "
                                   f"{[x.files for x in m.tables]}: add a table for it or "
                                   "narrow --input (e.g. a glob)")
            self._table_of[path] = t
            used.add(id(t))
        unused = [t.files for t in m.tables if id(t) not in used]
        if unused:
            raise _err(m.name, f"no input file matches the \"files\" glob(s) {unused} "
                               f"(input files: {[basename(p) for p in self._files]})")

    def _check_header(self, path: str) -> None:
        m, fmt = self.mapping_for(path), self.format_of(path)
        have = file_columns(path, fmt, delimiter=m.delimiter, header=m.header,
                            encoding=m.encoding, compression=m.compression,
                            quotechar=m.quotechar)
        self._header[path] = have if fmt == "csv" and m.header and have else None
        if fmt == "csv" and not m.header:
            bad = [c for c in m.targets().values() if not c.isdigit()]
            if bad:
                raise _err(m.name, f"\"header\" is false, so columns must be 0-based positions; "
                                   f"got {bad} for file {path}")
            # the file's width stands in for a header: a line with another number of fields
            # (a stray or missing delimiter) is a bad_column_count dead letter, not a row whose
            # columns have shifted
            width, agree, sampled = headerless_width(path, m.text_options(fmt), m.compression)
            if not width:
                return  # empty file: nothing to check, nothing to read
            self._header[path] = [str(i) for i in range(width)]
            have = self._header[path]
            detail = (f"{width} columns in {agree} of its first {sampled} lines"
                      if agree < sampled else f"{width} columns")
        else:
            detail = f"its columns: {have}"
            if not have:
                return  # empty file: nothing to check, nothing to read
        absent = set()
        for field, col in m.targets().items():
            if col not in have:
                if field in m.optional:
                    absent.add(field)
                    continue
                raise _err(m.name, f"column {col!r} (mapped to {field!r}) not found in file "
                                   f"{path} ({detail})")
        self._absent[path] = absent

    def rows_of(self, rec: Record) -> Iterator[Union[RawRow, DeadLetter]]:
        """One source record -> the raw canonical rows it holds (one for a flat record,
        several for a list-shaped one, see :mod:`pipelines.sources.lists`) and dead letters
        for parts that cannot be reshaped."""
        m = self.mapping
        if m.tables:
            m = self.mapping_for(rec.origin.rpartition(":")[0])
        if not m.is_list_shaped():
            yield self.reshape(rec, m)
            return
        yield from lists.expand_record(rec.origin, rec.values, scalars=m.scalar_targets(),
                                       constants=m.constants, exposures=m.exposures,
                                       history=m.history, positives_only=self.positives_only)

    def reshape(self, rec: Record, m: Optional[LogMapping] = None) -> RawRow:
        """One flat source record -> raw canonical row (values untouched; missing keys -> None)."""
        m = m or self.mapping
        v = rec.values
        targets = self._targets if m is self.mapping else m.scalar_targets()
        row: RawRow = {f: v.get(c) for f, c in targets.items()}
        row.update(m.constants)
        if self.positives_only:
            if "clicked" not in row:
                row["clicked"] = 1
        row["_origin"] = rec.origin
        row["_raw"] = rec.raw
        return row

    # -- reading: shards of files (pipelines.sources.fileio) ------------------------------------
    def plan(self, path: str) -> List[Shard]:
        """The shards file ``path`` is read as (byte ranges, row groups, or the whole file;
        the item file as one shard)."""
        if path == self._items_path:
            return [Shard(path, "items")]
        m = self.mapping_for(path)
        return plan_file(path, self._sizes.get(path, 0), self.format_of(path), m.compression,
                         self.split_bytes)

    def read_shard(self, shard: Shard, newlines_before: int = 0
                   ) -> Iterator[Union[RawRow, DeadLetter]]:
        path = shard.path
        if path == self._items_path:  # its dead letters, once; its lines fill the log rows
            yield from items_mod.item_dead_letters(self.mapping.items, self._item_names)
            return
        m = self.mapping_for(path)
        absent = self._absent.get(path, set())
        table = self.item_table() if self._items_path else None
        if shard.fmt == "parquet":
            cols = sorted({c for f, c in m.targets().items() if f not in absent})
            items = iter_parquet_records(shard, cols)
        else:
            items = iter_text_records(shard, newlines_before, m.text_options(shard.fmt),
                                      names=self._header.get(path))
        for item in items:
            if isinstance(item, DeadLetter):
                yield item
                continue
            for row in self.rows_of(item):
                if not isinstance(row, DeadLetter):
                    for f in absent:
                        row.pop(f, None)
                    if m.page_from and not _is_history_row(row):
                        row["page_id"] = page_id_from(row, m.page_from)
                    if table:
                        items_mod.fill_sides(row, table)
                yield row

    def read_file(self, path: str) -> Iterator[Union[RawRow, DeadLetter]]:
        return read_shards_serially(self.plan(path), self.read_shard)
