"""GroupByKey through files (pipelines/filegroup.py): the same groups as beam.GroupByKey, in
chunks, read twice, across worker processes; only file names cross the runner."""
from __future__ import annotations

import os
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines import filegroup as fg


def _data(n=3000, users=180, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        u = f"u{int(rng.paretovariate(1.2)) % users}"  # skewed: a few heavy keys
        out.append((u, {"item_id": f"i{rng.randrange(500)}", "timestamp": rng.randrange(10**9),
                        "_origin": f"/logs/f.csv:{i + 2}", "n": i, "pad": "x" * rng.randrange(80)}))
    return out


def _canon(groups):
    """(key, [values]) -> sorted list of (key, sorted origins): order-free comparison."""
    return sorted((k, sorted(v["_origin"] for v in vs)) for k, vs in groups)


def _expected(data):
    by = {}
    for k, v in data:
        by.setdefault(k, []).append(v)
    return _canon(by.items())


def _files(d):
    return sorted(f for f in os.listdir(d)) if os.path.isdir(d) else []


@pytest.mark.parametrize("partitions,chunk_bytes", [(1, 1 << 30), (7, 1 << 30), (5, 20_000)])
def test_same_groups_as_group_by_key(tmp_path, partitions, chunk_bytes):
    data = _data()
    prefix = str(tmp_path / "spill" / "users")
    os.makedirs(tmp_path / "spill")
    with beam.Pipeline(runner="DirectRunner") as p:
        grouped = (p | beam.Create(data, reshuffle=True)
                   | fg.FileGroupByKey(prefix, partitions, chunk_bytes, seed=3))
        keys = grouped | beam.Keys()
        assert_that(grouped | beam.combiners.ToList() | beam.Map(_canon),
                    equal_to([_expected(data)]))
        # every key exactly once (a key is never split across chunks or partitions)
        assert_that(keys | "Dupes" >> beam.combiners.Count.PerElement()
                    | beam.Filter(lambda kv: kv[1] > 1), equal_to([]), label="once")
    left = _files(tmp_path / "spill")
    assert left and all(f.endswith(".spill") for f in left)  # spills stay until cleanup
    assert len({f.split("-")[1] for f in left}) <= partitions
    deleted = fg.cleanup(prefix)
    assert len(deleted) == len(left) and _files(tmp_path / "spill") == []


def test_group_spilled_chunks_keep_keys_whole_and_delete_routing_files(tmp_path):
    data = _data(2000, users=60, seed=1)
    prefix = str(tmp_path / "g")
    fn = fg.SpillFn(prefix, num_partitions=1, seed=0)
    paths = []
    for bundle in (data[:700], data[700:]):  # two bundles -> two spill files
        fn.start_bundle()
        paths += [path for kv in bundle for _, path in fn.process(kv)]
        fn.finish_bundle()
    assert len(paths) == 2
    total = sum(os.path.getsize(p) for p in paths)
    seen_files = []

    groups = []
    gen = fg.group_spilled(0, paths + [None], chunk_bytes=total // 6)
    for kv in gen:
        groups.append(kv)
        seen_files.append(len(os.listdir(tmp_path)))
    assert _canon(groups) == _expected(data)
    assert len({k for k, _ in groups}) == len(groups)
    assert max(seen_files) > 2  # routed sub-chunk files existed while reading
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)
    # the values come back decoded, untouched
    by = dict(groups)
    k0, v0 = data[0]
    assert v0 in by[k0]


def test_spilled_partitions_can_be_read_twice(tmp_path):
    data = _data(800, users=40, seed=2)
    prefix = str(tmp_path / "twice")
    with beam.Pipeline(runner="DirectRunner") as p:
        parts = p | beam.Create(data, reshuffle=True) | fg.SpillByKey(prefix, 4)
        first = parts | "First" >> fg.ReadSpilledGroups()
        second = parts | "Second" >> fg.ReadSpilledGroups(chunk_bytes=5_000)
        for label, g in (("a", first), ("b", second)):
            assert_that(g | f"L{label}" >> beam.combiners.ToList() | f"C{label}" >> beam.Map(_canon),
                        equal_to([_expected(data)]), label=f"eq{label}")
        # only (partition, [paths]) elements cross the shuffle: at most 4 partitions
        assert_that(parts | beam.combiners.Count.Globally() | beam.Map(lambda n: n <= 4),
                    equal_to([True]), label="few")
    fg.cleanup(prefix)
    assert os.listdir(tmp_path) == []


def test_across_worker_processes(tmp_path):
    """DirectRunner with 2 worker processes: spill files written by one process are complete
    when another reads them."""
    data = _data(1500, users=90, seed=4)
    out = tmp_path / "out.txt"
    prefix = str(tmp_path / "mp")
    opts = beam.options.pipeline_options.PipelineOptions(
        ["--runner=DirectRunner", "--direct_num_workers=2",
         "--direct_running_mode=multi_processing"])
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(data, reshuffle=True) | fg.FileGroupByKey(prefix, 3, chunk_bytes=30_000)
         | beam.Map(lambda kv: f"{kv[0]}\t{','.join(sorted(v['_origin'] for v in kv[1]))}")
         | beam.io.WriteToText(str(out), num_shards=1, shard_name_template=""))
    got = sorted(tuple(l.split("\t")) for l in out.read_text().splitlines())
    assert [(k, o.split(",")) for k, o in got] == _expected(data)
    fg.cleanup(prefix)


def test_invalid_partitions():
    with pytest.raises(ValueError, match="num_partitions"):
        fg.SpillFn("/tmp/x", 0)


@pytest.mark.slow
def test_on_a_dask_cluster(tmp_path):
    """Beam's DaskRunner on a 2-worker LocalCluster: the same groups as in memory (SpillFn
    emits from process, never from finish_bundle, which only closes the files)."""
    distributed = pytest.importorskip("distributed")
    data = _data(1200, users=70, seed=5)
    out = tmp_path / "dask_out"
    prefix = str(tmp_path / "dk")
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 host="127.0.0.1", dashboard_address=None)
    try:
        opts = beam.options.pipeline_options.PipelineOptions(
            ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
             f"--dask_client_address={c.scheduler_address}"])
        p = beam.Pipeline(options=opts)
        (p | beam.Create(data) | fg.FileGroupByKey(prefix, 3, chunk_bytes=20_000)
         | beam.Map(lambda kv: f"{kv[0]}\t{','.join(sorted(v['_origin'] for v in kv[1]))}")
         | beam.io.WriteToText(str(out), num_shards=1, shard_name_template=""))
        result = p.run()
        result.wait_until_finish()
        result.client.close()
    finally:
        c.close()
    got = sorted(tuple(l.split("\t")) for l in out.read_text().splitlines())
    assert [(k, o.split(",")) for k, o in got] == _expected(data)
    fg.cleanup(prefix)
