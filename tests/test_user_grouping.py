"""The two ways the preprocessing job groups rows by user (``--user_grouping``): through spill
files (the default on the DirectRunner and DaskRunner: only file names cross the runner) and the
runner's ``GroupByKey``. Same examples, dead letters, vocabularies and statistics; no spill file
left behind; the Dask-specific graph choices."""
from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import pytest

from pipelines import preprocess as P
from pipelines.sources import get_source
from tests.test_dask_runner import _dead, _files, write_dirty_log
from tests.test_preprocess_util import read_records

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    return write_dirty_log(str(tmp_path_factory.mktemp("grouping_in")))


def _run(inp, out, *flags):
    return P.main(["prog", "--source=synthetic", f"--input={inp}", f"--output_dir={out}",
                   "--num_shards=2", "--max_rows_per_user=60", *flags])


def _stats(out):
    with open(os.path.join(out, "stats.json")) as fh:
        st = json.load(fh)
    st.pop("config")
    return st


@pytest.fixture(scope="module")
def shuffled(dirty, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("grouping_shuffle"))
    _run(dirty, out, "--user_grouping=shuffle")
    return out


def test_files_grouping_equals_shuffle(dirty, shuffled, tmp_path):
    """3 partitions and 2 KB chunks: every partition is routed into several chunks (the
    bounded-memory path a large log takes), and the outputs still equal the GroupByKey's."""
    out = str(tmp_path / "files")
    st = _run(dirty, out, "--user_grouping=files", "--user_partitions=3",
              "--spill_chunk_mb=0.002")
    assert st["dead_letter_reasons"].get("user_row_cap", 0) > 0  # the cap ran in both passes
    assert st["rows_read"] == st["rows_used"] + st["rows_dead_letter"]
    for split in SPLITS:
        files = _files(shuffled, f"{split}-*-of-*.tfrecord.gz")
        assert files == _files(out, f"{split}-*-of-*.tfrecord.gz") and len(files) == 2
        for f in files:
            got = sorted(read_records(os.path.join(out, f)))  # the order depends on the chunks
            assert got == sorted(read_records(os.path.join(shuffled, f))), f
            assert got or split != "train"
    assert _stats(out) == _stats(shuffled)
    assert _dead(out) == _dead(shuffled)
    for name in ["feature_spec.json"] + _files(shuffled, "vocab/*.txt"):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(shuffled, name), "rb") as b:
            assert a.read() == b.read(), name
    assert sorted(os.listdir(out)) == sorted(os.listdir(shuffled))  # no _tmp, no spill left
    with open(os.path.join(out, "stats.json")) as fh:
        assert json.load(fh)["config"]["user_grouping"] == "files"


def test_spills_under_temp_location_and_deleted(dirty, shuffled, tmp_path):
    from pipelines import transforms as T

    out, tmp = str(tmp_path / "out"), tmp_path / "beamtmp"
    tmp.mkdir()
    seen = []
    real = T.read_context

    def spy(path):  # pass 2 (in this process): the spill files exist, under --temp_location
        seen.append((path, sorted(os.listdir(tmp))))
        return real(path)

    T.read_context = spy
    try:
        _run(dirty, out, f"--temp_location={tmp}")
    finally:
        T.read_context = real
    assert seen and seen[0][0].startswith(str(tmp) + "/preprocess-")
    assert any(p.endswith(".spill") for p in seen[0][1])
    assert any(p.endswith("context.pickle") for p in seen[0][1])
    assert os.listdir(tmp) == []
    assert "_tmp" not in os.listdir(out)
    for split in SPLITS:
        assert sorted(read_records(glob.glob(os.path.join(out, f"{split}-00000-*"))[0])) == \
            sorted(read_records(glob.glob(os.path.join(shuffled, f"{split}-00000-*"))[0]))


