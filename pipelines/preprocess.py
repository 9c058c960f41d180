"""The Beam preprocessing job: canonical exposure logs -> training examples.

    python -m pipelines.preprocess --source=NAME --input=PATH [--mapping=FILE.json] \\
        --output_dir=OUT [--short_len=20 --long_len=100 --max_context=20 --min_freq=1 \\
        --negatives_per_positive=1 --seed=0 --valid_fraction=0.1 --test_fraction=0.1 \\
        --num_shards=0] [any Beam pipeline option, e.g. --runner=DataflowRunner --project=P \\
        --region=R --temp_location=gs://B/tmp | --runner=FlinkRunner --flink_master=H:P | \\
        --direct_num_workers=2 --direct_running_mode=multi_processing | --runner=DaskRunner \\
        [--dask_client_address=HOST:8786]]

Our flags are absl flags; every other ``--xxx`` argument goes to Beam's PipelineOptions
unchanged. The runner defaults to DirectRunner (named explicitly: Beam's default would try to
download the Prism runner); ``--runner=DaskRunner`` is Beam's DaskRunner on a ``dask.distributed``
cluster (``--dask_client_address``; without it Beam starts a local cluster). All I/O goes through
Beam FileSystems, so OUT may be gs:// or hdfs://.

Outputs:
  OUT/{train,valid,test}-SSSSS-of-NNNNN.tfrecord.gz  GZIP tf.train.Example per feature_spec.json
  OUT/feature_spec.json                              ctrcore.schema.FeatureSpec
  OUT/vocab/<name>.txt                               train-split vocabularies (min_freq)
  OUT/stats.json                                     see pipelines/stats.py
  OUT/dead_letter-SSSSS-of-NNNNN.jsonl               {reason, detail, origin, raw} per bad row

Graph (see docs in pipelines/examples.py for the example semantics; every fan-out is one
output of (tag, value) pairs split by FlatMaps, never a multi-output ParDo)::

  read shards + canonicalize --(dead, d)--> -------------------------------------------+
      | (rows, (user, row)) -> spill files by hash(user) % --user_partitions            |
      | (only (partition, [file names]) are grouped; --user_grouping=shuffle: GroupByKey) |
  pass 1, per partition: organize each user (cap, dedup, pages) --(dead, d)--> -------> dead letters -> files
      | (logs, UserLog) --> the partition's item-side tables (one file per item-hash bucket)
      |                     + page-timestamp histogram -> ONE context value
      |                      (item table, item universe, time cutoffs) -> ONE file
  pass 2, per partition (joined with the context file's name): organize again and build
      |-- train / valid / test examples -> spilled by the builder into the sinks' spill
      |                                    files -> (shard, name) -> sharded GZIP TFRecord files
      |-- the partition's stats Counter -> summed -+
      '-- the partition's token Counter -> summed -> vocab files -> sizes -+
  (--user_grouping=shuffle: ONE tuple per user, its examples spilled by WriteShards, its
  Counters summed by lifted combiners)
  rows read, dead-letter reasons, cutoffs, file paths of every sink -+-> Stats: stats.json,
                                                                         feature_spec.json,
                                                                         spill files deleted
The last transform (Stats) consumes a piece of every sink as its main input, so a runner that
computes only the last transform's graph (Beam 2.77's DaskRunner) still runs every sink.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import sys
import uuid
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from ctrcore.schema import SPEC_FILENAME, STATS_FILENAME, FeatureSpec
from pipelines import filegroup
from pipelines import stats as stats_lib
from pipelines import transforms as T
from pipelines.caps import DEFAULT_MAX_ROWS_PER_USER, check_max_rows
from pipelines.examples import CONTEXT_SAMPLINGS, BuildConfig
from pipelines.sources.fileio import split_for_min_shards
from pipelines.sinks import (TEXT, TFRECORD, MergeSpills, WriteShards, delete_orphan_spills,  # noqa: F401
                             delete_stale_shards, hash_bucket)
from pipelines.vocab import vocab_lines, write_lines, write_text



@dataclasses.dataclass
class PreprocessConfig:
    output_dir: str
    short_len: int = 20
    long_len: int = 100
    max_context: int = 20
    context_sampling: str = "stratified"  # pipelines.examples.CONTEXT_SAMPLINGS
    min_freq: int = 1
    negatives_per_positive: int = 1
    seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    num_shards: int = 0  # files per split and for the dead letters; 0 = auto (AUTO_SHARDS)
    shuffle_buckets: int = 4096  # > 0: train split in a seeded hash order; 0: the builder's
    read_split_mb: float = 64.0  # byte range of one read shard of an uncompressed line file
    read_min_shards: int = -1  # cut line files smaller to give this many shards (-1 = auto)
    spill_chunk_mb: float = 256.0  # most bytes of records a writer holds in memory
    max_rows_per_user: int = DEFAULT_MAX_ROWS_PER_USER  # 0 = no cap (pipelines/caps.py)
    user_grouping: str = "auto"  # see resolve_user_grouping
    user_partitions: int = filegroup.DEFAULT_PARTITIONS  # spill partitions ("files" grouping)
    source_name: str = ""
    input: str = ""


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _build_config(source, cfg: PreprocessConfig) -> BuildConfig:
    split = getattr(source, "split", "time")
    if split not in ("time", "leave_last_out"):
        raise ValueError(f"source {source.name!r}: unknown split {split!r}")
    for name in ("short_len", "long_len", "max_context", "min_freq"):
        if getattr(cfg, name) < (0 if name == "min_freq" else 1):
            raise ValueError(f"--{name}={getattr(cfg, name)} must be positive")
    if cfg.context_sampling not in CONTEXT_SAMPLINGS:
        raise ValueError(f"--context_sampling={cfg.context_sampling!r}: one of "
                         f"{list(CONTEXT_SAMPLINGS)}")
    if cfg.negatives_per_positive < 0:
        raise ValueError("--negatives_per_positive must be >= 0")
    if cfg.shuffle_buckets < 0:
        raise ValueError(f"--shuffle_buckets={cfg.shuffle_buckets} must be >= 0 (0 = no reordering)")
    check_max_rows(cfg.max_rows_per_user)
    if cfg.user_grouping not in USER_GROUPINGS:
        raise ValueError(f"--user_grouping={cfg.user_grouping!r}: one of {list(USER_GROUPINGS)}")
    if cfg.user_partitions < 1:
        raise ValueError(f"--user_partitions={cfg.user_partitions} must be >= 1")
    if cfg.read_min_shards < -1:
        raise ValueError(f"--read_min_shards={cfg.read_min_shards} must be >= -1 (-1 = auto)")
    for name in ("read_split_mb", "spill_chunk_mb"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"--{name}={getattr(cfg, name)} must be > 0")
    return BuildConfig(short_len=cfg.short_len, long_len=cfg.long_len,
                       max_context=cfg.max_context, context_sampling=cfg.context_sampling,
                       user_profile=tuple(getattr(source, "user_profile", ()) or ()),
                       seed=cfg.seed, negatives_per_positive=cfg.negatives_per_positive,
                       positives_only=bool(getattr(source, "positives_only", False)), split=split)


def build_pipeline(p: beam.Pipeline, source, cfg: PreprocessConfig) -> Dict[str, Any]:
    """Add the job to pipeline ``p``. Returns the main PCollections by name (``train``,
    ``valid``, ``test``: serialized examples with the shuffle grouping, None with files, whose
    builder spills them itself; ``dead_letters``; ``stats``: the stats dict;
    ``vocab_sizes``; ``user_logs``: the users' logs with the shuffle grouping, None with files).

    Runs the same on every runner, Beam 2.77's DaskRunner included (see
    ``tests/test_dask_runner.py``), because the graph keeps to what that runner executes
    correctly: no multi-output ParDo (``with_outputs``) or ``Partition`` (it merges tagged
    outputs into one bag): one output of ``(tag, value)`` pairs split by :func:`T.select`;
    nothing emitted from ``finish_bundle`` (it drops those outputs): counters are summed by
    combiners; and the LAST transform applied, ``Stats``, consumes (as its main input, not a
    side input) a piece of every sink (the file paths each writer returns, the vocabulary
    sizes) and of every statistic: the DaskRunner computes only the last transform's graph.
    Apply nothing after ``build_pipeline`` in a pipeline meant for the DaskRunner."""
    bcfg = _build_config(source, cfg)
    spec = FeatureSpec.create(bcfg.spec_config())
    out = cfg.output_dir
    source_name = cfg.source_name or getattr(source, "name", "?")
    shards = resolve_num_shards(cfg.num_shards)

    if hasattr(source, "split_bytes"):
        source.split_bytes = read_split_bytes(source, cfg, p.options)
    grouping = resolve_user_grouping(cfg.user_grouping, p.options)
    chunk = int(cfg.spill_chunk_mb * (1 << 20))
    # the rows are canonicalized (and, grouped through files, spilled) inside the reading step:
    # no collection of raw rows (T.ReadShardsFn)
    then = [T.CanonicalizeFn(source.canonical_kwargs())]
    spill_prefix = temp_prefix(p.options, out) if grouping == "files" else ""
    if grouping == "files":
        # (the rows' one consumer; dead letters and shard counts pass through it)
        then.append(T.SpillRowsFn(spill_prefix + "users", cfg.user_partitions, cfg.seed))
    canon = p | "Read" >> T.ReadSource(source, plan_at_build=is_dask(p.options),
                                       with_counts=True, then=then)
    if grouping == "files":
        # users grouped through spill files (pipelines/filegroup.py): only the files' names
        # cross the runner; the per-user work runs twice over them (pass 1 here: combiner
        # inputs and dead letters; pass 2 below: the examples), no UserLog is held between
        # stages
        parts = (canon | "SpilledParts" >> beam.FlatMap(T.select, T.SPILLED)
                 | "GroupPaths" >> beam.GroupByKey())
        organized = parts | "Organize" >> beam.ParDo(T.OrganizePartitionFn(
            cfg.max_rows_per_user, chunk, partials_prefix=spill_prefix + "items-"))
        # what every user's examples need from the whole log (the item table: most frequent
        # sides per item, the item universe, the time-split cutoffs) from each partition's
        # partial sums: a few elements per partition, whether or not the runner lifts
        # combiners (Beam's DaskRunner does not: one element per row would be gathered)
        partials = organized | "Partials" >> beam.FlatMap(T.select, T.PARTIAL)
        items = (partials | "ItemSideParts" >> beam.FlatMap(T.select, "item_sides")
                 | "ItemTable" >> beam.CombinePerKey(T.MergeItemSides())
                 | "TagItems" >> beam.Map(lambda kv: ("items", kv[1])))
        page_ts = (partials | "PageTsParts" >> beam.FlatMap(T.select, "ts")
                   | "TagTs" >> beam.Map(lambda c: ("ts_counts", c)))
        logs = None
    else:
        keyed = canon | "KeyedRows" >> beam.FlatMap(T.select, T.ROWS)  # (user_id, row)
        organized = (keyed
                     | "GroupByUser" >> beam.GroupByKey()
                     | "Organize" >> beam.ParDo(T.OrganizeUserFn(cfg.max_rows_per_user)))
        logs = organized | "Logs" >> beam.FlatMap(T.select, T.LOGS)
        # the same per item and per page, summed by the runner's (lifted) combiners
        items = (logs | "ItemSides" >> beam.FlatMap(T.item_sides)
                 | "ItemTable" >> beam.CombinePerKey(T.ItemSideFn())
                 | "TagItems" >> beam.Map(lambda kv: ("item", kv)))
        page_ts = (logs | "PageTs" >> beam.FlatMap(T.page_timestamps)
                   | "CountTs" >> beam.combiners.Count.PerElement()
                   | "TagTs" >> beam.Map(lambda kv: ("ts", kv)))

    # ONE context value (T.ContextFn)
    ctx_parts = [items, p | "CtxOnce" >> beam.Create([("once", None)])]
    if bcfg.split == "time":
        ctx_parts.append(page_ts)
    ctx = (ctx_parts | "CtxParts" >> beam.Flatten()
           | "Context" >> beam.CombineGlobally(T.ContextFn(
               bcfg.split, cfg.valid_fraction, cfg.test_fraction)).without_defaults())

    # every split written in a seeded hash order (the builder emits a user's examples together:
    # a streamed reader with a shuffle buffer would train on batches of a few hundred users),
    # the train split in the builder's order with --shuffle_buckets=0; no record is held in
    # memory beyond one --spill_chunk_mb chunk (pipelines/sinks.py)
    sinks = {name: (_join(out, name), ".tfrecord.gz") for name in T.SPLIT_FIELD}  # name -> (prefix, suffix)
    orders = {name: "made" if name == "train" and cfg.shuffle_buckets == 0 else "hash"
              for name in T.SPLIT_FIELD}
    written = {}  # sink name -> PCollection of the paths written
    if grouping == "files":
        # the context goes to ONE file, whose name is joined to every partition (no side
        # input: Beam's DaskRunner recomputes a side input's upstream in every reading task)
        n_parts, ctx_path = cfg.user_partitions, spill_prefix + "context.pickle"
        ctx_names = (ctx | "WriteContext" >> beam.Map(T.write_context, ctx_path)
                     | "ContextForEachPart" >> beam.FlatMap(
                         lambda path: [(i, path) for i in range(n_parts)]))
        # the builder spills its examples into the sinks' spill files itself: only the
        # files' names and one sum per partition leave it
        built = ({"spill": parts, "ctx": ctx_names}
                 | "JoinContext" >> beam.CoGroupByKey()
                 | "BuildExamples" >> beam.ParDo(T.BuildPartitionFn(
                     bcfg, {name: (sinks[name][0], shards[name], cfg.seed + 2) for name in sinks},
                     cfg.max_rows_per_user, chunk)))
        spilled = built | "SpilledExamples" >> beam.FlatMap(T.select, T.EXAMPLES)
        for name in T.SPLIT_FIELD:
            written[name] = (spilled | f"Spilled_{name}" >> beam.FlatMap(
                lambda v, n=name: (v[1],) if v[0] == n else ())
                | f"Write_{name}" >> MergeSpills(
                    *sinks[name], num_shards=shards[name], fmt=TFRECORD, seed=cfg.seed + 2,
                    order=orders[name], chunk_bytes=chunk))
        splits = {name: None for name in T.SPLIT_FIELD}
        sums = built | "BuiltSums" >> beam.FlatMap(T.select, T.SUMS)
        user_sums = {T.OUT_STATS: sums | "Stats_of" >> beam.Map(lambda st: st[0]),
                     T.OUT_TOKENS: sums | "Tokens_of" >> beam.Map(lambda st: st[1])}
    else:
        built = logs | "BuildExamples" >> beam.ParDo(T.BuildExamplesFn(bcfg),
                                                     beam.pvalue.AsSingleton(ctx))
        splits = {name: built | f"Examples_{name}" >> beam.FlatMap(T.user_examples, field)
                  for name, field in T.SPLIT_FIELD.items()}
        for name, pc in splits.items():
            written[name] = pc | f"Write_{name}" >> WriteShards(
                *sinks[name], num_shards=shards[name], fmt=TFRECORD, seed=cfg.seed + 2,
                order=orders[name], chunk_bytes=chunk)
        # straight from the builder's output (no Flatten in between), so the runner lifts the
        # combines into the building stage and only per-bundle partial sums leave it: behind a
        # Flatten, the DirectRunner held every user's Counters in the launcher (measured:
        # 2.7 GB at 10M rows)
        user_sums = {field: built | f"User_{label}" >> beam.Map(T.user_field, field)
                     for field, label in ((T.OUT_STATS, "stats"), (T.OUT_TOKENS, "tokens"))}

    # dead letters
    dead = ((canon | "CanonDead" >> beam.FlatMap(T.select, T.DEAD),
             organized | "OrganizeDead" >> beam.FlatMap(T.select, T.DEAD))
            | "AllDead" >> beam.Flatten())
    sinks["dead_letter"] = (_join(out, "dead_letter"), ".jsonl")
    written["dead_letter"] = (dead | "DeadJson" >> beam.Map(T.dead_letter_json)
                              | "Write_dead_letter" >> WriteShards(
                                  *sinks["dead_letter"], num_shards=shards["dead_letter"],
                                  fmt=TEXT, seed=cfg.seed + 2, order="sorted",
                                  chunk_bytes=chunk))
    reasons = (dead | "Reason" >> beam.Map(lambda d: d.reason)
               | "CountReasons" >> beam.combiners.Count.PerElement())

    # vocabularies from the train split: one token Counter per user, summed
    min_freq = cfg.min_freq
    vocab_names = sorted(spec.vocabularies)
    vocab_paths = {v: _join(out, *spec.vocabularies[v].split("/")) for v in vocab_names}

    def by_vocab(tokens):
        per = {v: [] for v in vocab_names}
        for (name, tok), n in tokens.items():
            if name not in per:
                raise KeyError(f"vocabulary {name!r} not in the feature spec {vocab_names}")
            per[name].append((tok, n))
        return sorted(per.items())

    def write_vocab(kv):
        name, counts = kv
        lines = vocab_lines(counts, min_freq)
        write_lines(vocab_paths[name], lines)
        return name, len(lines)

    def summed(field, label):
        """The Counters of one field (every user's, or every partition's), summed; nothing on
        an empty log (``finish`` then writes the empty vocabularies)."""
        return (user_sums[field]
                | f"Sum_{label}" >> beam.CombineGlobally(T.MergeCounters()).without_defaults())

    vocab_sizes = (summed(T.OUT_TOKENS, "tokens")
                   | "ByVocab" >> beam.FlatMap(by_vocab)
                   | "SpreadVocab" >> beam.Reshuffle()
                   | "WriteVocab" >> beam.Map(write_vocab))
    summary = summed(T.OUT_STATS, "stats")
    # rows read: summed from the per-shard counts of ReadSource (with_counts), not counted
    # row by row (a runner that does not lift combiners would gather every row)
    rows_read = (canon | "ReadCounts" >> beam.FlatMap(T.select, T.READ)
                 | "CountRead" >> beam.CombineGlobally(sum).without_defaults())

    config = dataclasses.asdict(cfg)
    config.update(user_profile=list(bcfg.user_profile), positives_only=bcfg.positives_only,
                  timestamp_format=getattr(source, "timestamp_format", "unix"))

    def vocab_sizes_of(written):
        """Sizes of the vocabularies written; a vocabulary with no token (an empty log: the
        token sum never ran) is written here, empty."""
        sizes = dict(written)
        for name in vocab_names:
            if name not in sizes:
                write_lines(vocab_paths[name], [])
                sizes[name] = 0
        return sizes

    def finish(kv):
        got = collections.defaultdict(list)
        for tag, value in kv[1]:
            got[tag].append(value)
        st = stats_lib.assemble(
            rows_read=sum(got["rows_read"]), dead_letter_reasons=dict(got["reason"]),
            summary=T.MergeCounters().merge_accumulators(got["summary"]),
            vocab_sizes=vocab_sizes_of(got["vocab"]),
            cutoffs=got["cutoffs"][0] if bcfg.split == "time" else None,
            source=source_name, seed=cfg.seed, split=bcfg.split, config=config)
        files = collections.defaultdict(list)
        for name, path in got["file"]:
            files[name].append(path)
        for name, (prefix, suffix) in sorted(sinks.items()):
            if len(files[name]) != shards[name]:
                raise RuntimeError(f"sink {name}: {len(files[name])} files written, "
                                   f"expected {shards[name]}")
            delete_stale_shards(prefix, suffix, files[name])
            delete_orphan_spills(prefix)
        if spill_prefix:  # every sink is complete: pass 2 has read the spill files
            delete_temp(spill_prefix)
        write_text(_join(out, STATS_FILENAME), json.dumps(st, indent=1, sort_keys=True))
        write_text(_join(out, SPEC_FILENAME), json.dumps(spec.to_json(), indent=1, sort_keys=True))
        logging.info("preprocess: %s", json.dumps({k: st[k] for k in (
            "rows_read", "rows_used", "rows_dead_letter", "examples")}))
        return st

    def tag(label, t):
        return f"Tag_{label}" >> beam.Map(lambda v: (t, v))

    pieces = [
        rows_read | tag("rows_read", "rows_read"),
        reasons | tag("reasons", "reason"),
        summary | tag("summary", "summary"),
        vocab_sizes | tag("vocab", "vocab"),
        ctx | "Tag_cutoffs" >> beam.Map(lambda c: ("cutoffs", c[2])),
        p | "StatsOnce" >> beam.Create([("once", None)]),
    ]
    for name, pc in written.items():
        pieces.append(pc | f"Tag_files_{name}" >> beam.Map(lambda path, n=name: ("file", (n, path))))
    # the last transform: every sink and statistic is upstream of its main input
    stats = (pieces | "AllPieces" >> beam.Flatten()
             | "OneKey" >> beam.Map(lambda v: (None, v))
             | "GatherPieces" >> beam.GroupByKey()
             | "Stats" >> beam.Map(finish))
    return {"train": splits["train"], "valid": splits["valid"], "test": splits["test"],
            "dead_letters": dead, "stats": stats, "vocab_sizes": vocab_sizes, "user_logs": logs,
            "spill_prefix": spill_prefix}


#: --user_grouping values; "auto" = "files" on the runners whose shuffle is held in memory
USER_GROUPINGS = ("auto", "files", "shuffle")
_MEMORY_SHUFFLE_RUNNERS = ("", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner",
                           "FnApiRunner", "DaskRunner")


def resolve_user_grouping(grouping: str, options: PipelineOptions) -> str:
    """How rows are grouped by user: "files" (:mod:`pipelines.filegroup`: through spill files,
    only file names shuffled: for runners that shuffle in memory, the DirectRunner and Beam's
    DaskRunner) or "shuffle" (the runner's ``GroupByKey``: Dataflow, Flink and Spark shuffle
    through disk themselves, and would get many small spill files per bundle)."""
    if grouping not in USER_GROUPINGS:
        raise ValueError(f"--user_grouping={grouping!r}: one of {list(USER_GROUPINGS)}")
    if grouping != "auto":
        return grouping
    runner = options.view_as(StandardOptions).runner or ""
    return "files" if runner.split(".")[-1] in _MEMORY_SHUFFLE_RUNNERS else "shuffle"


def temp_prefix(options: PipelineOptions, output_dir: str) -> str:
    """A fresh prefix for the job's spill files: under Beam's ``--temp_location`` when set,
    else ``OUTPUT/_tmp/``."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    root = options.view_as(GoogleCloudOptions).temp_location or _join(output_dir, TEMP_DIR)
    return _join(root, f"preprocess-{uuid.uuid4().hex[:12]}-")


