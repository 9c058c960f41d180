"""The Beam preprocessing job: canonical exposure logs -> training examples.

    python -m pipelines.preprocess --source=NAME --input=PATH [--mapping=FILE.json] \\
        --output_dir=OUT [--short_len=20 --long_len=100 --max_context=20 --min_freq=1 \\
        --negatives_per_positive=1 --seed=0 --valid_fraction=0.1 --test_fraction=0.1 \\
        --num_shards=0] [any Beam pipeline option, e.g. --runner=DataflowRunner --project=P \\
        --region=R --temp_location=gs://B/tmp | --runner=FlinkRunner --flink_master=H:P | \\
        --direct_num_workers=2 --direct_running_mode=multi_processing]

Our flags are absl flags; every other ``--xxx`` argument goes to Beam's PipelineOptions
unchanged. The runner defaults to DirectRunner (named explicitly: Beam's default would try to
download the Prism runner). All I/O goes through Beam FileSystems, so OUT may be gs:// or hdfs://.

Outputs:
  OUT/{train,valid,test}-SSSSS-of-NNNNN.tfrecord.gz  GZIP tf.train.Example per feature_spec.json
  OUT/feature_spec.json                              ctrcore.schema.FeatureSpec
  OUT/vocab/<name>.txt                               train-split vocabularies (min_freq)
  OUT/stats.json                                     see pipelines/stats.py
  OUT/dead_letter-SSSSS-of-NNNNN.jsonl               {reason, detail, origin, raw} per bad row

Graph (see docs in pipelines/examples.py for the example semantics)::

  read files -> canonicalize --dead--> ------------------------------------------+
      | key by user, GroupByKey                                                    |
  organize (dedup, pages) --dead (duplicate_exposure)--> -----------------------> dead letters
      | UserLog ---> item table (AsDict), item universe, page-timestamp histogram -> cutoffs
      v
  build examples (side inputs) -> train / valid / test TFRecords
      |-- stats counters (per bundle) -> merge -+
      '-- train vocab counts (per bundle) -> per name -> vocab files -> sizes -+-> stats.json
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from ctrcore.schema import SPEC_FILENAME, STATS_FILENAME, FeatureSpec
from pipelines import stats as stats_lib
from pipelines import transforms as T
from pipelines.examples import BuildConfig
from pipelines.vocab import vocab_lines, write_lines, write_text

INF = float("inf")


@dataclasses.dataclass
class PreprocessConfig:
    output_dir: str
    short_len: int = 20
    long_len: int = 100
    max_context: int = 20
    min_freq: int = 1
    negatives_per_positive: int = 1
    seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    num_shards: int = 0  # 0 = let the runner decide
    shuffle_buckets: int = 4096  # train split written in a seeded hash order (shuffled_by_hash)
    source_name: str = ""
    input: str = ""


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def hash_bucket(record: bytes, buckets: int, seed: int = 0) -> int:
    """A bucket in ``[0, buckets)`` from a seeded BLAKE2b of the record (the same in every
    process and run, unlike Python's salted ``hash``)."""
    h = hashlib.blake2b(record, digest_size=8, key=int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little") % buckets


@beam.ptransform_fn
def shuffled_by_hash(pcoll, buckets: int, seed: int = 0):
    """The same serialized records in a pseudo-random order that does not depend on the input's.

    The example builder emits a user's examples together (and a page's together), so a split
    written as built holds long runs of one user: a streamed reader with a shuffle buffer much
    smaller than the split then trains on batches of a few hundred users at a time (measured on
    Beauty: ~45 users per 1,024 consecutive records). Each record is keyed by
    :func:`hash_bucket` and grouped, and every group is emitted sorted by a second hash. A
    bucket is then a random sample of the split in a random order, so any window of consecutive
    records is a random sample too, whatever order the runner emits the buckets in (runners
    commonly keep the keys' first-appearance order). This needs many records per bucket:
    N / ``buckets`` >= ~10 (the default 4,096 buckets for splits of 40k records and more;
    a split under the reader's shuffle buffer, 10k, is mixed by the reader anyway).
    Deterministic in content; no record is added or lost (a GroupByKey and its ungrouping).
    """
    second = seed + 1

    def ungroup(kv):
        return sorted(kv[1], key=lambda r: (hash_bucket(r, 1 << 62, second), r))

    return (pcoll
            | "KeyByHash" >> beam.Map(lambda r: (hash_bucket(r, buckets, seed), r))
            | "GroupByHash" >> beam.GroupByKey()
            | "UngroupSorted" >> beam.FlatMap(ungroup))


def _build_config(source, cfg: PreprocessConfig) -> BuildConfig:
    split = getattr(source, "split", "time")
    if split not in ("time", "leave_last_out"):
        raise ValueError(f"source {source.name!r}: unknown split {split!r}")
    for name in ("short_len", "long_len", "max_context", "min_freq"):
        if getattr(cfg, name) < (0 if name == "min_freq" else 1):
            raise ValueError(f"--{name}={getattr(cfg, name)} must be positive")
    if cfg.negatives_per_positive < 0:
        raise ValueError("--negatives_per_positive must be >= 0")
    if cfg.shuffle_buckets < 0:
        raise ValueError(f"--shuffle_buckets={cfg.shuffle_buckets} must be >= 0 (0 = no reordering)")
    return BuildConfig(short_len=cfg.short_len, long_len=cfg.long_len,
                       max_context=cfg.max_context,
                       user_profile=tuple(getattr(source, "user_profile", ()) or ()),
                       seed=cfg.seed, negatives_per_positive=cfg.negatives_per_positive,
                       positives_only=bool(getattr(source, "positives_only", False)), split=split)


def build_pipeline(p: beam.Pipeline, source, cfg: PreprocessConfig) -> Dict[str, Any]:
    """Add the job to pipeline ``p``. Returns the main PCollections by name (``train``,
    ``valid``, ``test``: serialized examples; ``dead_letters``; ``stats``: the stats dict;
    ``vocab_sizes``; ``user_logs``)."""
    bcfg = _build_config(source, cfg)
    spec = FeatureSpec.create(bcfg.spec_config())
    out = cfg.output_dir
    source_name = cfg.source_name or getattr(source, "name", "?")

    raw = p | "Read" >> T.ReadSource(source)
    rows_read = raw | "CountRead" >> beam.combiners.Count.Globally()
    canon = raw | "Canonicalize" >> beam.ParDo(T.CanonicalizeFn(
        source.canonical_kwargs())).with_outputs(T.DEAD, main="rows")
    organized = (canon.rows
                 | "KeyByUser" >> beam.Map(lambda r: (r["user_id"], r))
                 | "GroupByUser" >> beam.GroupByKey()
                 | "Organize" >> beam.ParDo(T.OrganizeUserFn()).with_outputs(T.DEAD, main="logs"))
    logs = organized.logs

    # item table and universe (from the whole clean log)
    item_table = (logs | "ItemSides" >> beam.FlatMap(T.item_sides)
                  | "ItemTable" >> beam.CombinePerKey(T.ItemSideFn()))
    universe = (item_table | "ItemIds" >> beam.Keys()
                | "Universe" >> beam.combiners.ToList()
                | "SortUniverse" >> beam.Map(sorted))

    # time-split cutoffs from the page-timestamp histogram
    if bcfg.split == "time":
        cutoffs = (logs | "PageTs" >> beam.FlatMap(lambda lg: [ts for _, ts, _ in lg.pages])
                   | "CountTs" >> beam.combiners.Count.PerElement()
                   | "TsHistogram" >> beam.combiners.ToDict()
                   | "Cutoffs" >> beam.Map(stats_lib.time_cutoffs, cfg.valid_fraction,
                                           cfg.test_fraction))
    else:
        cutoffs = p | "NoCutoffs" >> beam.Create([(INF, INF)])

    built = logs | "BuildExamples" >> beam.ParDo(
        T.BuildExamplesFn(bcfg), beam.pvalue.AsDict(item_table),
        beam.pvalue.AsSingleton(universe), beam.pvalue.AsSingleton(cutoffs)
    ).with_outputs("valid", "test", T.STATS, T.TOKENS, main="train")

    train = built.train
    if cfg.shuffle_buckets > 0:
        train = train | "ShuffleTrain" >> shuffled_by_hash(cfg.shuffle_buckets, cfg.seed)
    splits = {"train": train, "valid": built.valid, "test": built.test}
    for name, pc in splits.items():
        pc | f"Write_{name}" >> beam.io.WriteToTFRecord(
            _join(out, name), file_name_suffix=".tfrecord.gz", num_shards=cfg.num_shards,
            compression_type=CompressionTypes.GZIP)

    # dead letters
    dead = ((canon[T.DEAD], organized[T.DEAD]) | "AllDead" >> beam.Flatten())
    dead | "DeadJson" >> beam.Map(T.dead_letter_json) | "WriteDead" >> beam.io.WriteToText(
        _join(out, "dead_letter"), file_name_suffix=".jsonl", num_shards=cfg.num_shards)
    reasons = (dead | "Reason" >> beam.Map(lambda d: d.reason)
               | "CountReasons" >> beam.combiners.Count.PerElement())

    # vocabularies from the train split
    min_freq = cfg.min_freq
    vocab_names = sorted(spec.vocabularies)
    vocab_paths = {v: _join(out, *spec.vocabularies[v].split("/")) for v in vocab_names}

    def write_vocab(kv):
        name, counts = kv
        if name not in vocab_paths:
            raise KeyError(f"vocabulary {name!r} not in the feature spec {vocab_names}")
        lines = vocab_lines([c for c in counts if c is not None], min_freq)
        write_lines(vocab_paths[name], lines)
        return name, len(lines)

    token_counts = (built[T.TOKENS] | "TokenItems" >> beam.FlatMap(lambda c: c.items())
                    | "SumTokens" >> beam.CombinePerKey(sum)
                    | "ByVocab" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))))
    all_names = p | "VocabNames" >> beam.Create([(v, None) for v in vocab_names])
    vocab_sizes = ((token_counts, all_names) | "VocabAll" >> beam.Flatten()
                   | "GroupVocab" >> beam.GroupByKey()
                   | "WriteVocab" >> beam.Map(write_vocab))

    summary = built[T.STATS] | "MergeStats" >> beam.CombineGlobally(T.MergeCounters())

    config = dataclasses.asdict(cfg)
    config.update(user_profile=list(bcfg.user_profile), positives_only=bcfg.positives_only,
                  timestamp_format=getattr(source, "timestamp_format", "unix"))

    def finish(_, rows_read, reasons, summary, vocab_sizes, cutoffs):
        st = stats_lib.assemble(
            rows_read=rows_read, dead_letter_reasons=reasons, summary=summary,
            vocab_sizes=vocab_sizes, cutoffs=cutoffs if bcfg.split == "time" else None,
            source=source_name, seed=cfg.seed, split=bcfg.split, config=config)
        write_text(_join(out, STATS_FILENAME), json.dumps(st, indent=1, sort_keys=True))
        write_text(_join(out, SPEC_FILENAME), json.dumps(spec.to_json(), indent=1, sort_keys=True))
        logging.info("preprocess: %s", json.dumps({k: st[k] for k in (
            "rows_read", "rows_used", "rows_dead_letter", "examples")}))
        return st

    stats = (p | "Once" >> beam.Create([None])
             | "Stats" >> beam.Map(finish, beam.pvalue.AsSingleton(rows_read),
                                   beam.pvalue.AsDict(reasons), beam.pvalue.AsSingleton(summary),
                                   beam.pvalue.AsDict(vocab_sizes),
                                   beam.pvalue.AsSingleton(cutoffs)))
    return {"train": built.train, "valid": built.valid, "test": built.test,
            "dead_letters": dead, "stats": stats, "vocab_sizes": vocab_sizes, "user_logs": logs}


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the pass-through args; DirectRunner unless a runner is named."""
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
    return PipelineOptions(args)


def run(source, cfg: PreprocessConfig, beam_args: Sequence[str] = ()) -> dict:
    """Run the job to completion; returns the stats dict (read back from OUT/stats.json)."""
    opts = pipeline_options(beam_args)
    with beam.Pipeline(options=opts) as p:
        build_pipeline(p, source, cfg)
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
    flags.DEFINE_integer("min_freq", 1, "vocabulary min frequency (train split)", **d)
    flags.DEFINE_integer("negatives_per_positive", 1, "sampled negatives (positives-only sources)", **d)
    flags.DEFINE_integer("seed", 0, "seed of every random choice of the job", **d)
    flags.DEFINE_float("valid_fraction", 0.1, "time split: fraction of pages for validation", **d)
    flags.DEFINE_float("test_fraction", 0.1, "time split: fraction of pages for test", **d)
    flags.DEFINE_integer("num_shards", 0, "output shards per split (0 = runner decides)", **d)
    flags.DEFINE_integer("shuffle_buckets", 4096, "write the train split in a seeded hash order: "
                         "records grouped into this many hash buckets, each a random sample of "
                         "the split, so streamed readers see mixed batches (0 = the builder's "
                         "user-grouped order)", **d)
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
        max_context=FLAGS.max_context, min_freq=FLAGS.min_freq,
        negatives_per_positive=FLAGS.negatives_per_positive, seed=FLAGS.seed,
        valid_fraction=FLAGS.valid_fraction, test_fraction=FLAGS.test_fraction,
        num_shards=FLAGS.num_shards, shuffle_buckets=FLAGS.shuffle_buckets,
        source_name=FLAGS.source, input=FLAGS.input)
    st = run(source, cfg, rest)
    print(json.dumps({k: st[k] for k in ("rows_read", "rows_used", "rows_dead_letter",
                                         "dead_letter_reasons", "negatives_sampled", "pages",
                                         "examples")}, sort_keys=True))
    return st


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
