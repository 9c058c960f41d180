"""Beam building blocks of the preprocessing job (the pure logic lives in canonical, pages,
examples, negatives, stats, vocab)."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Dict, Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.canonical import canonicalize
from pipelines.examples import BuildConfig, UserExampleBuilder
from pipelines.pages import UserLog, organize_user
from pipelines.sources.base import DeadLetter

DEAD = "dead"
STATS = "stats"
TOKENS = "tokens"


def _global(v) -> WindowedValue:
    return WindowedValue(v, MIN_TIMESTAMP, [GlobalWindow()])


class ReadSource(beam.PTransform):
    """Source -> PCollection of raw rows and DeadLetters; one ``read_file`` per input file, with a
    reshuffle in between so files are read in parallel on distributed runners."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def expand(self, p):
        files = list(self.source.files())
        if not files:
            raise FileNotFoundError(f"source {getattr(self.source, 'name', '?')!r}: no input files")
        source = self.source
        return (p | "Files" >> beam.Create(files)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadFile" >> beam.FlatMap(lambda path: source.read_file(path)))


class CanonicalizeFn(beam.DoFn):
    """Raw rows -> canonical rows (main output) and DeadLetters (tag ``dead``); the source's own
    DeadLetters pass straight to ``dead``."""

    def __init__(self, canonical_kwargs: Dict[str, Any]):
        """``canonical_kwargs``: keyword arguments of :func:`canonicalize` (the source's
        ``canonical_kwargs()``)."""
        self.kwargs = dict(canonical_kwargs)

    def process(self, raw):
        if isinstance(raw, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD, raw)
            return
        out = canonicalize(raw, **self.kwargs)
        if isinstance(out, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD, out)
        else:
            yield out


class OrganizeUserFn(beam.DoFn):
    """(user_id, rows) -> UserLog (main) + duplicate_exposure DeadLetters (tag ``dead``)."""

    def process(self, kv):
        user_id, rows = kv
        log, dead = organize_user(user_id, rows)
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)
        yield log


class BuildExamplesFn(beam.DoFn):
    """UserLog -> serialized examples, tagged by split (main output = train). Statistics and
    train vocabulary counts are pre-aggregated per bundle and emitted in ``finish_bundle``
    (tags ``stats`` and ``tokens``), so the per-example cost stays in the encoder."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self):
        self.builder = UserExampleBuilder(self.cfg)

    def start_bundle(self):
        self.stats: Counter = Counter()
        self.tokens: Counter = Counter()

    def process(self, log: UserLog, item_table, universe, cutoffs):
        for split, ex in self.builder.build(log, item_table, universe, cutoffs,
                                            self.stats, self.tokens):
            if split == "train":
                yield ex
            else:
                yield beam.pvalue.TaggedOutput(split, ex)

    def finish_bundle(self):
        if self.stats:
            yield beam.pvalue.TaggedOutput(STATS, _global(self.stats))
        if self.tokens:
            yield beam.pvalue.TaggedOutput(TOKENS, _global(self.tokens))
        self.stats, self.tokens = Counter(), Counter()


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
