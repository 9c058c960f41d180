"""Beam building blocks of the preprocessing job (the pure logic lives in canonical, pages,
examples, negatives, stats, vocab)."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Dict, Iterable, Optional, Tuple

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


class ReadSource(beam.PTransform):
    """Source -> ONE PCollection of raw rows and DeadLetters, every file read in pieces in
    parallel (:mod:`pipelines.sources.fileio`): files are planned into shards (byte ranges of
    large uncompressed line files, Parquet row groups, whole compressed files), the newlines of
    every shard but a file's last are counted so each shard knows its first line number (a
    CoGroupByKey join, not a side input: runners that recompute side inputs, such as Beam's
    DaskRunner, would re-count for every bundle), and the shards are read after a reshuffle.
    No tagged outputs, so the transform runs unchanged on every runner."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def expand(self, p):
        files = list(self.source.files())
        if not files:
            raise FileNotFoundError(f"source {getattr(self.source, 'name', '?')!r}: no input files")
        source = self.source
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
                | "ReadShards" >> beam.FlatMap(lambda sb: source.read_shard(*sb)))


def _needs_line_count(shard) -> bool:
    return shard.fmt in LINE_FORMATS and not shard.last


def _shard_with_base(kv):
    joined = kv[1]
    for shard in joined["shard"]:
        yield shard, next(iter(joined["base"]), 0)


class CanonicalizeFn(beam.DoFn):
    """Raw rows -> ``(ROWS, (user_id, canonical row))`` and ``(DEAD, DeadLetter)`` pairs in ONE
    output (the source's own DeadLetters pass straight through as ``(DEAD, d)``); split them
    with :func:`select`. No tagged outputs: Beam's DaskRunner puts every tagged output of a
    multi-output ParDo in one bag that every consumer reads."""

    def __init__(self, canonical_kwargs: Dict[str, Any]):
        """``canonical_kwargs``: keyword arguments of :func:`canonicalize` (the source's
        ``canonical_kwargs()``)."""
        self.kwargs = dict(canonical_kwargs)

    def process(self, raw):
        if isinstance(raw, DeadLetter):
            return ((DEAD, raw),)
        out = canonicalize(raw, **self.kwargs)
        if isinstance(out, DeadLetter):
            return ((DEAD, out),)
        return ((ROWS, (out["user_id"], out)),)


class OrganizeUserFn(beam.DoFn):
    """(user_id, rows) -> ``(LOGS, UserLog)`` and ``(DEAD, DeadLetter)`` pairs (rows over the
    per-user cap, :mod:`pipelines.caps`, then duplicates) in one output; split them with
    :func:`select`."""

    def __init__(self, max_rows_per_user: int = 0):
        self.max_rows = max_rows_per_user

    def process(self, kv):
        user_id, rows = kv
        if self.max_rows:
            cap = UserRowCap(user_id, self.max_rows)
            for r in rows:
                cut = cap.add(r)
                if cut is not None:
                    yield DEAD, cut
            rows = cap.kept()
        log, dead = organize_user(user_id, rows)
        for d in dead:
            yield DEAD, d
        yield LOGS, log


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
        item_table, universe, cutoffs = ctx
        stats: Counter = Counter()
        tokens: Counter = Counter()
        out = ([], [], [])
        for split, ex in self.builder.build(log, item_table, universe, cutoffs, stats, tokens):
            out[SPLIT_FIELD[split]].append(ex)
        yield out + (stats, tokens)


def user_examples(built, field: int):
    """FlatMap function: the examples of one split of a :class:`BuildExamplesFn` output."""
    return built[field]


def user_field(built, field: int):
    """Map function: one field of a :class:`BuildExamplesFn` output."""
    return built[field]


class ContextFn(beam.CombineFn):
    """What every user's example building needs from the whole log, as ONE value
    ``(item_table, universe, cutoffs)``: ``item_table`` {item: (category, seller)} from
    ``("item", (item, sides))`` inputs, ``universe`` its sorted item ids (negative sampling),
    ``cutoffs`` the time-split cutoffs from ``("ts", (page timestamp, pages))`` inputs
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
        elif tag == "ts":
            acc[1][value[0]] += value[1]
        return acc

    def merge_accumulators(self, accs):
        table, ts = {}, Counter()
        for t, c in accs:
            table.update(t)
            ts.update(c)
        return (table, ts)

    def extract_output(self, acc):
        from pipelines.stats import time_cutoffs

        table, ts = acc
        if self.split == "time":
            cutoffs = time_cutoffs(ts, self.valid_fraction, self.test_fraction)
        else:
            cutoffs = (float("inf"), float("inf"))
        return (table, sorted(table), cutoffs)


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


def item_sides(log: UserLog) -> Iterable[Tuple[str, Tuple[str, str]]]:
    for r in log.history:
        yield r["item_id"], (r["category_id"], r["seller_id"])
    for _, _, prs in log.pages:
        for r in prs:
            yield r["item_id"], (r["category_id"], r["seller_id"])


def dead_letter_json(d: DeadLetter) -> str:
    return json.dumps(d.to_json(), sort_keys=True, default=str, ensure_ascii=False)
