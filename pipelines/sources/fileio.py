"""Reading log files through Beam's FileSystems: matching, compression, byte-range shards,
encodings and every way a line can be broken.

Every input is matched, opened and read with :class:`apache_beam.io.filesystems.FileSystems`
(never ``os.path``, ``glob`` or ``open``), so ``gs://``, ``hdfs://``, ``s3://`` and any registered
Beam filesystem work unchanged on Dataflow, Flink, Spark and Dask.

**Shards.** A file is read as one or more :class:`Shard`\\ s, which the Beam job spreads across
workers (:class:`pipelines.transforms.ReadSource`):

* an uncompressed line file (CSV/TSV/JSON-lines) is cut into byte ranges of ``split_bytes``;
  a shard reads the lines that *start* inside its range (the usual convention of splittable text
  sources: a shard that does not start at 0 skips through the first newline at or after
  ``start - 1``). Line numbers stay exact: each shard but the last counts its newlines
  (:func:`count_newlines`, a pass at memory/network speed), and a shard's first line number is
  derived from the counts of the shards before it;
* a compressed file (``.gz``, ``.bz2``, ``.deflate``, ``.zst``, ``.xz``/``.lzma``: Beam's
  ``CompressionTypes``) cannot be entered in the middle: it is one shard;
* a Parquet file is one shard per row group (record numbers from the file's metadata).

**Records and dead letters.** One physical line is one record. What cannot become a record is a
:class:`~pipelines.sources.base.DeadLetter` with the origin ``<file>:<line>`` and the rest of the
file is still read:

===================  ===========================================================================
``bad_encoding``     the line's bytes do not decode with the input's ``encoding``; ``raw`` is the
                     line with the bad bytes escaped (``\\xNN``)
``line_too_long``    the line exceeds ``max_line_bytes`` (default 1 MiB); ``raw`` is its first
                     1,000 bytes. This also bounds what an unterminated quote can swallow: a
                     record never runs past its own line
``bad_quoting``      a CSV line whose quotes do not close (``p1,"u12,i3``), or with text after a
                     closing quote. Quoted fields holding newlines are **not supported**: such a
                     record is cut at the line end and dead-lettered here (its continuation
                     lines usually become ``bad_column_count``)
``bad_column_count`` a CSV line with a number of fields other than the header's
``bad_json``         a JSON-lines line that is not a JSON object
``unreadable_file``  a file that cannot be opened or decoded as its format at all (e.g. a Parquet
                     file with a broken footer), one dead letter for the file
``unreadable_row_group`` a Parquet row group that cannot be decoded (one per row group)
===================  ===========================================================================

A UTF-8 byte-order mark at the start of a file is stripped (Excel and many exporters write one).
Blank lines are skipped. ``encoding`` must be ASCII-compatible (UTF-8, Latin-1, cp1252, GBK,
Shift-JIS...): UTF-16/32 files are refused up front (:func:`check_encoding`).
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime
import json
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.sources.base import DeadLetter

#: default byte range of one shard of an uncompressed line file
DEFAULT_SPLIT_BYTES = 64 << 20
#: default longest line (bytes, newline excluded) read as a record
DEFAULT_MAX_LINE_BYTES = 1 << 20
#: bytes of an over-long line kept in its dead letter
RAW_KEEP_BYTES = 1000
_CHUNK = 1 << 20
_BOM = codecs.BOM_UTF8

#: mapping value -> Beam compression type ("auto" = from the file's suffix)
COMPRESSIONS = {"auto": CompressionTypes.AUTO, "uncompressed": CompressionTypes.UNCOMPRESSED,
                "gzip": CompressionTypes.GZIP, "bzip2": CompressionTypes.BZIP2,
                "deflate": CompressionTypes.DEFLATE, "zstd": CompressionTypes.ZSTD,
                "lzma": CompressionTypes.LZMA}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".deflate", ".zst", ".zstd", ".xz", ".lzma")
LINE_FORMATS = ("csv", "jsonl")


@dataclasses.dataclass
class Record:
    origin: str  # "<file>:<line>" (1-based physical line, or record number for Parquet)
    values: Dict[str, Any]  # column name (or "0", "1", ... without a header) -> value
    raw: Any  # the original line (text formats) or record dict (Parquet), JSON-able


Item = Union[Record, DeadLetter]


@dataclasses.dataclass(frozen=True)
class TextOptions:
    """How the lines of a text file become records."""

    fmt: str = "csv"  # "csv" | "jsonl" | "lines" (raw text lines, values {"line": text})
    delimiter: str = ","
    quotechar: Optional[str] = '"'  # None: quotes are ordinary characters (QUOTE_NONE)
    header: bool = True  # csv: the first non-blank line of the file names the columns
    fieldnames: Optional[Tuple[str, ...]] = None  # csv: column names when there is no header
    strict_columns: bool = True  # csv: a line with another number of fields is a dead letter
    encoding: str = "utf-8"
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES


@dataclasses.dataclass(frozen=True)
class Shard:
    """A piece of one file. Text: bytes ``[start, end)`` (``end`` -1 = to the end), ``last`` =
    whether it is the file's last shard. Parquet: row groups ``[start, end)``, whose first
    record is number ``first_record`` (0-based). ``error``: the file could not be planned (the
    reader dead-letters it)."""

    path: str
    fmt: str
    index: int = 0
    start: int = 0
    end: int = -1
    last: bool = True
    compression: str = CompressionTypes.UNCOMPRESSED
    first_record: int = 0
    error: str = ""


# ---------------------------------------------------------------------------------------------
# Matching and opening
# ---------------------------------------------------------------------------------------------
def is_compressed_name(path: str) -> bool:
    return path.lower().endswith(COMPRESSION_SUFFIXES)


def strip_compression_suffix(path: str) -> str:
    low = path.lower()
    for s in COMPRESSION_SUFFIXES:
        if low.endswith(s):
            return path[:-len(s)]
    return path


def extension(path: str) -> str:
    """The format extension of ``path`` (``.csv`` for ``log.csv.gz``), lower-cased."""
    base = strip_compression_suffix(path).rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def compression_of(path: str, compression: str = "auto") -> str:
    """The Beam compression type of ``path``: ``compression`` (a key of :data:`COMPRESSIONS`)
    or, for "auto", the one its suffix names."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r} (known: {list(COMPRESSIONS)})")
    ct = COMPRESSIONS[compression]
    return CompressionTypes.detect_compression_type(path) if ct == CompressionTypes.AUTO else ct


