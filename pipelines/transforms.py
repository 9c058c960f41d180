"""Beam building blocks of the preprocessing job (the pure logic lives in canonical, pages,
examples, negatives, stats, vocab)."""
from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, Sequence, Tuple

import apache_beam as beam

from pipelines.canonical import canonicalize
from pipelines.caps import UserRowCap
from pipelines.examples import BuildConfig, UserExampleBuilder
from pipelines.pages import UserLog, organize_user
from pipelines.sources.base import DeadLetter
from pipelines.sources.fileio import LINE_FORMATS, count_newlines, line_bases

DEAD = "dead"
ROWS = "rows"
LOGS = "logs"
READ = "read"  # (READ, rows read from one shard)
PARTIAL = "partial"  # (PARTIAL, (what, value)): a partition's partial sums (files grouping)
EXAMPLES = "examples"  # (EXAMPLES, (split, (shard, spill path))): examples spilled (files grouping)
SUMS = "sums"  # (SUMS, (stats Counter, tokens Counter)): a partition's sums (files grouping)


class ReadSource(beam.PTransform):
    """Source -> ONE PCollection of raw rows and DeadLetters, every file read in pieces in
    parallel (:mod:`pipelines.sources.fileio`): files are planned into shards (byte ranges of
    large uncompressed line files, Parquet row groups, whole compressed files), the newlines of
    every shard but a file's last are counted so each shard knows its first line number (a
    CoGroupByKey join, not a side input: runners that recompute side inputs, such as Beam's
    DaskRunner, would re-count for every bundle), and the shards are read after a reshuffle.
    No tagged outputs, so the transform runs unchanged on every runner."""

    def __init__(self, source, plan_at_build: bool = False, with_counts: bool = False,
                 then: Sequence[beam.DoFn] = ()):
        """``plan_at_build``: plan the shards now, in the launcher, and ``Create`` them (a
        runner that keeps the partitioning of a ``Create`` through the job, such as Beam's
        DaskRunner, then reads one large file in as many tasks as it has shards); otherwise
        the files are planned in parallel by the workers. ``with_counts``: after each shard's
        rows, one :class:`ShardCount` of them (the job counts the rows read from these, not
        from the rows: a runner that does not lift combiners, such as Beam's DaskRunner,
        would gather every row into one group to count it). ``then``: DoFns that every item
        read goes through inside the reading step (:class:`ReadShardsFn`), so the raw rows
        never form a collection of their own (Beam's DaskRunner holds a step's whole output
        of a task as a list, and keeps it until the job's end: measured, 1M raw and 1M
        canonical rows alive in a worker at the final merge)."""
        super().__init__()
        self.source, self.plan_at_build = source, plan_at_build
        self.with_counts, self.then = with_counts, list(then)

    def expand(self, p):
        files = list(self.source.files())
        if not files:
            raise FileNotFoundError(f"source {getattr(self.source, 'name', '?')!r}: no input files")
        source = self.source

        if self.plan_at_build:
            shards = p | "Shards" >> beam.Create([s for f in files for s in source.plan(f)])
        else:
            shards = (p | "Files" >> beam.Create(files)
                      | "SpreadFiles" >> beam.Reshuffle()
                      | "PlanShards" >> beam.FlatMap(source.plan))
        keyed = shards | "KeyShards" >> beam.Map(lambda s: ((s.path, s.index), s))
        bases = (shards
                 | "CountableShards" >> beam.Filter(_needs_line_count)
                 | "SpreadCounts" >> beam.Reshuffle()
                 | "CountNewlines" >> beam.Map(lambda s: (s.path, (s.index, count_newlines(s))))
                 | "CountsByFile" >> beam.GroupByKey()
                 | "LineBases" >> beam.FlatMap(
                     lambda kv: [((kv[0], i), n) for i, n in line_bases(list(kv[1])).items()]))
        return ({"shard": keyed, "base": bases}
                | "JoinLineBases" >> beam.CoGroupByKey()
                | "WithLineBase" >> beam.FlatMap(_shard_with_base)
                | "SpreadShards" >> beam.Reshuffle()
                | "ReadShards" >> beam.ParDo(ReadShardsFn(source, self.with_counts, self.then)))


