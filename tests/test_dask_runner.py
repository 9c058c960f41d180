"""The preprocessing job on Beam's own DaskRunner (``apache-beam[dask]``), a real distributed
engine: a ``dask.distributed`` scheduler and 2 worker processes on 127.0.0.1.

Beam 2.77's DaskRunner computes only the LAST applied transform's graph, merges the tagged
outputs of a multi-output ParDo into one bag, drops outputs emitted in ``finish_bundle``, and
recomputes a side input's upstream wherever it is read. The fast tests (default run) check the
job's graph keeps clear of all of that, so an edit cannot silently break the job on Dask; the
``slow`` tests run it on a cluster and compare every output with the DirectRunner's:

    .venv/bin/python -m pytest -m slow tests/test_dask_runner.py
"""
from __future__ import annotations

import ast
import glob
import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

beam = pytest.importorskip("apache_beam")

from pipelines import preprocess as P  # noqa: E402
from tests.test_preprocess_util import read_records  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "valid", "test")
#: leaf transforms that write an output (label prefixes); Stats writes stats.json + feature_spec
SINKS = ("Write_train/", "Write_valid/", "Write_test/", "Write_dead_letter/", "WriteVocab",
         "Stats")
FLAGS = ["--short_len=5", "--long_len=10", "--max_context=5", "--num_shards=2",
         "--shuffle_buckets=8", "--seed=3"]


def write_dirty_log(d: str) -> str:
    """A synthetic log in two CSV files with bad lines (every dead-letter stage is exercised:
    the reader, canonicalization and the per-user duplicate check). Returns the input glob."""
    from pipelines.synthetic import generate

    lines = generate(1000, 0).to_csv(index=False).splitlines()
    header, rows = lines[0], lines[1:]
    bad = ["p9999,u1,i1,1",  # too few columns
           "p9998,u1,i2,1,yesterday,0,,c1,s1,U,25-34",  # timestamp
           "p9997,u1,i3,maybe,1700110724,0,,c1,s1,U,25-34",  # label
           ",u1,i4,1,1700110724,0,,c1,s1,U,25-34"]  # empty page id
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "a.csv"), "w") as fh:
        fh.write("\n".join([header] + rows[:500] + bad) + "\n")
    with open(os.path.join(d, "b.csv"), "w") as fh:  # two rows again: duplicate exposures
        fh.write("\n".join([header] + rows[500:] + rows[:2]) + "\n")
    return os.path.join(d, "*.csv")


# ---------------------------------------------------------------------------------------------
# fast: the graph
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def log_csv(tmp_path_factory):
    from pipelines.synthetic import generate

    path = str(tmp_path_factory.mktemp("dask_graph") / "log.csv")
    generate(200, 0).to_csv(path, index=False)
    return path


def _leaves(p):
    leaves = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            leaves.append(node)

    p.visit(Visitor())
    return leaves


def _emits_from_finish_bundle(cls) -> bool:
    """Whether a DoFn class's ``finish_bundle`` yields or returns a value (closing files or
    flushing there is fine: the DaskRunner still calls it, it only drops what it emits)."""
    fb = cls.finish_bundle
    if fb is beam.DoFn.finish_bundle:
        return False
    if inspect.isgeneratorfunction(fb):
        return True
    tree = ast.parse(textwrap.dedent(inspect.getsource(fb)))
    return any(isinstance(n, (ast.Return, ast.Yield, ast.YieldFrom)) and n.value is not None
               and not (isinstance(n.value, ast.Constant) and n.value.value is None)
               for n in ast.walk(tree))


def _build(args, log_csv, out):
    from pipelines.sources import get_source

    p = beam.Pipeline(options=P.pipeline_options(args))
    P.build_pipeline(p, get_source("synthetic", log_csv), P.PreprocessConfig(output_dir=out))
    return p


