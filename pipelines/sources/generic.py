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
import datetime
import glob
import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from ctrcore.schema import CANONICAL_FIELDS, USER_PROFILE_PREFIX
from pipelines.sources.base import DeadLetter, RawRow, Source

FORMATS = ("csv", "parquet", "jsonl")
SPLITS = ("time", "leave_last_out")
EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".json": "jsonl",
              ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED = tuple(k for k, (_, req) in CANONICAL_FIELDS.items() if req)
#: required fields that positives-only logs may omit (page = (user, timestamp); clicked = 1)
NOT_REQUIRED_IF_POSITIVES_ONLY = ("page_id", "clicked")
MAPPING_KEYS = ("format", "delimiter", "header", "columns", "user_profile", "timestamp_format",
                "positives_only", "label_values", "optional", "split", "constants",
                "description")

Item = Union["Record", DeadLetter]


class MappingError(ValueError):
    """The mapping file is invalid or does not fit the input files."""


@dataclasses.dataclass
class Record:
    origin: str  # "<file>:<line>" (1-based physical line, or record number for Parquet)
    values: Dict[str, Any]  # column name (or "0", "1", ... without a header) -> value
    raw: Any  # the original line (text formats) or record dict (Parquet), JSON-able


# ---------------------------------------------------------------------------------------------
# File readers (shared by every source)
# ---------------------------------------------------------------------------------------------
def resolve_files(input: Union[str, Sequence[str]], exts: Sequence[str] = ()) -> List[str]:
    """A file, a directory (its files with one of ``exts``, non-recursive), a glob or a list
    of those -> sorted list of files. Raises FileNotFoundError naming the input."""
    if not isinstance(input, str):
        return sorted({f for i in input for f in resolve_files(i, exts)})
    if os.path.isdir(input):
        out = [os.path.join(input, f) for f in os.listdir(input)
               if os.path.isfile(os.path.join(input, f)) and not f.startswith((".", "_"))
               and (not exts or os.path.splitext(f)[1].lower() in exts)]
    elif any(c in input for c in "*?["):
        out = [f for f in glob.glob(input) if os.path.isfile(f)]
    else:
        out = [input] if os.path.isfile(input) else []
    if not out:
        raise FileNotFoundError(f"no input files found for {input!r}"
                                + (f" (looked for {', '.join(exts)})" if exts else ""))
    return sorted(out)


def infer_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise MappingError(f"cannot infer the format of {path!r} from its extension; set "
                           f"\"format\" ({'|'.join(FORMATS)}) in the mapping")
    return EXTENSIONS[ext]


def iter_lines(path: str) -> Iterator[tuple]:
    """(1-based line number, line without the newline) for every line of a text file."""
    with open(path, encoding="utf-8", newline="") as fh:
        for i, line in enumerate(fh, 1):
            yield i, line.rstrip("\r\n")


class _Tap:
    """Line iterator for csv.reader that remembers the physical lines of the current record."""

    def __init__(self, fh):
        self.fh, self.buf, self.line = fh, [], 0

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self.fh)
        self.buf.append(line)
        self.line += 1
        return line

    def take(self) -> tuple:
        """(first line number, raw text) of the record just parsed."""
        raw = "".join(self.buf).rstrip("\r\n")
        first = self.line - len(self.buf) + 1
        self.buf = []
        return first, raw


def iter_delimited(path: str, *, delimiter: str = ",", header: bool = True,
                   fieldnames: Optional[Sequence[str]] = None, quoting: int = csv.QUOTE_MINIMAL,
                   strict_columns: bool = True) -> Iterator[Item]:
    """Records of a delimited text file. Column names: the header line, ``fieldnames``, or
    "0", "1", ... . A line with a different number of columns is a ``bad_column_count``
    dead letter (unless ``strict_columns`` is False). Blank lines are skipped."""
    with open(path, encoding="utf-8", newline="") as fh:
        tap = _Tap(fh)
        reader = csv.reader(tap, delimiter=delimiter, quoting=quoting)
        names = list(fieldnames) if fieldnames else None
        for fields in reader:
            line, raw = tap.take()
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if header and names is None:
                names = [f.strip() for f in fields]
                continue
            if names is None:
                names = [str(i) for i in range(len(fields))] if not strict_columns else None
            origin = f"{path}:{line}"
            if names is not None and len(fields) != len(names):
                if strict_columns:
                    yield DeadLetter("bad_column_count",
                                     f"{origin}: expected {len(names)} columns, got {len(fields)}",
                                     origin, raw)
                    continue
            keys = names if names is not None else [str(i) for i in range(len(fields))]
            yield Record(origin, dict(zip(keys, fields)), raw)


def iter_jsonl(path: str) -> Iterator[Item]:
    """Records of a JSON-lines file (one JSON object per line; blank lines skipped)."""
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        origin = f"{path}:{line_no}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            yield DeadLetter("bad_json", f"{origin}: not valid JSON ({e})", origin, line)
            continue
        if not isinstance(obj, dict):
            yield DeadLetter("bad_json", f"{origin}: expected a JSON object, got "
                             f"{type(obj).__name__}", origin, line)
            continue
        yield Record(origin, obj, line)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(v.timestamp())  # Parquet timestamp columns -> unix seconds
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def iter_parquet(path: str, columns: Optional[Sequence[str]] = None,
                 batch_size: int = 65_536) -> Iterator[Item]:
    """Records of a Parquet file (origin = 1-based record number). Timestamp-typed columns
    come out as unix seconds (ints)."""
    import pyarrow.parquet as pq

    n = 0
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
        for rec in batch.to_pylist():
            n += 1
            rec = {k: _jsonable(v) for k, v in rec.items()}
            yield Record(f"{path}:{n}", rec, rec)