class ReadShardsFn(beam.DoFn):
    """``(shard, line base)`` -> the shard's items (``source.read_shard``), then one
    :class:`ShardCount` (``with_counts``), each passed through the DoFns ``then`` in turn
    inside this one step (their ``setup``, ``start_bundle``, ``finish_bundle`` and
    ``teardown`` are called with this DoFn's; what their ``finish_bundle`` would emit is not
    supported, and none of the job's does)."""

    def __init__(self, source, with_counts: bool = False, then: Sequence[beam.DoFn] = ()):
        self.source, self.with_counts, self.then = source, with_counts, list(then)

    def setup(self):
        for fn in self.then:
            fn.setup()

    def start_bundle(self):
        for fn in self.then:
            fn.start_bundle()

    def process(self, shard_base):
        items = self._read(shard_base)
        for fn in self.then:
            items = _through(fn, items)
        yield from items

    def _read(self, shard_base):
        n = 0
        for item in self.source.read_shard(*shard_base):
            n += 1
            yield item
        if self.with_counts:
            yield ShardCount(n)

    def finish_bundle(self):
        for fn in self.then:
            if fn.finish_bundle():
                raise RuntimeError(f"{type(fn).__name__}.finish_bundle emitted outputs, which "
                                   "ReadShardsFn does not pass on")

    def teardown(self):
        for fn in self.then:
            fn.teardown()


def _through(fn: beam.DoFn, items: Iterable) -> Iterator:
    for item in items:
        out = fn.process(item)
        if out:
            yield from out


class ShardCount(int):
    """The number of items (rows and dead letters) read from one shard
    (``ReadSource(with_counts=True)``)."""


def _needs_line_count(shard) -> bool:
    return shard.fmt in LINE_FORMATS and not shard.last


def _shard_with_base(kv):
    joined = kv[1]
    for shard in joined["shard"]:
        yield shard, next(iter(joined["base"]), 0)


class CanonicalizeFn(beam.DoFn):
    """Raw rows -> ``(ROWS, (user_id, canonical row))`` and ``(DEAD, DeadLetter)`` pairs in ONE
    output (the source's own DeadLetters pass straight through as ``(DEAD, d)``, a
    :class:`ShardCount` as ``(READ, n)``); split them
    with :func:`select`. No tagged outputs: Beam's DaskRunner puts every tagged output of a
    multi-output ParDo in one bag that every consumer reads."""

    def __init__(self, canonical_kwargs: Dict[str, Any]):
        """``canonical_kwargs``: keyword arguments of :func:`canonicalize` (the source's
        ``canonical_kwargs()``)."""
        self.kwargs = dict(canonical_kwargs)

    def process(self, raw):
        if isinstance(raw, DeadLetter):
            return ((DEAD, raw),)
        if isinstance(raw, ShardCount):
            return ((READ, int(raw)),)
        out = canonicalize(raw, **self.kwargs)
        if isinstance(out, DeadLetter):
            return ((DEAD, out),)
        return ((ROWS, (out["user_id"], out)),)


SPILLED = "spilled"  # (SPILLED, (partition, spill path)) of SpillRowsFn


class SpillRowsFn(beam.DoFn):
    """The grouping through files' first step on :class:`CanonicalizeFn`'s ONE output: each
    ``(ROWS, (user_id, row))`` appended to its partition's spill file
    (:class:`pipelines.filegroup.SpillFn`), a new file's name emitted as ``(SPILLED,
    (partition, path))``; every other pair (dead letters, shard counts) passed through. So the
    rows have one consumer: a runner that keeps a step's output until all of its consumers ran
    (Beam's DaskRunner holds bag partitions) never holds them for a second one."""

    def __init__(self, prefix: str, num_partitions: int, seed: int = 0):
        from pipelines.filegroup import SpillFn

        self.spill = SpillFn(prefix, num_partitions, seed)

    def start_bundle(self):
        self.spill.start_bundle()

    def process(self, tagged):
        if tagged[0] != ROWS:
            yield tagged
            return
        for part_path in self.spill.process(tagged[1]):
            yield SPILLED, part_path

    def finish_bundle(self):
        self.spill.finish_bundle()


def organize_tagged(user_id, rows, max_rows: int = 0):
    """One user's rows -> ``(DEAD, DeadLetter)`` pairs (rows over the per-user cap,
    :mod:`pipelines.caps`, then duplicates) and one ``(LOGS, UserLog)`` pair. ``rows`` may be a
    lazy iterable: with a cap, at most ``max_rows`` rows are held."""
    if max_rows:
        cap = UserRowCap(user_id, max_rows)
        for r in rows:
            cut = cap.add(r)
            if cut is not None:
                yield DEAD, cut
        rows = cap.kept()
    log, dead = organize_user(user_id, rows)
    for d in dead:
        yield DEAD, d
    yield LOGS, log


class OrganizeUserFn(beam.DoFn):
    """(user_id, rows) -> ``(LOGS, UserLog)`` and ``(DEAD, DeadLetter)`` pairs in one output
    (:func:`organize_tagged`); split them with :func:`select`."""

    def __init__(self, max_rows_per_user: int = 0):
        self.max_rows = max_rows_per_user

    def process(self, kv):
        return organize_tagged(kv[0], kv[1], self.max_rows)