def test_graph_runs_on_dask_semantics(log_csv, tmp_path):
    """No multi-output ParDo / Partition, no DoFn with a finish_bundle, and the last applied
    transform reaches every sink through main inputs (a side input is not a dependency in the
    DaskRunner's graph: it is computed inside the reading task)."""
    leaves = _leaves(_build([], log_csv, str(tmp_path / "out")))
    for node in leaves:
        assert len(node.outputs) <= 1, f"{node.full_label}: multi-output transform"
        assert "Partition" not in node.full_label, node.full_label
        if isinstance(node.transform, beam.ParDo):
            assert not _emits_from_finish_bundle(type(node.transform.fn)), \
                f"{node.full_label}: outputs from finish_bundle are dropped on Dask"
    last = leaves[-1]
    assert last.full_label == "Stats"
    ancestors, todo = set(), [last]
    while todo:
        node = todo.pop()
        if node in ancestors:
            continue
        ancestors.add(node)
        todo.extend(pc.producer for pc in node.main_inputs.values()
                    if getattr(pc, "producer", None) is not None)
    labels = [n.full_label for n in ancestors]
    for sink in SINKS:
        assert any(l.startswith(sink) for l in labels), f"{sink} is not upstream of Stats"
    # every leaf is upstream of the last one: nothing is computed only to be dropped
    dead = [n.full_label for n in leaves if n not in ancestors]
    assert not dead, dead


def test_dask_graph_has_no_side_inputs(log_csv, tmp_path):
    """On the DaskRunner a side input's whole upstream is recomputed inside every task that
    reads it (for the example builder's context: the read, the grouping and pass 1 of every
    user, once per partition): the job's graph there has none."""
    leaves = _leaves(_build(["--runner=DaskRunner"], log_csv, str(tmp_path / "out")))
    with_side = [n.full_label for n in leaves if n.side_inputs]
    assert not with_side, with_side
    assert any(n.full_label.startswith("JoinContext") for n in leaves)


def test_dask_bag_graph_holds_every_transform(log_csv, tmp_path):
    """The DaskRunner's own translation (no cluster: bags are lazy): the graph of the last bag,
    the only one it computes, holds the bag of every transform of the job."""
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from apache_beam.runners.dask.overrides import dask_overrides

    p = _build(["--runner=DaskRunner"], log_csv, str(tmp_path / "out"))
    assert type(p.runner).__name__ == "DaskRunner"
    p.replace_all(dask_overrides())
    visitor = DaskRunner.to_dask_bag_visitor()
    p.visit(visitor)
    items = list(visitor.bags.items())
    last_node, last = items[-1]
    assert last_node.full_label == "Stats"
    layers = set(last.__dask_graph__().layers)
    missing = [n.full_label for n, bag in items if bag is None or bag.name not in layers]
    assert not missing, f"not computed on Dask: {missing}"


def test_runner_name_mapping():
    opts = P.pipeline_options(["--runner=DaskRunner", "--dask_client_address=127.0.0.1:8786"])
    assert P.is_dask(opts)
    assert opts.get_all_options()["runner"] == P.DASK_RUNNER
    from apache_beam.runners.dask.dask_runner import DaskOptions

    assert opts.view_as(DaskOptions).address == "127.0.0.1:8786"
    assert P._runner_args(["--runner", "daskrunner", "--x=1"]) == ["--runner", P.DASK_RUNNER, "--x=1"]
    assert not P.is_dask(P.pipeline_options([]))
    assert P.pipeline_options([]).get_all_options()["runner"] == "DirectRunner"


