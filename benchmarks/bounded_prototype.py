"""Prototype of the bounded-memory preprocessing graph (benchmarks only: it measures the effect
of the fix proposed in benchmarks/RESULTS_preprocess.md, section "Memory"; the job itself is
``pipelines.preprocess``). DirectRunner only (it uses tagged outputs and ``finish_bundle``
outputs, as the job did at commit 836eea9).

The same examples, dead letters, vocabularies and statistics as ``pipelines.preprocess`` at
836eea9, from a graph in which no per-row or per-example data crosses the runner:

* rows are grouped by user through files (:class:`pipelines.filegroup.SpillByKey`): only
  ``(partition, [spill paths])`` elements are shuffled;
* the per-user work runs twice over the spilled partitions: pass 1 organizes each user and emits
  only what the side inputs need (item sides, page timestamps: combiner inputs) and the dead
  letters; pass 2, ONE DoFn with the side inputs (:class:`BuildFromSpillFn`), reads each
  partition again, organizes and builds the examples. The organized logs are never
  materialized between stages (with a separate Organize step in pass 2, the FnApiRunner fuses
  it with pass 1, which reads the same partitions, and buffers its logs for the example
  building);
* the train split's hash order (``shuffled_by_hash``: hash bucket, then a second hash) goes
  through :class:`pipelines.filegroup.FileGroupByKey` keyed by the bucket, fused with the
  example building on one side and with the TFRecord writer on the other;
* each user's rows are capped (:mod:`pipelines.caps`, ``max_rows_per_user``; 0 = no cap).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections import Counter
from typing import Any, Dict

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from ctrcore.schema import SPEC_FILENAME, STATS_FILENAME, FeatureSpec
from pipelines import caps
from pipelines import filegroup as fg
from pipelines import preprocess as P
from pipelines import stats as stats_lib
from pipelines import transforms as T
from pipelines.canonical import canonicalize
from pipelines.examples import BuildConfig, UserExampleBuilder
from pipelines.pages import organize_user
from pipelines.sources.base import DeadLetter
from pipelines.vocab import vocab_lines, write_lines, write_text

DEAD, STATS, TOKENS = "dead", "stats", "tokens"
INF = float("inf")


def _global(v) -> WindowedValue:
    return WindowedValue(v, MIN_TIMESTAMP, [GlobalWindow()])


class CanonFn(beam.DoFn):
    def __init__(self, kwargs):
        self.kwargs = dict(kwargs)

    def process(self, raw):
        if isinstance(raw, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD, raw)
            return
        out = canonicalize(raw, **self.kwargs)
        if isinstance(out, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD, out)
        else:
            yield out["user_id"], out


class OrganizeFn(beam.DoFn):
    """(user, rows) -> UserLog; with ``emit_dead`` the cap's and the dedup's dead letters too."""

    def __init__(self, max_rows: int, emit_dead: bool):
        self.max_rows, self.emit_dead = max_rows, emit_dead

    def process(self, kv):
        user, rows = kv
        rows, cut = caps.cap_user_rows(user, rows, self.max_rows)
        log, dead = organize_user(user, rows)
        if self.emit_dead:
            for d in cut + dead:
                yield beam.pvalue.TaggedOutput(DEAD, d)
        yield log


class BuildFn(beam.DoFn):
    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg

    def setup(self):
        self.builder = UserExampleBuilder(self.cfg)

    def start_bundle(self):
        self.stats, self.tokens = Counter(), Counter()

    def process(self, log, item_table, universe, cutoffs):
        for split, ex in self.builder.build(log, item_table, universe, cutoffs, self.stats,
                                            self.tokens):
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


class BuildFromSpillFn(BuildFn):
    """Pass 2 in ONE DoFn: (partition, spill paths) -> read and group the partition's users,
    cap, organize, build. One DoFn, so the runner cannot split it into stages (a separate
    Organize step would be fused with pass 1, which reads the same partitions, and its logs
    materialized before the example building, which waits for the side inputs)."""

    def __init__(self, cfg: BuildConfig, max_rows: int, chunk_bytes: int):
        super().__init__(cfg)
        self.max_rows, self.chunk_bytes = max_rows, chunk_bytes

    def process(self, kv, item_table, universe, cutoffs):
        part, paths = kv
        for user, rows in fg.group_spilled(part, paths, chunk_bytes=self.chunk_bytes):
            rows, _ = caps.cap_user_rows(user, rows, self.max_rows)
            log, _ = organize_user(user, rows)
            yield from super().process(log, item_table, universe, cutoffs)


def build_pipeline(p, source, cfg: P.PreprocessConfig, tmp_prefix: str, partitions: int = 64,
                   chunk_bytes: int = 64 << 20, max_rows_per_user: int = 0) -> Dict[str, Any]:
    bcfg = P._build_config(source, cfg)
    spec = FeatureSpec.create(bcfg.spec_config())
    out = cfg.output_dir
    join = FileSystems.join

    raw = p | "Read" >> T.ReadSource(source)
    rows_read = raw | "CountRead" >> beam.combiners.Count.Globally()
    canon = raw | "Canonicalize" >> beam.ParDo(CanonFn(source.canonical_kwargs())).with_outputs(
        DEAD, main="rows")
    parts = canon.rows | "SpillUsers" >> fg.SpillByKey(tmp_prefix + "users", partitions, cfg.seed)

    first = (parts | "Pass1" >> fg.ReadSpilledGroups(chunk_bytes=chunk_bytes)
             | "Organize1" >> beam.ParDo(OrganizeFn(max_rows_per_user, True)).with_outputs(
                 DEAD, main="logs"))
    item_table = (first.logs | "ItemSides" >> beam.FlatMap(T.item_sides)
                  | "ItemTable" >> beam.CombinePerKey(T.ItemSideFn()))
    universe = (item_table | "ItemIds" >> beam.Keys() | "Universe" >> beam.combiners.ToList()
                | "SortUniverse" >> beam.Map(sorted))
    if bcfg.split == "time":
        cutoffs = (first.logs | "PageTs" >> beam.FlatMap(lambda lg: [ts for _, ts, _ in lg.pages])
                   | "CountTs" >> beam.combiners.Count.PerElement()
                   | "TsHistogram" >> beam.combiners.ToDict()
                   | "Cutoffs" >> beam.Map(stats_lib.time_cutoffs, cfg.valid_fraction,
                                           cfg.test_fraction))
    else:
        cutoffs = p | "NoCutoffs" >> beam.Create([(INF, INF)])

    built = parts | "Pass2BuildExamples" >> beam.ParDo(
        BuildFromSpillFn(bcfg, max_rows_per_user, chunk_bytes), beam.pvalue.AsDict(item_table),
        beam.pvalue.AsSingleton(universe), beam.pvalue.AsSingleton(cutoffs)).with_outputs(
            "valid", "test", STATS, TOKENS, main="train")
    train = built.train
    if cfg.shuffle_buckets > 0:
        buckets, seed, second = cfg.shuffle_buckets, cfg.seed, cfg.seed + 1

        def ungroup(kv):
            return sorted(kv[1], key=lambda r: (P.hash_bucket(r, 1 << 62, second), r))

        train = (train | "KeyByHash" >> beam.Map(lambda r: (P.hash_bucket(r, buckets, seed), r))
                 | "GroupByHash" >> fg.FileGroupByKey(tmp_prefix + "train", partitions,
                                                      chunk_bytes, cfg.seed)
                 | "UngroupSorted" >> beam.FlatMap(ungroup))
    for name, pc in {"train": train, "valid": built.valid, "test": built.test}.items():
        pc | f"Write_{name}" >> beam.io.WriteToTFRecord(
            join(out, name), file_name_suffix=".tfrecord.gz", num_shards=cfg.num_shards,
            compression_type=CompressionTypes.GZIP)

    dead = (canon[DEAD], first[DEAD]) | "AllDead" >> beam.Flatten()
    dead | "DeadJson" >> beam.Map(T.dead_letter_json) | "WriteDead" >> beam.io.WriteToText(
        join(out, "dead_letter"), file_name_suffix=".jsonl", num_shards=cfg.num_shards)
    reasons = (dead | "Reason" >> beam.Map(lambda d: d.reason)
               | "CountReasons" >> beam.combiners.Count.PerElement())

    min_freq = cfg.min_freq
    vocab_names = sorted(spec.vocabularies)
    vocab_paths = {v: join(out, *spec.vocabularies[v].split("/")) for v in vocab_names}

    def write_vocab(kv):
        name, counts = kv
        lines = vocab_lines([c for c in counts if c is not None], min_freq)
        write_lines(vocab_paths[name], lines)
        return name, len(lines)

    token_counts = (built[TOKENS] | "TokenItems" >> beam.FlatMap(lambda c: c.items())
                    | "SumTokens" >> beam.CombinePerKey(sum)
                    | "ByVocab" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))))
    all_names = p | "VocabNames" >> beam.Create([(v, None) for v in vocab_names])
    vocab_sizes = ((token_counts, all_names) | "VocabAll" >> beam.Flatten()
                   | "GroupVocab" >> beam.GroupByKey() | "WriteVocab" >> beam.Map(write_vocab))
    summary = built[STATS] | "MergeStats" >> beam.CombineGlobally(T.MergeCounters())
    config = dataclasses.asdict(cfg)
    config.update(user_profile=list(bcfg.user_profile), positives_only=bcfg.positives_only,
                  timestamp_format=getattr(source, "timestamp_format", "unix"),
                  max_rows_per_user=max_rows_per_user)

    def finish(_, rows_read, reasons, summary, vocab_sizes, cutoffs):
        st = stats_lib.assemble(
            rows_read=rows_read, dead_letter_reasons=reasons, summary=summary,
            vocab_sizes=vocab_sizes, cutoffs=cutoffs if bcfg.split == "time" else None,
            source=cfg.source_name or source.name, seed=cfg.seed, split=bcfg.split,
            config=config)
        write_text(join(out, STATS_FILENAME), json.dumps(st, indent=1, sort_keys=True))
        write_text(join(out, SPEC_FILENAME), json.dumps(spec.to_json(), indent=1, sort_keys=True))
        return st

    p | "Once" >> beam.Create([None]) | "Stats" >> beam.Map(
        finish, beam.pvalue.AsSingleton(rows_read), beam.pvalue.AsDict(reasons),
        beam.pvalue.AsSingleton(summary), beam.pvalue.AsDict(vocab_sizes),
        beam.pvalue.AsSingleton(cutoffs))
    return {"train": train}


def run(source, cfg: P.PreprocessConfig, beam_args=(), tmp_dir: str = "", **kw) -> dict:
    tmp_dir = tmp_dir or FileSystems.join(cfg.output_dir, "_tmp")
    FileSystems.mkdirs(tmp_dir) if not FileSystems.exists(tmp_dir) else None
    prefix = FileSystems.join(tmp_dir, uuid.uuid4().hex[:8] + "-")
    try:
        with beam.Pipeline(options=P.pipeline_options(beam_args)) as p:
            build_pipeline(p, source, cfg, prefix, **kw)
    finally:
        n = len(fg.cleanup(prefix + "users")) + len(fg.cleanup(prefix + "train"))
        logging.info("bounded prototype: %d spill files deleted", n)
        try:
            FileSystems.delete([tmp_dir])
        except Exception:  # noqa: BLE001
            pass
    with FileSystems.open(FileSystems.join(cfg.output_dir, STATS_FILENAME)) as fh:
        return json.loads(fh.read().decode("utf-8"))