class OrganizePartitionFn(beam.DoFn):
    """Pass 1 of the grouping through files: ``(partition, [spill paths])`` of
    :class:`pipelines.filegroup.SpillByKey` -> the ``(DEAD, DeadLetter)`` pairs of
    :func:`organize_tagged` of every user of the partition (read a chunk of at most
    ``chunk_bytes`` of encoded rows at a time), then the partition's partial sums of what the
    context needs: ``(PARTIAL, ("item_sides", (bucket, {item: (category Counter, seller
    Counter)})))`` per item-hash bucket (:class:`ItemSidesAcc`) and ``(PARTIAL, ("ts",
    Counter of page timestamps))``."""

    def __init__(self, max_rows_per_user: int = 0, chunk_bytes: int = 64 << 20,
                 item_buckets: int = 16, partials_prefix: str = ""):
        self.max_rows, self.chunk_bytes = max_rows_per_user, chunk_bytes
        self.item_buckets, self.partials_prefix = item_buckets, partials_prefix

    def process(self, kv):
        from pipelines.filegroup import group_spilled

        part, paths = kv
        sides, ts = ItemSidesAcc(), Counter()
        for user_id, rows in group_spilled(part, paths, chunk_bytes=self.chunk_bytes):
            for tag, value in organize_tagged(user_id, rows, self.max_rows):
                if tag == LOGS:
                    sides.add_log(value)
                    ts.update(page_timestamps(value))
                else:
                    yield tag, value
        # the partition's partial sums, once at the end of the element (not in finish_bundle,
        # whose outputs Beam's DaskRunner drops): a few elements per partition cross the
        # runner, not one per row or page, also where combiners are not lifted (Dask)
        # with a partials_prefix, each bucket's table goes to a file and only its name crosses
        # the runner (a runner with an in-memory shuffle, Beam's DaskRunner, would otherwise
        # hold two Counters per item and partition until the merge runs)
        token = uuid.uuid4().hex[:12]
        for bucket, table in sides.buckets(self.item_buckets):
            if self.partials_prefix:
                table = dump_value(table, f"{self.partials_prefix}{part}-{bucket}-{token}.pickle")
            yield PARTIAL, ("item_sides", (bucket, table))
        yield PARTIAL, ("ts", ts)


def select(tagged, tag):
    """FlatMap function: the value of a ``(tag, value)`` pair whose tag is ``tag``."""
    return (tagged[1],) if tagged[0] == tag else ()


#: fields of a :class:`BuildExamplesFn` output (one tuple per user)
OUT_TRAIN, OUT_VALID, OUT_TEST, OUT_STATS, OUT_TOKENS = range(5)
SPLIT_FIELD = {"train": OUT_TRAIN, "valid": OUT_VALID, "test": OUT_TEST}