def _match(pattern: str) -> List[Tuple[str, int]]:
    try:
        res = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # a pattern on a missing bucket/dir: "nothing matched" for the caller
        return []
    return [(m.path, int(m.size_in_bytes)) for m in res]


def match_files(input: Union[str, Sequence[str]], exts: Sequence[str] = ()
                ) -> List[Tuple[str, int]]:
    """A file, a directory (its files whose format extension is in ``exts``, non-recursive,
    names starting with "." or "_" skipped), a glob, a comma-separated list or a list of those
    -> sorted [(path, size)]. Raises FileNotFoundError naming the input."""
    if not isinstance(input, str):
        return sorted({f for i in input for f in match_files(i, exts)})
    if "," in input and not _match(input):
        return match_files([p for p in input.split(",") if p], exts)
    if any(c in input for c in "*?["):
        out = _match(input)
    else:
        listed = [(p, n) for p, n in _match(FileSystems.join(input.rstrip("/"), "*"))
                  if not basename(p).startswith((".", "_"))]
        if listed:  # a directory (or a prefix that holds objects)
            out = [(p, n) for p, n in listed if not exts or extension(p) in exts]
        else:
            out = [(p, n) for p, n in _match(input) if p.rstrip("/") == input.rstrip("/")]
    if not out:
        raise FileNotFoundError(f"no input files found for {input!r}"
                                + (f" (looked for {', '.join(exts)})" if exts else ""))
    return sorted(set(out))


def open_file(path: str, compression: str = CompressionTypes.UNCOMPRESSED):
    """A binary file object for ``path`` through Beam FileSystems (decompressing)."""
    return FileSystems.open(path, compression_type=compression)