def test_write_shards(tmp_path):
    """The job's file sink: N files, records placed by a seeded hash (the same files on any
    runner and bundling), empty shards written, a rerun with fewer shards leaves no stale
    file behind once ``delete_stale_shards`` ran (the job's Stats step does)."""
    from pipelines.sinks import TEXT, WriteShards, delete_stale_shards, hash_bucket

    prefix = str(tmp_path / "x")
    recs = [f"r{i}".encode() for i in range(40)]

    def write(n, records, fmt="tfrecord", suffix=".tfrecord.gz"):
        with beam.Pipeline(options=P.pipeline_options([])) as p:
            p | beam.Create(records) | WriteShards(prefix, suffix, n, fmt=fmt, seed=5)
        return sorted(glob.glob(f"{prefix}-*-of-*{suffix}"))

    files = write(3, recs)
    assert [os.path.basename(f) for f in files] == [f"x-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    for i, f in enumerate(files):
        assert sorted(read_records(f)) == sorted(r for r in recs if hash_bucket(r, 3, 5) == i)
    files = write(8, recs[:1])  # 7 empty shards are still files
    assert len(files) == 3 + 8 and sum(len(read_records(f)) for f in files[3:] if "of-00008" in f) == 1
    delete_stale_shards(prefix, ".tfrecord.gz", [f for f in files if "of-00008" in f])
    assert len(glob.glob(f"{prefix}-*-of-*.tfrecord.gz")) == 8
    lines = write(2, ["a", "b\u00e9", "c"], fmt=TEXT, suffix=".jsonl")
    got = sorted(line for f in lines for line in open(f, encoding="utf-8").read().splitlines())
    assert got == ["a", "b\u00e9", "c"]
    assert not [f for f in os.listdir(tmp_path) if "tmp" in f]


# ---------------------------------------------------------------------------------------------
# slow: on a cluster
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dirty_input(tmp_path_factory):
    return write_dirty_log(str(tmp_path_factory.mktemp("dask_log")))


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and 2 worker processes (1 thread each) on 127.0.0.1, stopped afterwards."""
    distributed = pytest.importorskip("distributed")
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None)
    try:
        with distributed.Client(c) as client:
            client.wait_for_workers(2, timeout=120)
            assert len(client.scheduler_info()["workers"]) == 2
        yield c.scheduler_address
    finally:
        c.close()


@pytest.fixture(scope="module")
def direct_run(dirty_input, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("direct"))
    st = P.main(["prog", "--source=synthetic", f"--input={dirty_input}", f"--output_dir={out}",
                 *FLAGS, "--runner=DirectRunner"])
    return out, st


def _files(out, pattern):
    return sorted(os.path.relpath(f, out) for f in glob.glob(os.path.join(out, pattern)))


def _dead(out):
    rows = []
    for f in _files(out, "dead_letter-*.jsonl"):
        with open(os.path.join(out, f), encoding="utf-8") as fh:
            rows.extend(json.dumps(json.loads(line), sort_keys=True) for line in fh if line.strip())
    return sorted(rows)


def _stats(out):
    with open(os.path.join(out, "stats.json")) as fh:
        st = json.load(fh)
    st["config"].pop("output_dir")
    return st


def assert_same_outputs(out, ref):
    """Every output of ``out`` equals ``ref``'s: per file (shards are chosen by a hash of the
    record, so even the files hold the same multisets), stats, spec, vocabularies, dead
    letters; and no temporary file is left behind."""
    for split in SPLITS:
        files = _files(ref, f"{split}-*-of-*.tfrecord.gz")
        assert files == _files(out, f"{split}-*-of-*.tfrecord.gz") and len(files) == 2
        for f in files:
            assert sorted(read_records(os.path.join(out, f))) == \
                sorted(read_records(os.path.join(ref, f))), f
    assert _stats(out) == _stats(ref)
    for name in ["feature_spec.json"] + _files(ref, "vocab/*.txt"):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(ref, name), "rb") as b:
            assert a.read() == b.read(), name
    assert _files(out, "vocab/*") == _files(ref, "vocab/*")
    assert _dead(out) == _dead(ref)
    leftovers = [f for f in os.listdir(out) if "tmp" in f or f.startswith("beam-temp")]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_dask_cluster_equals_direct_runner(cluster, dirty_input, direct_run, tmp_path):
    ref, ref_st = direct_run
    assert ref_st["rows_dead_letter"] >= 6 and ref_st["dead_letter_reasons"]["duplicate_exposure"] == 2
    assert ref_st["rows_read"] == ref_st["rows_used"] + ref_st["rows_dead_letter"]
    assert sum(ref_st["examples"].values()) > 900 and min(ref_st["examples"].values()) > 0
    out = str(tmp_path / "dask")
    st = P.main(["prog", "--source=synthetic", f"--input={dirty_input}", f"--output_dir={out}",
                 *FLAGS, "--runner=DaskRunner", f"--dask_client_address={cluster}",
                 "--dask_npartitions=2"])  # every bag in 2 partitions: 2 bundles per step
    assert st["examples"] == ref_st["examples"]
    assert_same_outputs(out, ref)


@pytest.mark.slow
def test_dask_worker_error_fails_the_job(cluster, dirty_input, tmp_path):
    """A worker's exception reaches the launcher (wait_until_finish gathers every result)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(Exception, match="(?i)directory|exists|errno"):
        P.main(["prog", "--source=synthetic", f"--input={dirty_input}",
                f"--output_dir={blocker}/out", *FLAGS, "--runner=DaskRunner",
                f"--dask_client_address={cluster}"])


@pytest.mark.slow
def test_dask_cli_local_cluster(dirty_input, direct_run, tmp_path):
    """``--runner=DaskRunner`` alone: Beam starts (and the job closes) a local cluster."""
    ref, _ = direct_run
    out = str(tmp_path / "cli")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", "--source=synthetic",
         f"--input={dirty_input}", f"--output_dir={out}", *FLAGS, "--runner=DaskRunner"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["rows_read"] == summary["rows_used"] + summary["rows_dead_letter"]
    assert_same_outputs(out, ref)