class BuildExamplesFn(beam.DoFn):
    """UserLog -> ONE tuple per user: ``(train, valid, test, stats, tokens)`` = the user's
    serialized examples of each split (lists, in build order), the user's statistics Counter
    and train vocabulary token Counter (``(vocabulary, token) -> n``).

    One element per user, not tagged outputs (Beam's DaskRunner merges tagged outputs) and not
    per-bundle counters emitted in ``finish_bundle`` (the DaskRunner drops those outputs): the
    consumers take a field each (:func:`user_field`, :func:`user_examples`) at a per-user, not
    per-example, cost, and the Counters are summed by a combiner (``MergeCounters``), which
    runners lift into per-bundle partial sums. Side input ``ctx``: ``(item_table, universe,
    cutoffs)`` from :class:`ContextFn`."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self):
        self.builder = UserExampleBuilder(self.cfg)

    def process(self, log: UserLog, ctx):
        yield build_user(self.builder, log, *ctx)


class BuildPartitionFn(beam.DoFn):
    """Pass 2 of the grouping through files, in ONE DoFn: ``(partition, {"spill": [[spill
    paths]], "ctx": [context file]})`` (a CoGroupByKey of the partitions with the context file's
    path, :func:`write_context`) -> per user of the partition: cap, organize and build. The
    users' logs are made again here rather than kept from pass 1 (a runner would hold them
    between the stages: they wait for the context, which needs every user), and the context
    comes from a file, not a side input (Beam's DaskRunner recomputes a side input's upstream
    in every task that reads it). Pass 1's dead letters are not emitted twice.

    The examples are spilled here, into the spill files of their split's sink
    (:class:`pipelines.sinks.ShardSpiller`; ``sinks``: split -> ``(prefix, num_shards,
    seed)`` of its :class:`pipelines.sinks.MergeSpills`), and only ``(EXAMPLES, (split,
    (shard, spill path)))`` leaves, once per file: a runner that holds a task's outputs as a
    list (Beam's DaskRunner) never holds the examples. The statistics and tokens are summed
    over the partition: ONE ``(SUMS, (stats, tokens))`` at the end of the element."""

    def __init__(self, cfg: BuildConfig, sinks: Dict[str, Tuple[str, int, int]],
                 max_rows_per_user: int = 0, chunk_bytes: int = 64 << 20):
        self.cfg, self.sinks = cfg, dict(sinks)
        self.max_rows, self.chunk_bytes = max_rows_per_user, chunk_bytes

    def setup(self):
        self.builder = UserExampleBuilder(self.cfg)
        self._ctx_path, self._ctx = None, None

    def process(self, kv):
        from pipelines.filegroup import group_spilled
        from pipelines.sinks import ShardSpiller

        part, joined = kv
        paths = [p for ps in joined["spill"] for p in ps]
        if not paths:
            return
        ctx_paths = sorted(set(joined["ctx"]))
        if len(ctx_paths) != 1:
            raise RuntimeError(f"partition {part}: expected one context file, got {ctx_paths}")
        if ctx_paths[0] != self._ctx_path:
            self._ctx_path, self._ctx = ctx_paths[0], read_context(ctx_paths[0])
        item_table, universe, cutoffs = self._ctx
        stats, tokens = Counter(), Counter()
        spillers = {split: ShardSpiller(*self.sinks[split]) for split in SPLIT_FIELD}
        try:
            for user_id, rows in group_spilled(part, paths, chunk_bytes=self.chunk_bytes):
                log = [v for t, v in organize_tagged(user_id, rows, self.max_rows) if t == LOGS][0]
                for split, ex in self.builder.build(log, item_table, universe, cutoffs,
                                                    stats, tokens):
                    new = spillers[split].add(ex)
                    if new is not None:
                        yield EXAMPLES, (split, new)
        finally:
            for spiller in spillers.values():
                spiller.close()
        # the partition's statistics and tokens once (see OrganizePartitionFn.process)
        yield SUMS, (stats, tokens)


def build_user(builder: UserExampleBuilder, log: UserLog, item_table, universe, cutoffs):
    """ONE user's ``(train, valid, test, stats, tokens)`` (see :class:`BuildExamplesFn`)."""
    stats: Counter = Counter()
    tokens: Counter = Counter()
    out = ([], [], [])
    for split, ex in builder.build(log, item_table, universe, cutoffs, stats, tokens):
        out[SPLIT_FIELD[split]].append(ex)
    return out + (stats, tokens)


def dump_value(value, path: str) -> str:
    """Pickle ``value`` to ``path`` (any Beam filesystem, uncompressed); returns ``path``."""
    import pickle

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load_value(path: str):
    """The value :func:`dump_value` wrote to ``path``."""
    import pickle

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return pickle.loads(fh.read())


def write_context(ctx, path: str) -> str:
    """Write a :class:`ContextFn` value to ``path`` (any Beam filesystem; the item table in
    its compact form, :class:`pipelines.itemtable.ItemTable`, without the universe, which is
    rebuilt from it); returns ``path``."""
    from pipelines.itemtable import compact

    table, _, cutoffs = ctx
    return dump_value((compact(table), cutoffs), path)


def read_context(path: str):
    """The ``(item_table, universe, cutoffs)`` written by :func:`write_context`."""
    table, cutoffs = load_value(path)
    return table, table.universe(), cutoffs


def user_examples(built, field: int):
    """FlatMap function: the examples of one split of a :class:`BuildExamplesFn` output."""
    return built[field]


def user_field(built, field: int):
    """Map function: one field of a :class:`BuildExamplesFn` output."""
    return built[field]


class ContextFn(beam.CombineFn):
    """What every user's example building needs from the whole log, as ONE value
    ``(item_table, universe, cutoffs)``: ``item_table`` {item: (category, seller)} from
    ``("item", (item, sides))`` or ``("items", {item: sides})`` inputs, ``universe`` its
    sorted item ids (negative sampling), ``cutoffs`` the time-split cutoffs from ``("ts",
    (page timestamp, pages))`` or ``("ts_counts", Counter)`` inputs
    (``(inf, inf)`` for leave-last-out). Other inputs (a ``("once", None)`` that guarantees one
    output on an empty log) are ignored. One side input instead of three: a runner that
    recomputes side inputs (Beam's DaskRunner) recomputes their upstream once, not 3 times."""

    def __init__(self, split: str, valid_fraction: float, test_fraction: float):
        self.split, self.valid_fraction, self.test_fraction = split, valid_fraction, test_fraction

    def create_accumulator(self):
        return ({}, Counter())

    def add_input(self, acc, tagged):
        tag, value = tagged
        if tag == "item":
            acc[0][value[0]] = value[1]
        elif tag == "items":  # {item: sides} of one item-hash bucket
            acc[0].update(value)
        elif tag == "ts":
            acc[1][value[0]] += value[1]
        elif tag == "ts_counts":  # a partition's Counter of page timestamps
            acc[1].update(value)
        return acc

    def merge_accumulators(self, accs):
        table, ts = {}, Counter()
        for t, c in accs:
            table.update(t)
            ts.update(c)
        return (table, ts)

    def extract_output(self, acc):
        from pipelines.stats import time_cutoffs

        from pipelines.itemtable import compact

        table, ts = acc
        table = compact(table)
        if self.split == "time":
            cutoffs = time_cutoffs(ts, self.valid_fraction, self.test_fraction)
        else:
            cutoffs = (float("inf"), float("inf"))
        return (table, table.universe(), cutoffs)


def page_timestamps(log: UserLog):
    return [ts for _, ts, _ in log.pages]


class MergeCounters(beam.CombineFn):
    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, c):
        acc.update(c)
        return acc

    def merge_accumulators(self, accs):
        out = Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return acc