def check_encoding(encoding: str) -> str:
    """Validate an encoding name for line-oriented reading; returns its canonical name."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if "\n".encode(name) != b"\n" or name.startswith(("utf-16", "utf-32")):
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible: line files must "
                         "use an encoding in which a newline is the byte 0x0A (utf-8, latin-1, "
                         "cp1252, gbk, shift_jis, ...); re-encode the file")
    return name


# ---------------------------------------------------------------------------------------------
# Lines
# ---------------------------------------------------------------------------------------------
class _LineReader:
    """Lines of a binary file object, each at most ``limit`` bytes (then the rest of the line is
    returned by the following calls), without trusting the object's own ``readline``
    (compressed Beam files have no size limit on it)."""

    def __init__(self, fh):
        self.fh, self.buf, self.i = fh, b"", 0

    def readline(self, limit: int) -> bytes:
        while True:
            j = self.buf.find(b"\n", self.i, self.i + limit)
            if j >= 0:
                out, self.i = self.buf[self.i:j + 1], j + 1
                return out
            if len(self.buf) - self.i >= limit:
                out, self.i = self.buf[self.i:self.i + limit], self.i + limit
                return out
            chunk = self.fh.read(_CHUNK)
            if not chunk:
                out, self.buf, self.i = self.buf[self.i:], b"", 0
                return out
            self.buf = self.buf[self.i:] + chunk
            self.i = 0


def count_newlines(shard: Shard) -> int:
    """Number of newline bytes in the shard's byte range (text shards)."""
    fh = open_file(shard.path, shard.compression)
    try:
        fh.seek(shard.start)
        left = None if shard.end < 0 else shard.end - shard.start
        n = 0
        while left is None or left > 0:
            chunk = fh.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            n += chunk.count(b"\n")
            if left is not None:
                left -= len(chunk)
        return n
    finally:
        fh.close()


def _escape(b: bytes, encoding: str) -> str:
    return b.decode(encoding, "backslashreplace")


def iter_raw_lines(shard: Shard, newlines_before: int = 0, opts: TextOptions = TextOptions()
                   ) -> Iterator[Union[Tuple[int, str], DeadLetter]]:
    """(line number, decoded line without its newline) for every line starting in the shard,
    or a ``bad_encoding`` / ``line_too_long`` DeadLetter; blank lines included.
    ``newlines_before``: newlines in the file before ``shard.start``."""
    path, limit = shard.path, opts.max_line_bytes
    fh = open_file(path, shard.compression)
    try:
        pos = shard.start
        if pos > 0:
            fh.seek(pos - 1)
        reader = _LineReader(fh)
        line_no = 1
        if pos > 0:  # skip the rest of the line that started in the previous shard
            skipped = reader.readline(_CHUNK)
            only_newline, n_skipped = skipped == b"\n", len(skipped)
            while skipped and not skipped.endswith(b"\n"):
                skipped = reader.readline(_CHUNK)
                n_skipped += len(skipped)
            if not skipped:
                return  # the range lies inside the file's last line: the previous shard owns it
            line_no = newlines_before - (1 if only_newline else 0) + 2
            pos += n_skipped - 1
        while shard.end < 0 or pos < shard.end:
            line = reader.readline(limit + 2)  # + "\r\n"
            if not line:
                break
            start_pos, pos = pos, pos + len(line)
            origin = f"{path}:{line_no}"
            line_no += 1
            body = line.rstrip(b"\n").rstrip(b"\r") if line.endswith(b"\n") else line
            if len(body) > limit:
                total, head = len(line), line[:RAW_KEEP_BYTES]
                while not line.endswith(b"\n"):
                    line = reader.readline(_CHUNK)
                    if not line:
                        break
                    pos += len(line)
                    total += len(line)
                yield DeadLetter("line_too_long",
                                 f"{origin}: line of {total} bytes is longer than max_line_bytes="
                                 f"{limit} (an unterminated quote or a broken record "
                                 "separator?); the line is skipped", origin,
                                 _escape(head, opts.encoding) + "...")
                continue
            if start_pos == 0 and body.startswith(_BOM):
                body = body[len(_BOM):]
            try:
                text = body.decode(opts.encoding)
            except UnicodeDecodeError as e:
                yield DeadLetter("bad_encoding",
                                 f"{origin}: bytes {body[e.start:e.end]!r} at byte {e.start} of "
                                 f"the line are not valid {opts.encoding} ({e.reason})",
                                 origin, _escape(body, opts.encoding))
                continue
            yield line_no - 1, text
    finally:
        fh.close()


def parse_csv_line(text: str, opts: TextOptions) -> List[str]:
    """One CSV line -> fields; raises csv.Error on bad quoting. A delimiter of several
    characters (MovieLens' ``::``) splits the line plainly (no quoting)."""
    if len(opts.delimiter) > 1:
        return text.split(opts.delimiter)
    if opts.quotechar is None:
        return next(csv.reader([text], delimiter=opts.delimiter, quoting=csv.QUOTE_NONE,
                               strict=True))
    return next(csv.reader([text], delimiter=opts.delimiter, quotechar=opts.quotechar,
                           strict=True))