TEMP_DIR = "_tmp"


def delete_temp(spill_prefix: str) -> None:
    """Delete the job's spill files (and the OUTPUT/_tmp directory when it is left empty)."""
    from pipelines.spillfiles import delete_matching

    filegroup.cleanup(spill_prefix + "users")
    delete_matching([spill_prefix + "*"])
    parent = spill_prefix.rsplit("/", 1)[0]
    if parent.endswith("/" + TEMP_DIR) or parent == TEMP_DIR:
        try:
            if not FileSystems.match([parent + "/*"])[0].metadata_list:
                FileSystems.delete([parent])
        except Exception:  # noqa: BLE001 - another job's files, or no directories here
            pass


#: sinks and their shard count when --num_shards=0 (auto)
AUTO_SHARDS = {"train": 1, "valid": 1, "test": 1, "dead_letter": 1}


def resolve_num_shards(num_shards: int) -> Dict[str, int]:
    """Files per sink: ``num_shards`` for every sink, or :data:`AUTO_SHARDS` when 0."""
    if num_shards < 0:
        raise ValueError(f"--num_shards={num_shards} must be >= 0 (0 = auto)")
    return {k: (num_shards or v) for k, v in AUTO_SHARDS.items()}


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _runner_args(beam_args: Sequence[str]) -> List[str]:
    """``--runner=DaskRunner`` (or ``--runner DaskRunner``; any case) -> Beam's dotted path:
    Beam 2.77 refuses the bare name ("Unexpected pipeline runner")."""
    args, i = [], 0
    beam_args = list(beam_args)
    while i < len(beam_args):
        a = beam_args[i]
        if a.startswith("--runner=") and a.split("=", 1)[1].lower() in ("daskrunner", "dask"):
            a = f"--runner={DASK_RUNNER}"
        elif a == "--runner" and i + 1 < len(beam_args) and \
                beam_args[i + 1].lower() in ("daskrunner", "dask"):
            args.append(a)
            args.append(DASK_RUNNER)
            i += 2
            continue
        args.append(a)
        i += 1
    return args