class ItemSideFn(beam.CombineFn):
    """Per item: the most frequent non-empty category and seller (ties by smallest value)."""

    def create_accumulator(self):
        return (Counter(), Counter())

    def add_input(self, acc, cs):
        if cs[0]:
            acc[0][cs[0]] += 1
        if cs[1]:
            acc[1][cs[1]] += 1
        return acc

    def merge_accumulators(self, accs):
        cat, sel = Counter(), Counter()
        for c, s in accs:
            cat.update(c)
            sel.update(s)
        return (cat, sel)

    def extract_output(self, acc):
        pick = lambda c: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] if c else ""
        return (pick(acc[0]), pick(acc[1]))


class ItemSidesAcc:
    """:class:`ItemSideFn` accumulators of many items, ``{item: (category Counter, seller
    Counter)}``, filled from user logs (:func:`item_sides`) and split into item-hash buckets
    (:meth:`buckets`) whose tables are merged by :class:`MergeItemSides`."""

    def __init__(self):
        self.table: Dict[str, Tuple[Counter, Counter]] = {}

    def add_log(self, log: UserLog) -> None:
        table = self.table
        for item, (cat, sel) in item_sides(log):
            acc = table.get(item)
            if acc is None:
                acc = table[item] = (Counter(), Counter())
            if cat:
                acc[0][cat] += 1
            if sel:
                acc[1][sel] += 1

    def buckets(self, n: int):
        """``(bucket, {item: acc})`` of the non-empty buckets, bucket = a stable hash of the
        item id mod ``n``."""
        out: Dict[int, dict] = {}
        for item, acc in self.table.items():
            out.setdefault(item_bucket(item, n), {})[item] = acc
        return sorted(out.items())


def item_bucket(item: str, n: int) -> int:
    import zlib

    return zlib.crc32(item.encode("utf-8")) % n


class MergeItemSides(beam.CombineFn):
    """Tables of :class:`ItemSidesAcc` (one item-hash bucket of several partitions; or the
    paths of the files :func:`dump_value` wrote them to) -> the bucket's ``{item: (category, seller)}`` (:meth:`ItemSideFn.extract_output`)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, table):
        if isinstance(table, str):  # a table written by OrganizePartitionFn (partials_prefix)
            table = load_value(table)
        for item, (cat, sel) in table.items():
            mine = acc.get(item)
            if mine is None:
                acc[item] = (Counter(cat), Counter(sel))
            else:
                mine[0].update(cat)
                mine[1].update(sel)
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for a in accs:
            self.add_input(out, a)
        return out

    def extract_output(self, acc):
        pick = ItemSideFn().extract_output
        return {item: pick(a) for item, a in acc.items()}


def item_sides(log: UserLog) -> Iterable[Tuple[str, Tuple[str, str]]]:
    for r in log.history:
        yield r["item_id"], (r["category_id"], r["seller_id"])
    for _, _, prs in log.pages:
        for r in prs:
            yield r["item_id"], (r["category_id"], r["seller_id"])


def dead_letter_json(d: DeadLetter) -> str:
    return json.dumps(d.to_json(), sort_keys=True, default=str, ensure_ascii=False)