def test_failed_job_leaves_no_spill_files(tmp_path):
    """A job that fails after the rows were spilled (here: pass 2 cannot read the context
    file) raises, and its spill files are deleted all the same."""
    from pipelines import transforms as T
    from pipelines.synthetic import generate

    inp = str(tmp_path / "log.csv")
    generate(300, 0).to_csv(inp, index=False)
    out = str(tmp_path / "out")
    real = T.read_context

    def broken(path):
        assert glob.glob(os.path.join(out, "_tmp", "preprocess-*.spill"))
        raise OSError(f"cannot read {path}")

    T.read_context = broken
    try:
        with pytest.raises(Exception, match="cannot read"):
            _run(inp, out)
    finally:
        T.read_context = real
    assert not glob.glob(os.path.join(out, "_tmp", "*"))


@pytest.mark.parametrize("runner,want", [
    ("DirectRunner", "files"), ("DaskRunner", "files"), ("DataflowRunner", "shuffle"),
    ("FlinkRunner", "shuffle"), ("SparkRunner", "shuffle"), ("PortableRunner", "shuffle")])
def test_auto_grouping_per_runner(runner, want):
    opts = beam.options.pipeline_options.PipelineOptions([f"--runner={runner}"])
    assert P.resolve_user_grouping("auto", opts) == want
    assert P.resolve_user_grouping("shuffle", opts) == "shuffle"
    assert P.resolve_user_grouping("files", opts) == "files"
    with pytest.raises(ValueError, match="user_grouping"):
        P.resolve_user_grouping("memory", opts)


def test_bad_user_partitions(dirty, tmp_path):
    with pytest.raises(ValueError, match="--user_partitions=0"):
        _run(dirty, str(tmp_path), "--user_partitions=0")