def file_columns(path: str, fmt: str, *, delimiter: str = ",", header: bool = True) -> List[str]:
    """Column names of a file: CSV header line, Parquet schema, or the keys of the first
    JSON-lines record. [] when they cannot be known (header-less CSV, empty file)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if fmt == "csv":
        if not header:
            return []
        for item in iter_delimited(path, delimiter=delimiter, header=False,
                                   strict_columns=False):
            return [v.strip() for v in item.values.values()] if isinstance(item, Record) else []
        return []
    for item in iter_jsonl(path):
        if isinstance(item, Record):
            return list(item.values)
    return []


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
    name: str = "<mapping>"  # the mapping file, for error messages

    def targets(self) -> Dict[str, str]:
        """Output field (canonical or ``user_<p>``) -> source column."""
        out = dict(self.columns)
        out.update({USER_PROFILE_PREFIX + p: c for p, c in self.user_profile.items()})
        return out


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
            with open(mapping) as fh:
                d = json.load(fh)
        except FileNotFoundError:
            raise MappingError(f"mapping file {mapping} not found") from None
        except ValueError as e:
            raise MappingError(f"mapping file {mapping} is not valid JSON: {e}") from None
    else:
        d, name = dict(mapping), name or "<dict>"
    if not isinstance(d, dict):
        raise _err(name, f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(MAPPING_KEYS))
    if unknown:
        raise _err(name, f"unknown key(s) {unknown} (allowed: {list(MAPPING_KEYS)})")

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
    missing = [f for f in REQUIRED if f not in cols and f not in consts and f not in exempt]
    if missing:
        raise _err(name, f"required canonical field(s) {missing} not mapped in \"columns\" "
                         "(or \"constants\")")
    ts_fmt = d.get("timestamp_format", "unix")
    if not isinstance(ts_fmt, str) or (ts_fmt not in ("unix", "unix_ms") and "%" not in ts_fmt):
        raise _err(name, f"\"timestamp_format\" is {ts_fmt!r}: expected \"unix\", \"unix_ms\" "
                         "or a strptime format such as \"%Y-%m-%d %H:%M:%S\"")
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
    delimiter = d.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise _err(name, f"\"delimiter\" must be one character, got {delimiter!r}")
    header = d.get("header", True)
    if not isinstance(header, bool):
        raise _err(name, f"\"header\" must be true/false, got {header!r}")
    return LogMapping(columns=dict(cols), format=fmt, delimiter=delimiter, header=header,
                    user_profile=prof, timestamp_format=ts_fmt, positives_only=positives_only,
                    label_values=labels, optional=list(optional), split=split,
                    constants=dict(consts), name=name)


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
    """

    name = "generic"

    def __init__(self, input: Union[str, Sequence[str]],
                 mapping: Union[str, Mapping[str, Any], LogMapping]):
        self.mapping = mapping if isinstance(mapping, LogMapping) else load_mapping(mapping)
        m = self.mapping
        exts = [e for e, f in EXTENSIONS.items() if m.format in (None, f)]
        self._files = resolve_files(input, exts if os.path.isdir(str(input)) else ())
        self.positives_only = m.positives_only
        self.split = m.split
        self.timestamp_format = m.timestamp_format
        self.label_values = m.label_values
        self.user_profile = tuple(m.user_profile)
        self._targets = m.targets()
        self._absent: Dict[str, set] = {}  # file -> optional fields absent from its header
        for path in self._files:
            self._check_header(path)

    def files(self) -> List[str]:
        return list(self._files)

    def format_of(self, path: str) -> str:
        return self.mapping.format or infer_format(path)

    def _check_header(self, path: str) -> None:
        m, fmt = self.mapping, self.format_of(path)
        have = file_columns(path, fmt, delimiter=m.delimiter, header=m.header)
        if fmt == "csv" and not m.header:
            bad = [c for c in self._targets.values() if not c.isdigit()]
            if bad:
                raise _err(m.name, f"\"header\" is false, so columns must be 0-based positions; "
                                   f"got {bad} for file {path}")
            return
        if not have:
            return  # empty file: nothing to check, nothing to read
        absent = set()
        for field, col in self._targets.items():
            if col not in have:
                if field in m.optional:
                    absent.add(field)
                    continue
                raise _err(m.name, f"column {col!r} (mapped to {field!r}) not found in file "
                                   f"{path} (its columns: {have})")
        self._absent[path] = absent

    def rows_of(self, rec: Record) -> Iterator[Union[RawRow, DeadLetter]]:
        """One source record -> the raw canonical rows it holds (one for a flat record,
        several for a list-shaped one) and dead letters for parts that cannot be reshaped."""
        yield self.reshape(rec)

    def reshape(self, rec: Record) -> RawRow:
        """One flat source record -> raw canonical row (values untouched; missing keys -> None)."""
        v = rec.values
        row: RawRow = {f: v.get(c) for f, c in self._targets.items()}
        row.update(self.mapping.constants)
        if self.positives_only:
            if "clicked" not in row:
                row["clicked"] = 1
        row["_origin"] = rec.origin
        row["_raw"] = rec.raw
        return row

    def read_file(self, path: str) -> Iterator[Union[RawRow, DeadLetter]]:
        m = self.mapping
        absent = self._absent.get(path, set())
        cols = sorted({c for f, c in self._targets.items() if f not in absent})
        for item in iter_records(path, self.format_of(path), delimiter=m.delimiter,
                                 header=m.header, columns=cols):
            if isinstance(item, DeadLetter):
                yield item
                continue
            for row in self.rows_of(item):
                if not isinstance(row, DeadLetter):
                    for f in absent:
                        row.pop(f, None)
                yield row