def iter_text_records(shard: Shard, newlines_before: int = 0, opts: TextOptions = TextOptions(),
                      names: Optional[Sequence[str]] = None) -> Iterator[Item]:
    """Records of a text shard. CSV column names: ``names`` (the file's header, read by the
    caller), ``opts.fieldnames`` or "0", "1", ...; with ``opts.header`` the first non-blank line
    of the file (in shard 0) is the header and is skipped."""
    header_pending = opts.fmt == "csv" and opts.header and shard.start == 0
    names = list(names) if names is not None else (
        list(opts.fieldnames) if opts.fieldnames else None)
    for item in iter_raw_lines(shard, newlines_before, opts):
        if isinstance(item, DeadLetter):
            yield item
            continue
        line_no, text = item
        if not text.strip():
            continue
        origin = f"{shard.path}:{line_no}"
        if opts.fmt == "lines":
            yield Record(origin, {"line": text}, text)
            continue
        if opts.fmt == "jsonl":
            try:
                obj = json.loads(text)
            except ValueError as e:
                yield DeadLetter("bad_json", f"{origin}: not valid JSON ({e})", origin, text)
                continue
            if not isinstance(obj, dict):
                yield DeadLetter("bad_json", f"{origin}: expected a JSON object, got "
                                 f"{type(obj).__name__}", origin, text)
                continue
            yield Record(origin, obj, text)
            continue
        try:
            fields = parse_csv_line(text, opts)
        except csv.Error as e:
            yield DeadLetter("bad_quoting", f"{origin}: {e} (a quote that does not close on its "
                             "line; quoted fields spanning lines are not supported)", origin, text)
            continue
        if header_pending:
            header_pending = False
            if names is None:
                names = [f.strip() for f in fields]
            continue
        keys = names if names is not None else [str(i) for i in range(len(fields))]
        if len(fields) != len(keys):
            if opts.strict_columns:
                yield DeadLetter("bad_column_count",
                                 f"{origin}: expected {len(keys)} columns, got {len(fields)}",
                                 origin, text)
                continue
            keys = keys + [str(i) for i in range(len(keys), len(fields))]
        yield Record(origin, dict(zip(keys, fields)), text)


def read_header(path: str, opts: TextOptions, compression: str = "auto") -> List[str]:
    """Column names of a CSV file with a header (its first non-blank, decodable line), or of a
    JSON-lines file (the keys of its first JSON object); [] when they cannot be known."""
    shard = Shard(path, opts.fmt, compression=compression_of(path, compression))
    if opts.fmt == "csv":
        if not opts.header:
            return []
        for item in iter_raw_lines(shard, 0, opts):
            if isinstance(item, DeadLetter) or not item[1].strip():
                continue
            try:
                return [f.strip() for f in parse_csv_line(item[1], opts)]
            except csv.Error:
                return []
        return []
    for item in iter_text_records(shard, 0, opts):
        if isinstance(item, Record):
            return list(item.values)
    return []


#: how many leading lines of a header-less CSV file vote on its number of columns
WIDTH_SAMPLE_LINES = 100


def headerless_width(path: str, opts: TextOptions, compression: str = "auto",
                     sample: int = WIDTH_SAMPLE_LINES) -> Tuple[int, int, int]:
    """The number of columns of a header-less CSV file: the most common field count among its
    first ``sample`` non-blank lines that decode and split (ties: the count seen first), so that
    one broken first line does not decide it. Returns ``(width, lines agreeing, lines
    sampled)``; ``(0, 0, 0)`` for a file with no such line."""
    shard = Shard(path, "csv", compression=compression_of(path, compression))
    counts: Dict[int, int] = {}
    seen = 0
    for item in iter_raw_lines(shard, 0, opts):
        if isinstance(item, DeadLetter) or not item[1].strip():
            continue
        try:
            n = len(parse_csv_line(item[1], opts))
        except csv.Error:
            continue
        counts[n] = counts.get(n, 0) + 1
        seen += 1
        if seen >= sample:
            break
    if not counts:
        return 0, 0, 0
    width = max(counts, key=lambda n: counts[n])  # dicts keep first-seen order for ties
    return width, counts[width], seen


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------
def jsonable(v: Any) -> Any:
    """A Parquet value as plain JSON-able Python: timestamps -> unix seconds (naive = UTC),
    dates -> ISO strings, bytes -> str (UTF-8, bad bytes replaced), lists/dicts recursively."""
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return int(v.timestamp())
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


def parquet_schema(path: str) -> List[str]:
    """Column names of a Parquet file; [] if it cannot be read (the reader dead-letters it)."""
    import pyarrow.parquet as pq

    try:
        with open_file(path) as fh:
            return list(pq.ParquetFile(fh).schema_arrow.names)
    except Exception:  # noqa: BLE001 - any decoding failure means "unreadable"
        return []