def test_dask_reads_one_file_in_many_partitions(tmp_path):
    """On the DaskRunner the read shards are planned when the graph is built and made one Dask
    partition each (``--dask_partition_size=1`` unless the user sets a partitioning): Beam's
    default put a whole 1-file job into one partition, so one worker did all of it."""
    from pipelines.synthetic import generate

    inp = str(tmp_path / "log.csv")
    generate(3000, 0).to_csv(inp, index=False)
    size = os.path.getsize(inp)
    opts = P.pipeline_options(["--runner=DaskRunner"])
    from apache_beam.runners.dask.dask_runner import DaskOptions

    assert opts.view_as(DaskOptions).partition_size == 1
    assert P.pipeline_options(["--runner=DaskRunner", "--dask_npartitions=4"]).view_as(
        DaskOptions).partition_size is None
    p = beam.Pipeline(options=opts)
    split_mb = size / 5.5 / (1 << 20)
    P.build_pipeline(p, get_source("synthetic", inp),
                     P.PreprocessConfig(output_dir=str(tmp_path / "o"), read_split_mb=split_mb))
    creates = {}

    class V(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            if node.full_label == "Read/Shards":
                creates[node.full_label] = node

    p.visit(V())
    shards = [v for node in creates.values() if hasattr(node.transform, "values")
              for v in node.transform.values]
    assert len(shards) == 6 and sorted(s.index for s in shards) == list(range(6))
    # the DirectRunner plans in the workers instead
    p2 = beam.Pipeline(options=P.pipeline_options([]))
    P.build_pipeline(p2, get_source("synthetic", inp),
                     P.PreprocessConfig(output_dir=str(tmp_path / "o2"), read_split_mb=split_mb))
    labels = []

    class V2(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            labels.append(node.full_label)

    p2.visit(V2())
    assert any(lb.startswith("Read/PlanShards") for lb in labels)
    assert not any(lb.startswith("Read/Shards") for lb in labels)


def test_log_of_dead_letters_only(tmp_path):
    """Every row rejected: no user, no example, the job still ends with every output (empty
    vocabularies, stats accounting for every row) and no spill file left."""
    inp = tmp_path / "log.csv"
    inp.write_text("page_id,user_id,item_id,clicked,timestamp\n"
                   "p1,u1,i1,maybe,1700000000\np2,u2,i2,1,yesterday\n")
    out = str(tmp_path / "out")
    st = _run(str(inp), out)
    assert st["rows_read"] == 2 == st["rows_dead_letter"] and st["rows_used"] == 0
    assert sum(st["examples"].values()) == 0
    vocab = sorted(os.listdir(os.path.join(out, "vocab")))
    assert vocab and all(os.path.getsize(os.path.join(out, "vocab", v)) == 0 for v in vocab)
    assert "_tmp" not in os.listdir(out)


def test_partition_partial_sums_equal_the_per_row_combiners():
    """The files grouping sums the item sides per partition in item-hash buckets
    (ItemSidesAcc -> MergeItemSides) where the shuffle grouping combines per row
    (CombinePerKey(ItemSideFn)): the same item table, ties included, however the users are
    split into partitions."""
    from collections import Counter

    from pipelines import transforms as T
    from pipelines.pages import organize_user

    rows = []
    for u in range(6):
        for k in range(8):
            item = f"i{(u * 3 + k) % 7}"
            cat = ["", "c1", "c2"][(u + k) % 3]  # empty sides, and ties between c1 and c2
            sel = f"s{(u * k) % 2}" if k % 4 else ""
            rows.append(dict(page_id=f"p{u}_{k // 3}", user_id=f"u{u}", item_id=item,
                             clicked=k % 2, timestamp=1000 + 10 * k, position=k % 3,
                             is_history=0, trigger_item_id="", category_id=cat,
                             seller_id=sel, _origin=f"f:{u * 8 + k + 2}"))
    logs = [organize_user(f"u{u}", [r for r in rows if r["user_id"] == f"u{u}"])[0]
            for u in range(6)]
    fn = T.ItemSideFn()
    per_item = {}
    for log in logs:
        for item, cs in T.item_sides(log):
            per_item[item] = fn.add_input(per_item.get(item) or fn.create_accumulator(), cs)
    want = {item: fn.extract_output(acc) for item, acc in per_item.items()}
    for parts in ([logs], [logs[:2], logs[2:]], [[log] for log in logs]):
        buckets = {}
        for part in parts:
            acc = T.ItemSidesAcc()
            for log in part:
                acc.add_log(log)
            for b, table in acc.buckets(3):
                buckets.setdefault(b, []).append(table)
        got = {}
        merge = T.MergeItemSides()
        for b, tables in buckets.items():
            got.update(merge.extract_output(merge.merge_accumulators(
                [merge.add_input(merge.create_accumulator(), t) for t in tables])))
        assert got == want, parts
    assert Counter(want.values())  # not trivially empty


def test_spill_rows_fn_spills_rows_and_passes_the_rest(tmp_path):
    """SpillRowsFn, the canonical rows' one consumer in the files grouping: rows go to spill
    files (a new file's name comes out as (SPILLED, (partition, path))), dead letters and shard
    counts pass through unchanged; the spilled rows read back by partition."""
    from apache_beam.testing.util import assert_that

    from pipelines import filegroup
    from pipelines import transforms as T
    from pipelines.sources.base import DeadLetter

    dead = DeadLetter("bad_encoding", "f.csv:3: ...", "f.csv:3", None)
    rows = [(T.ROWS, (f"u{k % 3}", {"item_id": f"i{k}"})) for k in range(7)]
    items = rows + [(T.DEAD, dead), (T.READ, 8)]
    prefix = str(tmp_path / "spill-users")
    out_file = tmp_path / "passed.json"

    def check(got):
        tags = sorted(t for t, _ in got)
        assert tags.count(T.DEAD) == 1 and tags.count(T.READ) == 1
        assert [v for t, v in got if t == T.READ] == [8]
        spilled = [v for t, v in got if t == T.SPILLED]
        assert spilled and len({p for _, p in spilled}) == len(spilled)
        by_part = {}
        for part, path in spilled:
            by_part.setdefault(part, []).append(path)
        back = {}
        for part, paths in by_part.items():
            for user, vals in filegroup.group_spilled(part, paths):
                back[user] = sorted(v["item_id"] for v in vals)
        want = {}
        for _, (u, r) in rows:
            want.setdefault(u, []).append(r["item_id"])
        assert back == {u: sorted(v) for u, v in want.items()}
        out_file.write_text("ok")

    with beam.Pipeline(options=P.pipeline_options([])) as p:
        got = p | beam.Create(items) | beam.ParDo(T.SpillRowsFn(prefix, 4, seed=1))
        assert_that(got, check)
    assert out_file.read_text() == "ok"


def test_build_partition_fn_spills_examples_and_emits_names(tmp_path):
    """BuildPartitionFn (pass 2 of the files grouping) spills every example into its split's
    sink spill files itself: its outputs are only (EXAMPLES, (split, (shard, path))), once per
    file, and ONE (SUMS, (stats, tokens)); the spilled records are exactly the examples the
    per-user builder makes, and the sums are the users' sums (what Beam's DaskRunner, which
    holds a task's outputs as a list, then holds is a few names, not the examples)."""
    from collections import Counter

    from pipelines import filegroup
    from pipelines import transforms as T
    from pipelines.examples import INF, BuildConfig, UserExampleBuilder
    from pipelines.pages import organize_user
    from pipelines.spillfiles import iter_spill

    rows = []
    for u in range(3):
        for k in range(9):
            rows.append(dict(page_id=f"p{u}_{k // 3}", user_id=f"u{u}", item_id=f"i{(u + k) % 5}",
                             clicked=int(k % 3 == 0), timestamp=1000 + 10 * k, position=k % 3,
                             is_history=int(k < 2), trigger_item_id="", category_id=f"c{k % 2}",
                             seller_id="s0", _origin=f"f:{u * 9 + k + 2}"))
    spill = filegroup.SpillFn(str(tmp_path / "users"), num_partitions=1)
    spill.start_bundle()
    paths = [path for r in rows for _, path in spill.process((r["user_id"], r))]
    spill.finish_bundle()
    table = {f"i{j}": (f"c{j % 2}", "s0") for j in range(5)}
    ctx_path = T.write_context((table, sorted(table), (INF, INF)), str(tmp_path / "ctx.pickle"))
    cfg = BuildConfig(short_len=4, long_len=6, max_context=3)
    sinks = {split: (str(tmp_path / split), 2, 7) for split in T.SPLIT_FIELD}
    fn = T.BuildPartitionFn(cfg, sinks)
    fn.setup()
    out = list(fn.process((0, {"spill": [paths], "ctx": [ctx_path]})))

    assert [t for t, _ in out[:-1]] == [T.EXAMPLES] * (len(out) - 1) and out[-1][0] == T.SUMS
    names = [v for _, v in out[:-1]]
    assert len({path for _, (_, path) in names}) == len(names)  # one name per file
    got = {split: sorted(r for s, (_, path) in names if s == split for r in iter_spill(path))
           for split in T.SPLIT_FIELD}
    builder, item_table, universe, cutoffs = UserExampleBuilder(cfg), *T.read_context(ctx_path)
    want = {split: [] for split in T.SPLIT_FIELD}
    stats, tokens = Counter(), Counter()
    for u in range(3):
        log = organize_user(f"u{u}", [r for r in rows if r["user_id"] == f"u{u}"])[0]
        for split, ex in builder.build(log, item_table, universe, cutoffs, stats, tokens):
            want[split].append(ex)
    assert got == {split: sorted(v) for split, v in want.items()}
    assert sum(map(len, got.values())) > 0
    assert out[-1][1] == (stats, tokens)


def test_item_partials_through_files_equal_in_memory(tmp_path):
    """OrganizePartitionFn with a partials_prefix writes each item-hash bucket's table to a
    file and emits its name; MergeItemSides reads the names as it reads the tables."""
    from collections import Counter

    from pipelines import transforms as T

    tables = [{"i1": (Counter(c1=2), Counter(s1=1)), "i2": (Counter(c2=1), Counter())},
              {"i1": (Counter(c1=1, c3=4), Counter(s2=3))}]
    paths = [T.dump_value(t, str(tmp_path / f"part{k}.pickle")) for k, t in enumerate(tables)]
    merge = T.MergeItemSides()
    in_memory = merge.extract_output(merge.merge_accumulators(
        [merge.add_input(merge.create_accumulator(), t) for t in tables]))
    from_files = merge.extract_output(merge.merge_accumulators(
        [merge.add_input(merge.create_accumulator(), p) for p in paths]))
    assert from_files == in_memory == {"i1": ("c3", "s2"), "i2": ("c2", "")}
