"""Benchmark of the preprocessing job: throughput and memory (not a test).

    python -m benchmarks.preprocess [--rows=1000000] [--files=1] [--n_items=0] [--seed=0]
        [--modes=pandas,inprocess,multiproc,dask] [--workdir=/tmp/bench_preprocess]
        [--shuffle_buckets=4096] [--limit_gb=18] [--timeout_s=5400] [--trace_stages]
        [--user_grouping=auto|files|shuffle] [--partitions=64] [--chunk_mb=256]
        [--max_rows_per_user=-1] [--crawler_in_log=0] [--check_equal=multiproc,dask]
        [--side_inputs=10000,100000,1000000] [--crawler=10000,100000] [--json_out=FILE]

Quick check (a few minutes): ``--rows=20000 --files=2 --modes=pandas,multiproc,dask
--check_equal=multiproc,dask --side_inputs=10000 --crawler=1000``. The issue's sizes:
``--rows=10000000 --files=1`` and ``--files=16`` (see RESULTS_preprocess.md for what the
current code can run).

**Log.** ``pipelines.synthetic.generate`` in chunks of at most 1M rows (so a 10M-row log never
sits in memory): chunk 0 is exactly ``generate(min(rows, 1M), seed)`` (the log of the earlier
runs of this benchmark); chunk k > 0 is ``generate(.., seed + 1000 k)`` with its users and pages
renamed ``u<k>_..`` / ``p<k>_..`` (disjoint users: ~10k per 1M rows, ~100k at 10M) and every
item's category/seller set to the first ones written for that item (one item table). Each chunk
is spread evenly over ``--files`` CSV files (a user's rows then span files, as in logs cut by
time). ``--n_items`` overrides the generator's item count (default rows/40, at most 200k).
Cached in ``WORKDIR/log_<rows>_<seed>_<files>f_<items>i/``.

**Modes**, each run in a fresh child process whose process tree (the child = the *launcher*,
and every worker it starts) is sampled every 0.5 s (:mod:`benchmarks.memwatch`): peak RSS of
the launcher, of each worker and of the tree. A tree over ``--limit_gb`` is killed (recorded
as ``killed_at_limit``); a mode over ``--timeout_s`` too.

* ``pandas``: single process, pyarrow CSV read + pandas sort + per-user slices through the same
  :class:`pipelines.examples.UserExampleBuilder`; the train split written in the Beam job's hash
  order (``shuffled_by_hash``) through bucket-range spill files on local disk (so the baseline
  itself runs in bounded memory at 10M rows); no dead letters, vocabulary or stats outputs;
* ``inprocess``: the Beam job, DirectRunner in-process (``--direct_running_mode=in_memory``);
* ``multiproc``: DirectRunner ``--direct_num_workers=2 --direct_running_mode=multi_processing``;
* ``dask``: Beam's DaskRunner on a ``distributed.LocalCluster(n_workers=2, threads_per_worker=1,
  host="127.0.0.1", memory_limit=--dask_memory_limit)`` started by the launcher, passed as
  ``--dask_client_address``; the records actually written are counted (a failing or partial
  run is recorded, not raised);
* the Beam modes run the job as shipped, with its ``--user_grouping`` (``auto``: rows grouped
  by user through spill files on these runners), ``--user_partitions`` (``--partitions``),
  ``--spill_chunk_mb`` (``--chunk_mb``) and ``--max_rows_per_user``;
  ``--check_equal=A,B`` compares the examples and stats.json of two modes (in the driver
  process, which then holds both outputs: for runs up to a few M rows). The graph measured in
  RESULTS_preprocess.md as "bounded" was a prototype of what the job now is
  (``benchmarks/bounded_prototype.py`` until commit c748188).

``--crawler_in_log=N`` adds a file with one user's N exposure events (pages of 20 items) to the
log, to see what one heavy key does to the job.

``--trace_stages`` (Beam DirectRunner modes): one JSON line per executed bundle in
``WORKDIR/trace_<mode>.jsonl`` with the launcher's RSS and the bytes the runner holds
(:mod:`benchmarks.beam_trace`).

**Side inputs** (``--side_inputs=N,..``): for an item table of N items with the synthetic id
shapes, the pickled size and the Beam-coder size of the item table (``AsDict`` elements) and of
the sorted universe, and the RSS growth of a fresh process holding each as Python objects.

**Crawler** (``--crawler=N,..``): one user with N exposure events through the per-user code of
the job (``organize_user`` + ``UserExampleBuilder.build``) in a fresh process: wall time, the
process's peak RSS and the bytes of the examples, in two shapes: ``pages`` (N / 20 pages of 20
items, an 8 % click rate: full behaviour sequences) and ``one_page`` (all N events on one page:
the context sampling is quadratic in the page size; run up to 20k events, larger sizes are
extrapolated as n^2).

Prints one line per mode and a JSON summary (also written to ``--json_out``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

CHUNK = 1_000_000


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the multi-process workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------------------
# the log
# ---------------------------------------------------------------------------------------------
def make_log(workdir: str, rows: int, seed: int, files: int, n_items: int = 0,
             crawler: int = 0) -> str:
    """Write (once) a synthetic log of ``rows`` rows as ``files`` CSV files; returns the
    directory (the ``synthetic`` source reads every CSV in it). ``crawler``: one more file,
    ``crawler.csv``, with one user's ``crawler`` exposure events (:func:`crawler_frame`)."""
    import numpy as np

    from pipelines.synthetic import generate, write

    name = f"log_{rows}_{seed}_{files}f_{n_items or 'auto'}i" + (f"_crawler{crawler}" if crawler
                                                                  else "")
    out = os.path.join(workdir, name)
    done = os.path.join(out, "_DONE")
    if os.path.exists(done):
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    paths = [os.path.join(out, f"part-{i:05d}-of-{files:05d}.csv") for i in range(files)]
    sides = {}  # item -> (category, seller): the first written
    written = [False] * files
    kw = {"n_items": n_items} if n_items else {}
    if not n_items and rows > CHUNK:
        # the items of the whole log, as generate(rows) would size them (one item universe)
        kw["n_items"] = int(np.clip(rows // 40, 300, 200_000))
    k = 0
    left = rows
    while left > 0:
        n = min(CHUNK, left)
        df = generate(n, seed if k == 0 else seed + 1000 * k, **kw)
        if k > 0:
            df["user_id"] = "u" + str(k) + "_" + df["user_id"].str[1:]
            df["page_id"] = "p" + str(k) + "_" + df["page_id"].str[1:]
        first = ~df["item_id"].duplicated()
        for item, c, s in zip(df["item_id"][first], df["category_id"][first],
                              df["seller_id"][first]):
            sides.setdefault(item, (c, s))
        df["category_id"] = [sides[i][0] for i in df["item_id"]]
        df["seller_id"] = [sides[i][1] for i in df["item_id"]]
        bounds = np.linspace(0, len(df), files + 1).astype(int)
        for f in range(files):
            part = df.iloc[bounds[f]:bounds[f + 1]]
            part.to_csv(paths[f], mode="a", header=not written[f], index=False)
            written[f] = True
        left -= n
        k += 1
        cols = list(df.columns)
        del df
    if crawler:
        crawler_frame(crawler, sides, cols, seed).to_csv(os.path.join(out, "crawler.csv"),
                                                          index=False)
    open(done, "w").close()
    return out


def crawler_frame(n: int, sides, columns, seed: int = 0):
    """One user ``ucrawler`` with ``n`` exposure rows: pages of 20 items (an 8 % click rate),
    one page every 30 s from the log's start, items and sides from the log's item table."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + 7)
    items = np.asarray(sorted(sides), dtype=object)
    page = np.arange(n) // 20
    it = items[rng.integers(0, len(items), n)]
    trig = items[rng.integers(0, len(items), page.max() + 1)][page]
    df = pd.DataFrame({
        "page_id": ["pcrawl" + str(p) for p in page], "user_id": "ucrawler", "item_id": it,
        "clicked": (rng.random(n) < 0.08).astype(int), "timestamp": 1_700_000_000 + page * 30,
        "position": np.arange(n) % 20, "trigger_item_id": trig,
        "category_id": [sides[i][0] for i in it], "seller_id": [sides[i][1] for i in it],
        "user_gender": "U", "user_age": "25-34"})
    return df[[c for c in columns if c in df.columns]]


def log_files(log_dir: str):
    return sorted(os.path.join(log_dir, f) for f in os.listdir(log_dir) if f.endswith(".csv"))


# ---------------------------------------------------------------------------------------------
# modes (run in a child process)
# ---------------------------------------------------------------------------------------------
def pandas_baseline(log_dir: str, out_dir: str, seed: int, spill_ranges: int = 64) -> int:
    import numpy as np
    import pandas as pd
    import pyarrow.csv as pacsv
    import tensorflow as tf

    from pipelines.examples import BuildConfig, UserExampleBuilder
    from pipelines.pages import organize_user
    from pipelines.stats import time_cutoffs
    from pipelines.preprocess import hash_bucket

    str_cols = ("page_id", "user_id", "item_id", "trigger_item_id", "category_id",
                "seller_id", "user_gender", "user_age")
    frames = []
    for path in log_files(log_dir):
        t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: "string" for c in str_cols}))
        df = t.to_pandas()
        df["_origin"] = [f"{path}:{i}" for i in range(2, len(df) + 2)]  # header is line 1
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    del frames
    for c in ("trigger_item_id", "category_id", "seller_id"):
        df[c] = df[c].fillna("")
    if "is_history" not in df:
        df["is_history"] = 0
    df = df.sort_values(["user_id"], kind="stable", ignore_index=True)
    profile = tuple(c[5:] for c in df.columns if c.startswith("user_") and c != "user_id")
    cfg = BuildConfig(seed=seed, user_profile=profile)
    builder = UserExampleBuilder(cfg)
    page_ts = df.groupby(["user_id", "page_id"])["timestamp"].min()
    cutoffs = time_cutoffs(page_ts.value_counts().to_dict(), 0.1, 0.1)
    cats = df.groupby("item_id")["category_id"].agg(lambda s: s.value_counts().index[0])
    sels = df.groupby("item_id")["seller_id"].agg(lambda s: s.value_counts().index[0])
    table = {i: (cats[i], sels[i]) for i in cats.index}
    universe = sorted(table)
    cols = list(df.columns)
    arrays = [df[c].to_numpy(dtype=object) for c in cols]
    users = df["user_id"].to_numpy()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]); ends = np.concatenate([bounds, [len(df)]])
    del df
    stats, tokens = Counter(), Counter()
    opts = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {s: tf.io.TFRecordWriter(os.path.join(out_dir, f"{s}.tfrecord.gz"), opts)
               for s in ("valid", "test")}
    # the train split in the order of pipelines.preprocess.shuffled_by_hash (bucket, then a
    # second hash), through spill files of contiguous bucket ranges: bounded memory
    buckets, second = 4096, seed + 1
    per_range = buckets // spill_ranges
    spill_dir = os.path.join(out_dir, "_spill")
    os.makedirs(spill_dir)
    spills = [open(os.path.join(spill_dir, f"{i:04d}"), "wb") for i in range(spill_ranges)]
    n = 0
    for a, b in zip(starts, ends):
        records = [dict(zip(cols, vals)) for vals in zip(*(arr[a:b] for arr in arrays))]
        log, _ = organize_user(users[a], records)
        for split, ex in builder.build(log, table, universe, cutoffs, stats, tokens):
            if split == "train":
                fh = spills[hash_bucket(ex, buckets, seed) // per_range]
                fh.write(len(ex).to_bytes(4, "little"))
                fh.write(ex)
            else:
                writers[split].write(ex)
            n += 1
    for fh in spills:
        fh.close()
    train = tf.io.TFRecordWriter(os.path.join(out_dir, "train.tfrecord.gz"), opts)
    for i in range(spill_ranges):
        path = os.path.join(spill_dir, f"{i:04d}")
        with open(path, "rb") as fh:
            data = fh.read()
        recs, pos = [], 0
        while pos < len(data):
            m = int.from_bytes(data[pos:pos + 4], "little")
            recs.append(data[pos + 4:pos + 4 + m])
            pos += 4 + m
        del data
        recs.sort(key=lambda r: (hash_bucket(r, buckets, seed), hash_bucket(r, 1 << 62, second), r))
        for ex in recs:
            train.write(ex)
        os.remove(path)
    train.close()
    for w in writers.values():
        w.close()
    return n


def beam_job(log_dir: str, out_dir: str, seed: int, beam_args, shuffle_buckets: int,
             args=None) -> dict:
    from pipelines import caps
    from pipelines import preprocess as P
    from pipelines.sources import get_source

    kw = {}
    if args is not None:
        kw = dict(user_grouping=args.user_grouping, user_partitions=args.partitions,
                  spill_chunk_mb=args.chunk_mb,
                  max_rows_per_user=(caps.DEFAULT_MAX_ROWS_PER_USER
                                     if args.max_rows_per_user < 0 else args.max_rows_per_user))
    cfg = P.PreprocessConfig(output_dir=out_dir, seed=seed, source_name="synthetic",
                             input=log_dir, shuffle_buckets=shuffle_buckets, **kw)
    return P.run(get_source("synthetic", log_dir), cfg, list(beam_args))


def output_counts(out_dir: str) -> dict:
    """Records per split actually written (the Dask runner may skip sinks)."""
    import glob

    import tensorflow as tf

    out = {}
    for split in ("train", "valid", "test"):
        n = 0
        for path in sorted(glob.glob(os.path.join(out_dir, f"{split}*.tfrecord.gz"))):
            n += sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))
        out[split] = n
    out["stats_json"] = os.path.exists(os.path.join(out_dir, "stats.json"))
    return out


def compare_outputs(dir_a: str, dir_b: str) -> dict:
    """Per split: are the serialized examples of two output directories the same multiset?"""
    import glob

    import tensorflow as tf

    out = {}
    for split in ("train", "valid", "test"):
        got = []
        for d in (dir_a, dir_b):
            recs = Counter()
            for path in sorted(glob.glob(os.path.join(d, f"{split}*.tfrecord.gz"))):
                recs.update(r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP"))
            got.append(recs)
        out[split] = dict(equal=got[0] == got[1], n=[sum(g.values()) for g in got])
    stats = []
    for d in (dir_a, dir_b):
        path = os.path.join(d, "stats.json")
        if not os.path.exists(path):
            out["stats_equal_except_config"] = f"no {path}"
            return out
        with open(path) as fh:
            st = json.load(fh)
        st.pop("config", None)
        stats.append(st)
    out["stats_equal_except_config"] = stats[0] == stats[1]
    if stats[0] != stats[1]:
        out["stats_diff_keys"] = sorted(k for k in set(stats[0]) | set(stats[1])
                                        if stats[0].get(k) != stats[1].get(k))
    return out


def child_mode(args) -> dict:
    mode = args.child
    out = os.path.join(args.workdir, f"out_{mode}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if args.trace_stages and mode in ("inprocess", "multiproc"):
        from benchmarks import beam_trace

        trace = os.path.join(args.workdir, f"trace_{mode}.jsonl")
        if os.path.exists(trace):
            os.remove(trace)
        beam_trace.install(trace)
    info = {}
    t, cpu0 = time.perf_counter(), _cpu()
    st = None
    if mode == "pandas":
        n = pandas_baseline(args.log_dir, out, args.seed)
    elif mode in ("inprocess", "multiproc"):
        extra = (["--direct_running_mode=in_memory"] if mode == "inprocess" else
                 ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
        st = beam_job(args.log_dir, out, args.seed, ["--runner=DirectRunner", *extra],
                      args.shuffle_buckets, args)
        n = sum(st["examples"].values())
    elif mode == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                               processes=True, dashboard_address=None,
                               memory_limit=args.dask_memory_limit)
        client = Client(cluster)
        info["dask_worker_pids"] = list(client.run(os.getpid).values())
        with open(os.path.join(args.workdir, "dask_pids.json"), "w") as fh:
            json.dump(info, fh)
        try:
            st = beam_job(args.log_dir, out, args.seed,
                          ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                           f"--dask_client_address={cluster.scheduler_address}"],
                          args.shuffle_buckets, args)
            n = sum(st["examples"].values())
        except Exception as e:  # record what the runner did instead of dying
            info["error"] = f"{type(e).__name__}: {str(e)[:500]}"
            n = -1
        finally:
            client.close()
            cluster.close()
    else:
        raise SystemExit(f"unknown mode {mode}")
    dt = time.perf_counter() - t
    cpu = _cpu() - cpu0
    rows = args.rows + args.crawler_in_log
    res = dict(mode=mode, seconds=round(dt, 2), cpu_seconds=round(cpu, 2), examples=n,
               rows_per_s=round(rows / dt), rows_per_cpu_s=round(rows / max(cpu, 1e-9)),
               loadavg_1m_after=round(os.getloadavg()[0], 2), **info)
    if mode == "dask" or st is None or n < 0:
        res["written"] = output_counts(out)
    if st is not None:
        res["stats_examples"] = st.get("examples")
        res["rows_read"] = st.get("rows_read")
        res["dead_letter_reasons"] = st.get("dead_letter_reasons")
    return res


# ---------------------------------------------------------------------------------------------
# side inputs and crawler (run in a child process)
# ---------------------------------------------------------------------------------------------
def child_side_inputs(n_items: int) -> dict:
    """Sizes of the item table {item: (category, seller)} and the sorted universe at N items
    (ids shaped as the synthetic log's: i<n>, c<n>, s<n>; n_items/15 sellers, each in one of
    n_items/100 categories, as in the generator): pickled, Beam-coder encoded (what the runner
    stores and ships: the table as ``AsDict``'s (key, value) elements, the universe as one
    list) and as the Python objects a worker decodes them into (RSS growth of this fresh
    process); the same for :class:`pipelines.itemtable.ItemTable` (one compact element that
    holds both)."""
    import gc
    import pickle

    from apache_beam.coders import coders

    from pipelines.itemtable import ItemTable

    n_cat = max(12, min(400, n_items // 100))
    n_sel = max(1, n_items // 15)
    table = {}
    for i in range(n_items):
        s = (i * 7919) % n_sel
        table[f"i{i}"] = (f"c{s % n_cat}", f"s{s}")
    kv = coders.TupleCoder([coders.StrUtf8Coder(), coders.FastPrimitivesCoder()])
    fpc = coders.FastPrimitivesCoder()
    table_enc = [kv.encode((k, v)) for k, v in table.items()]
    universe_enc = fpc.encode(sorted(table))
    compact_enc = fpc.encode(ItemTable(table))
    res = dict(n_items=n_items,
               table_pickle_mb=round(len(pickle.dumps(table, protocol=5)) / 2**20, 2),
               table_beam_coder_mb=round(sum(map(len, table_enc)) / 2**20, 2),
               universe_pickle_mb=round(len(pickle.dumps(sorted(table), protocol=5)) / 2**20, 2),
               universe_beam_coder_mb=round(len(universe_enc) / 2**20, 2),
               compact_beam_coder_mb=round(len(compact_enc) / 2**20, 2))
    del table
    gc.collect()
    base = _rss()
    decoded = dict(kv.decode(b) for b in table_enc)  # as a worker builds the AsDict view
    after_table = _rss()
    universe = fpc.decode(universe_enc)
    after_universe = _rss()
    ok = len(decoded) == len(universe) == n_items
    del decoded, universe
    gc.collect()
    base2 = _rss()
    compact = fpc.decode(compact_enc)
    after_compact = _rss()
    res.update(table_python_mb=round((after_table - base) / 2**20, 1),
               universe_python_mb=round((after_universe - after_table) / 2**20, 1),
               compact_python_mb=round((after_compact - base2) / 2**20, 1),
               check=ok and len(compact.universe()) == n_items)
    return res


def crawler_rows(n: int, shape: str, seed: int = 0):
    import random

    rng = random.Random(seed)
    rows = []
    page = 20 if shape == "pages" else n
    t0 = 1_700_000_000
    for i in range(n):
        p = i // page
        rows.append({"page_id": f"pc{p}", "user_id": "ucrawler", "item_id": f"i{rng.randrange(10**6)}",
                     "clicked": int(rng.random() < 0.08), "timestamp": t0 + p * 30,
                     "position": i % page, "trigger_item_id": f"i{rng.randrange(10**6)}",
                     "category_id": f"c{rng.randrange(400)}", "seller_id": f"s{rng.randrange(10**4)}",
                     "user_gender": "U", "user_age": "25-34", "is_history": 0,
                     "_origin": f"/data/logs/part-00000-of-00016.csv:{i + 2}",
                     "_raw": {"page_id": f"pc{p}"}})
    return rows


def child_crawler(n: int, shape: str) -> dict:
    import gc

    from pipelines.examples import BuildConfig, UserExampleBuilder
    from pipelines.pages import organize_user

    rows = crawler_rows(n, shape)
    gc.collect()
    base_rss = _rss()
    builder = UserExampleBuilder(BuildConfig(user_profile=("gender", "age")))
    t = time.perf_counter()
    log, dead = organize_user("ucrawler", rows)
    t_org = time.perf_counter() - t
    stats, tokens = Counter(), Counter()
    n_ex = nbytes = 0
    for _split, ex in builder.build(log, {}, [], (float("inf"), float("inf")), stats, tokens):
        n_ex += 1
        nbytes += len(ex)
    dt = time.perf_counter() - t
    return dict(events=n, shape=shape, seconds=round(dt, 2), organize_s=round(t_org, 2),
                examples=n_ex, example_mb=round(nbytes / 2**20, 1),
                mean_example_bytes=round(nbytes / max(1, n_ex)),
                rows_input_mb_rss=round(base_rss / 2**20), peak_rss_mb=round(_hwm() / 2**20))


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run_child(args, child_args, label: str) -> dict:
    from benchmarks.memwatch import TreeSampler

    res_path = os.path.join(args.workdir, f"result_{label}.json")
    if os.path.exists(res_path):
        os.remove(res_path)
    cmd = [sys.executable, "-m", "benchmarks.preprocess", *child_args, f"--result={res_path}",
           f"--workdir={args.workdir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log_path = os.path.join(args.workdir, f"child_{label}.log")
    with TreeSampler(proc.pid, interval=0.5, limit_bytes=int(args.limit_gb * 2**30)) as s:
        try:
            out, _ = proc.communicate(timeout=args.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            from benchmarks.memwatch import descendants

            for pid in reversed([proc.pid] + descendants(proc.pid)):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            out, _ = proc.communicate()
            timed_out = True
    with open(log_path, "w") as fh:
        fh.write(out or "")
    res = {}
    if os.path.exists(res_path):
        with open(res_path) as fh:
            res = json.load(fh)
    pids = os.path.join(args.workdir, "dask_pids.json")
    if label == "dask" and os.path.exists(pids):
        with open(pids) as fh:
            info = json.load(fh)
        for pid in info.get("dask_worker_pids", []):
            s.label(pid, "dask-worker")  # (the scheduler and the nannies live in the launcher)
        os.remove(pids)
    mem = s.report()
    res.update(returncode=proc.returncode, timed_out=timed_out, memory=mem,
               log=log_path)
    if proc.returncode != 0:
        res["tail"] = (out or "")[-1500:]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--n_items", type=int, default=0, help="0 = the generator's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_preprocess")
    ap.add_argument("--modes", default="pandas,inprocess,multiproc",
                    help="comma list of pandas, inprocess, multiproc, dask ('' = none)")
    ap.add_argument("--shuffle_buckets", type=int, default=4096)
    ap.add_argument("--limit_gb", type=float, default=18.0,
                    help="kill a mode's process tree above this summed RSS")
    ap.add_argument("--timeout_s", type=int, default=5400)
    ap.add_argument("--dask_memory_limit", default="8GiB", help="per Dask worker")
    ap.add_argument("--trace_stages", action="store_true")
    ap.add_argument("--crawler_in_log", type=int, default=0,
                    help="add one user with this many exposure events to the log (own file)")
    ap.add_argument("--user_grouping", default="auto", help="the job's --user_grouping")
    ap.add_argument("--partitions", type=int, default=64, help="the job's --user_partitions")
    ap.add_argument("--chunk_mb", type=float, default=256, help="the job's --spill_chunk_mb")
    ap.add_argument("--max_rows_per_user", type=int, default=-1,
                    help="the job's cap (-1 = pipelines.caps default, 0 = none)")
    ap.add_argument("--check_equal", default="",
                    help="A,B: compare the examples (as multisets per split) of modes A and B")
    ap.add_argument("--side_inputs", default="", help="comma list of item counts")
    ap.add_argument("--crawler", default="", help="comma list of event counts")
    ap.add_argument("--json_out", default="")
    # internal: one measurement in this (child) process
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--log_dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)

    if args.child:
        if args.child.startswith("side:"):
            res = child_side_inputs(int(args.child[5:]))
        elif args.child.startswith("crawler:"):
            _, n, shape = args.child.split(":")
            res = child_crawler(int(n), shape)
        else:
            res = child_mode(args)
        with open(args.result, "w") as fh:
            json.dump(res, fh)
        return res

    os.makedirs(args.workdir, exist_ok=True)
    summary = dict(rows=args.rows, files=args.files, n_items=args.n_items, seed=args.seed,
                   cpus=os.cpu_count(), shuffle_buckets=args.shuffle_buckets, modes={},
                   side_inputs=[], crawler=[])
    modes = [m for m in args.modes.split(",") if m]
    if modes:
        t0 = time.perf_counter()
        log_dir = make_log(args.workdir, args.rows, args.seed, args.files, args.n_items,
                           args.crawler_in_log)
        print(f"log: {log_dir} ({args.rows} rows, {args.files} files; generated/reused in "
              f"{time.perf_counter() - t0:.1f}s)", flush=True)
    for mode in modes:
        common = [f"--rows={args.rows}", f"--seed={args.seed}", f"--log_dir={log_dir}",
                  f"--partitions={args.partitions}", f"--chunk_mb={args.chunk_mb}",
                  f"--user_grouping={args.user_grouping}",
                  f"--crawler_in_log={args.crawler_in_log}",
                  f"--max_rows_per_user={args.max_rows_per_user}",
                  f"--shuffle_buckets={args.shuffle_buckets}",
                  f"--dask_memory_limit={args.dask_memory_limit}"]
        if args.trace_stages:
            common.append("--trace_stages")
        load0 = os.getloadavg()[0]
        r = run_child(args, [f"--child={mode}", *common], mode)
        r["loadavg_1m_before"] = round(load0, 2)
        summary["modes"][mode] = r
        m = r["memory"]
        workers = [p for p in m["processes"] if p["role"] not in ("launcher", "resource_tracker")]
        wtxt = " ".join(f"{p['role']}:{max(p['peak_rss_mb'], p['hwm_mb'])}" for p in workers)
        status = ("KILLED at limit" if m["killed_at_limit"] else "TIMEOUT" if r["timed_out"]
                  else f"rc={r['returncode']}")
        print(f"{mode:10s} {r.get('seconds', float('nan')):8.1f}s wall "
              f"{r.get('rows_per_s', 0):8d} rows/s | {r.get('cpu_seconds', float('nan')):7.1f}s cpu"
              f" | {r.get('examples', '?')} examples | launcher peak {m['launcher_hwm_mb']} MB, "
              f"tree peak {m['peak_tree_rss_mb']} MB | workers (MB) {wtxt or '-'} | "
              f"load {r['loadavg_1m_before']}->{r.get('loadavg_1m_after', '?')} | {status}",
              flush=True)
        if r.get("error"):
            print(f"           error: {r['error']}", flush=True)
        if r.get("written"):
            print(f"           written: {r['written']}", flush=True)
    if args.check_equal:
        a, b = args.check_equal.split(",")
        summary["check_equal"] = same = compare_outputs(os.path.join(args.workdir, f"out_{a}"),
                                                        os.path.join(args.workdir, f"out_{b}"))
        print(f"outputs of {a} and {b}: {same}", flush=True)
    base = summary["modes"].get("pandas")
    if base and base.get("rows_per_s"):
        for mode, r in summary["modes"].items():
            if r.get("rows_per_s"):
                print(f"ratio {mode}/pandas: rows/s {r['rows_per_s'] / base['rows_per_s']:.2f}, "
                      f"rows/cpu-s {r['rows_per_cpu_s'] / base['rows_per_cpu_s']:.2f}")
    for n in [int(x) for x in args.side_inputs.split(",") if x]:
        r = run_child(args, [f"--child=side:{n}"], f"side_{n}")
        r.pop("memory", None)
        summary["side_inputs"].append(r)
        print(f"side inputs at {n:>9d} items: item table pickle {r.get('table_pickle_mb')} MB, "
              f"beam coder {r.get('table_beam_coder_mb')} MB, python {r.get('table_python_mb')} MB"
              f" | universe pickle {r.get('universe_pickle_mb')} MB, beam coder "
              f"{r.get('universe_beam_coder_mb')} MB, python {r.get('universe_python_mb')} MB | "
              f"compact ItemTable (both): beam coder {r.get('compact_beam_coder_mb')} MB, python "
              f"{r.get('compact_python_mb')} MB", flush=True)
    for n in [int(x) for x in args.crawler.split(",") if x]:
        for shape in ("pages", "one_page"):
            if shape == "one_page" and n > 20_000:
                continue
            r = run_child(args, [f"--child=crawler:{n}:{shape}"], f"crawler_{n}_{shape}")
            r.pop("memory", None)
            summary["crawler"].append(r)
            print(f"crawler {n:>8d} events ({shape:8s}): {r.get('seconds')}s, "
                  f"{r.get('examples')} examples ({r.get('example_mb')} MB, "
                  f"{r.get('mean_example_bytes')} B each), peak RSS {r.get('peak_rss_mb')} MB "
                  f"(rows alone {r.get('rows_input_mb_rss')} MB)", flush=True)
    text = json.dumps(summary)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(text)
    return summary


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