def plan_parquet(path: str) -> List[Shard]:
    import pyarrow.parquet as pq

    try:
        with open_file(path) as fh:
            md = pq.ParquetFile(fh).metadata
            sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    except Exception as e:  # noqa: BLE001
        return [Shard(path, "parquet", error=f"{type(e).__name__}: {e}")]
    out, first = [], 0
    for i, n in enumerate(sizes):
        out.append(Shard(path, "parquet", index=i, start=i, end=i + 1,
                         last=i == len(sizes) - 1, first_record=first))
        first += n
    return out


def iter_parquet_records(shard: Shard, columns: Optional[Sequence[str]] = None
                         ) -> Iterator[Item]:
    """Records of a Parquet shard (origin ``<file>:<record number>``, 1-based)."""
    import pyarrow.parquet as pq

    path = shard.path
    if shard.error:
        yield DeadLetter("unreadable_file", f"{path}:0: not a readable Parquet file "
                         f"({shard.error})", f"{path}:0", None)
        return
    n = shard.first_record
    try:
        with open_file(path) as fh:
            pf = pq.ParquetFile(fh)
            have = set(pf.schema_arrow.names)
            cols = [c for c in columns if c in have] if columns else None
            for g in range(shard.start, shard.end):
                try:
                    rows = pf.read_row_group(g, columns=cols).to_pylist()
                except Exception as e:  # noqa: BLE001
                    origin = f"{path}:{n + 1}"
                    size = pf.metadata.row_group(g).num_rows
                    yield DeadLetter("unreadable_row_group",
                                     f"{origin}: row group {g} ({size} records from record "
                                     f"{n + 1}) cannot be decoded ({type(e).__name__}: {e})",
                                     origin, None)
                    n += size
                    continue
                for rec in rows:
                    n += 1
                    rec = {k: jsonable(v) for k, v in rec.items()}
                    yield Record(f"{path}:{n}", rec, rec)
    except Exception as e:  # noqa: BLE001 - the file itself became unreadable
        yield DeadLetter("unreadable_file", f"{path}:{n + 1}: the Parquet file cannot be read "
                         f"from record {n + 1} ({type(e).__name__}: {e})", f"{path}:{n + 1}", None)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
MIN_SPLIT_BYTES = 1 << 20  # the smallest byte range :func:`split_for_min_shards` makes


def split_for_min_shards(splittable_bytes: int, split_bytes: int, min_shards: int) -> int:
    """The byte range to cut uncompressed line files with so that ``splittable_bytes`` of them
    give at least ``min_shards`` ranges: ``split_bytes`` when it already does, else the total
    over ``min_shards``, never below :data:`MIN_SPLIT_BYTES` (a smaller input stays in fewer
    shards: a range costs a task and a newline count)."""
    if min_shards <= 1 or splittable_bytes <= 0:
        return split_bytes
    return min(split_bytes, max(MIN_SPLIT_BYTES, -(-splittable_bytes // min_shards)))


def plan_file(path: str, size: int, fmt: str, compression: str = "auto",
              split_bytes: int = DEFAULT_SPLIT_BYTES) -> List[Shard]:
    """The shards of one file (see the module docstring)."""
    if fmt == "parquet":
        return plan_parquet(path)
    ct = compression_of(path, compression)
    if ct != CompressionTypes.UNCOMPRESSED or split_bytes <= 0 or size <= split_bytes:
        return [Shard(path, fmt, compression=ct)]
    starts = list(range(0, size, split_bytes))
    return [Shard(path, fmt, index=i, start=s, end=-1 if i == len(starts) - 1 else s + split_bytes,
                  last=i == len(starts) - 1, compression=ct) for i, s in enumerate(starts)]


def line_bases(counts: Sequence[Tuple[int, int]]) -> Dict[int, int]:
    """{shard index: newlines before it} from [(shard index, newlines in it)] of the shards of
    one file (all but the last)."""
    out, acc = {0: 0}, 0
    for i, n in sorted(counts):
        acc += n
        out[i + 1] = acc
    return out


def read_shards_serially(shards: Sequence[Shard], read) -> Iterator[Any]:
    """``read(shard, newlines_before)`` over the shards of one file in order (for reading
    outside Beam)."""
    before = 0
    for s in shards:
        yield from read(s, before)
        if s.fmt in LINE_FORMATS + ("lines",) and not s.last:
            before += count_newlines(s)