#: ``--read_min_shards`` auto on the DaskRunner: it runs one task per planned read shard, and
#: every later step keeps the read's partitions, so a one-file log needs several shards
DASK_MIN_READ_SHARDS = 16
#: the largest read shard on the DaskRunner: a Dask task holds its whole partition, and each
#: step's output of it, as Python objects (a 40 MB shard of a 10M-row log held ~7 GB per
#: worker: benchmarks/RESULTS_preprocess.md), so shards stay small there
DASK_MAX_SPLIT_MB = 8.0


def read_split_bytes(source, cfg: PreprocessConfig, opts: PipelineOptions) -> int:
    """The byte range the source cuts its uncompressed line files into: ``--read_split_mb``
    (at most :data:`DASK_MAX_SPLIT_MB` on the DaskRunner), made smaller (down to ``fileio.MIN_SPLIT_BYTES``) when the input would give fewer than
    ``--read_min_shards`` shards (auto: :data:`DASK_MIN_READ_SHARDS` on the DaskRunner, 1
    elsewhere, where the files are planned by the workers and read after a reshuffle)."""
    dask = is_dask(opts)
    split = int((min(cfg.read_split_mb, DASK_MAX_SPLIT_MB) if dask else cfg.read_split_mb)
                * (1 << 20))
    min_shards = cfg.read_min_shards
    if min_shards < 0:
        min_shards = DASK_MIN_READ_SHARDS if dask else 1
    if min_shards > 1 and hasattr(source, "splittable_bytes"):
        split = split_for_min_shards(source.splittable_bytes(), split, min_shards)
    return split


def is_dask(opts: PipelineOptions) -> bool:
    runner = opts.view_as(StandardOptions).runner or ""
    return runner == DASK_RUNNER or runner.split(".")[-1] == "DaskRunner"


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the pass-through args; DirectRunner unless a runner is named;
    ``--runner=DaskRunner`` maps to Beam's DaskRunner class (``apache-beam[dask]``)."""
    args = _runner_args(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
    opts = PipelineOptions(args)
    if is_dask(opts):
        try:  # registers DaskOptions (--dask_client_address, --dask_npartitions, ...)
            import apache_beam.runners.dask.dask_runner  # noqa: F401
            import distributed  # noqa: F401
        except ImportError as e:
            raise SystemExit(f"--runner=DaskRunner needs apache-beam[dask] (dask, distributed): {e}")
        if not any(a.split("=", 1)[0] in ("--dask_npartitions", "--dask_partition_size")
                   for a in args):
            # one Create element per partition: the read shards (planned at graph build) become
            # that many tasks, and every later step keeps that parallelism (Beam's default puts
            # up to 128 elements in one partition: one worker did the whole job)
            opts = PipelineOptions(args + ["--dask_partition_size=1"])
    return opts


def run(source, cfg: PreprocessConfig, beam_args: Sequence[str] = ()) -> dict:
    """Run the job to completion; returns the stats dict (read back from OUT/stats.json).

    ``with beam.Pipeline`` runs the job and calls the result's ``wait_until_finish``, which on
    the DaskRunner gathers every task's result and so raises a worker's error here. The Dask
    client the DaskRunner opened (and the local cluster it started when no
    ``--dask_client_address`` was given) is closed afterwards."""
    opts = pipeline_options(beam_args)
    p = beam.Pipeline(options=opts)
    outputs: Dict[str, Any] = {}
    try:
        with p:
            outputs = build_pipeline(p, source, cfg)
    finally:
        if outputs.get("spill_prefix"):  # after a failure; a no-op after success
            delete_temp(outputs["spill_prefix"])
        client = getattr(getattr(p, "result", None), "client", None)
        if client is not None:
            client.close()
    with FileSystems.open(_join(cfg.output_dir, STATS_FILENAME)) as fh:
        return json.loads(fh.read().decode("utf-8"))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
_FLAGS = None


def _define_flags():
    """Our flags live in their own FlagValues, so importing this module beside another absl
    program (the trainer, a test process) never collides on names such as --seed."""
    global _FLAGS
    from absl import flags

    if _FLAGS is not None:
        return _FLAGS
    fv = flags.FlagValues()
    d = dict(flag_values=fv)
    flags.DEFINE_string("source", None, "source name (pipelines.sources.get_source)", **d)
    flags.DEFINE_string("input", None, "input path or glob (any Beam filesystem)", **d)
    flags.DEFINE_string("mapping", None, "JSON column mapping for the generic source", **d)
    flags.DEFINE_string("output_dir", None, "output directory (local, gs://, hdfs://)", **d)
    flags.DEFINE_integer("short_len", 20, "short behaviour sequence length", **d)
    flags.DEFINE_integer("long_len", 100, "long behaviour sequence length", **d)
    flags.DEFINE_integer("max_context", 20, "max in-page context items per example", **d)
    flags.DEFINE_enum("context_sampling", "stratified", list(CONTEXT_SAMPLINGS), "which context "
                      "items a page with more than --max_context others keeps (seeded): "
                      "'stratified' = the page's own share of clicked items in expectation "
                      "(CCN's S+ / S- as the page has them), 'clicked_first' = every clicked "
                      "item first (the choice before this flag; inflates the clicked share)", **d)
    flags.DEFINE_integer("min_freq", 1, "vocabulary min frequency (train split)", **d)
    flags.DEFINE_integer("negatives_per_positive", 1, "sampled negatives (positives-only sources)", **d)
    flags.DEFINE_integer("seed", 0, "seed of every random choice of the job", **d)
    flags.DEFINE_float("valid_fraction", 0.1, "time split: fraction of pages for validation", **d)
    flags.DEFINE_float("test_fraction", 0.1, "time split: fraction of pages for test", **d)
    flags.DEFINE_integer("num_shards", 0, "files per split and for the dead letters, rows "
                         "assigned by a seeded hash (0 = auto: one file each; set >= the "
                         "workers of a cluster for parallel writes)", **d)
    flags.DEFINE_integer("shuffle_buckets", 4096, "> 0: write the train split in a seeded "
                         "hash order (each shard in chunks of at most --spill_chunk_mb, each "
                         "chunk a random sample of the shard in a random order), so streamed "
                         "readers see mixed batches; 0: the builder's user-grouped order. Any "
                         "positive value means the same (kept for flagfiles of older versions)",
                         **d)
    flags.DEFINE_float("read_split_mb", 64.0, "an uncompressed CSV/TSV/JSON-lines input larger "
                       "than this is read in byte ranges of this size, in parallel", **d)
    flags.DEFINE_integer("read_min_shards", -1, "cut uncompressed line files into smaller "
                         "byte ranges (>= 1 MB) when --read_split_mb gives fewer read shards "
                         "than this (-1 = auto: 16 on the DaskRunner, which runs one task per "
                         "shard, 1 elsewhere)", **d)
    flags.DEFINE_float("spill_chunk_mb", 256.0, "most bytes of records one writer holds in "
                       "memory (larger output shards are merged in chunks)", **d)
    flags.DEFINE_integer("max_rows_per_user", DEFAULT_MAX_ROWS_PER_USER, "keep each user's most "
                         "recent N rows (by timestamp, then origin); older rows of a heavier "
                         "user (a crawler, a shared device id) become user_row_cap dead "
                         "letters, so one key cannot stall a worker or exhaust its memory "
                         "(0 = no cap)", **d)
    flags.DEFINE_enum("user_grouping", "auto", list(USER_GROUPINGS), "how rows are grouped by "
                      "user: 'files' = through spill files (only their names are shuffled; "
                      "memory bounded by --spill_chunk_mb per worker whatever the log's size), "
                      "'shuffle' = the runner's GroupByKey (for Dataflow, Flink, Spark, which "
                      "shuffle through disk), 'auto' = files on the DirectRunner and "
                      "DaskRunner, shuffle elsewhere. Spill files go under --temp_location "
                      "when given, else OUTPUT/_tmp, and are deleted at the end", **d)
    flags.DEFINE_integer("user_partitions", 64, "spill partitions of the 'files' grouping (the "
                         "units of work of the per-user steps; >= 2x the workers)", **d)
    _FLAGS = fv
    return fv


def main(argv: Optional[List[str]] = None) -> dict:
    """Parse our absl flags; pass the rest to Beam; run."""
    FLAGS = _define_flags()
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("--help", "--helpfull", "-h") for a in argv[1:]):
        print(__doc__ + "\nFlags (every other --option goes to Beam's PipelineOptions):\n"
              + FLAGS.get_help())
        raise SystemExit(0)
    if FLAGS.is_parsed():
        FLAGS.unparse_flags()  # a second call in one process starts from the defaults
    rest = FLAGS(argv, known_only=True)[1:]
    for req in ("source", "input", "output_dir"):
        if not getattr(FLAGS, req):
            raise SystemExit(f"--{req} is required")
    from pipelines.sources import get_source  # lazy: sources are optional for library users

    mapping = FLAGS.mapping
    source = get_source(FLAGS.source, FLAGS.input, mapping=mapping)
    cfg = PreprocessConfig(
        output_dir=FLAGS.output_dir, short_len=FLAGS.short_len, long_len=FLAGS.long_len,
        max_context=FLAGS.max_context, context_sampling=FLAGS.context_sampling,
        min_freq=FLAGS.min_freq,
        negatives_per_positive=FLAGS.negatives_per_positive, seed=FLAGS.seed,
        valid_fraction=FLAGS.valid_fraction, test_fraction=FLAGS.test_fraction,
        num_shards=FLAGS.num_shards, shuffle_buckets=FLAGS.shuffle_buckets,
        read_split_mb=FLAGS.read_split_mb, read_min_shards=FLAGS.read_min_shards,
        spill_chunk_mb=FLAGS.spill_chunk_mb,
        max_rows_per_user=FLAGS.max_rows_per_user, user_grouping=FLAGS.user_grouping,
        user_partitions=FLAGS.user_partitions, source_name=FLAGS.source, input=FLAGS.input)
    st = run(source, cfg, rest)
    print(json.dumps({k: st[k] for k in ("rows_read", "rows_used", "rows_dead_letter",
                                         "dead_letter_reasons", "negatives_sampled", "pages",
                                         "examples")}, sort_keys=True))
    return st


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
