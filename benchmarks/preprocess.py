"""Benchmark of the preprocessing job (not a test).

    python -m benchmarks.preprocess [--rows=1000000] [--seed=0] [--workdir=/tmp/bench_pp]
                                    [--modes=pandas,inprocess,multiproc]

Generates one synthetic log (``pipelines.synthetic.generate``, written as CSV once), then
times, from the same CSV, end to end (read + canonicalize + dedup + pages + sequences + context +
encode + write GZIP TFRecords):

* ``inprocess``: the Beam job on the DirectRunner, in-process (``--direct_running_mode=in_memory``);
* ``multiproc``: the Beam job with ``--direct_num_workers=2 --direct_running_mode=multi_processing``;
* ``pandas``: a single-process pyarrow/pandas implementation of the same page grouping and
  example building (vectorised read and coercion, one sort, per-user slices, the same
  :class:`pipelines.examples.UserExampleBuilder` and encoder, the train split ordered by the
  same hashes as the Beam job's ``shuffled_by_hash``, ``tf.io.TFRecordWriter``), with no
  dead-letter / vocabulary / stats side outputs - an upper bound of what a single process does.

Prints rows/s per mode and the ratios to the pandas baseline from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the multi-process workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def pandas_baseline(csv: str, out_dir: str, seed: int) -> int:
    import numpy as np
    import pyarrow.csv as pacsv
    import tensorflow as tf

    from pipelines.examples import BuildConfig, UserExampleBuilder
    from pipelines.pages import organize_user
    from pipelines.stats import time_cutoffs
    from pipelines.preprocess import hash_bucket

    t = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types={
        c: "string" for c in ("page_id", "user_id", "item_id", "trigger_item_id", "category_id",
                              "seller_id", "user_gender", "user_age")}))
    df = t.to_pandas()
    df["_origin"] = [f"{csv}:{i}" for i in range(2, len(df) + 2)]  # header is line 1
    for c in ("trigger_item_id", "category_id", "seller_id"):
        df[c] = df[c].fillna("")
    if "is_history" not in df:
        df["is_history"] = 0
    df = df.sort_values(["user_id"], kind="stable")
    profile = tuple(c[5:] for c in df.columns if c.startswith("user_") and c != "user_id")
    cfg = BuildConfig(seed=seed, user_profile=profile)
    builder = UserExampleBuilder(cfg)
    page_ts = df.groupby(["user_id", "page_id"])["timestamp"].min()
    cutoffs = time_cutoffs(page_ts.value_counts().to_dict(), 0.1, 0.1)
    cats = df.groupby("item_id")["category_id"].agg(lambda s: s.value_counts().index[0])
    sels = df.groupby("item_id")["seller_id"].agg(lambda s: s.value_counts().index[0])
    table = {i: (cats[i], sels[i]) for i in cats.index}
    universe = sorted(table)
    records = df.to_dict("records")
    users = df["user_id"].to_numpy()
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], bounds]); ends = np.concatenate([bounds, [len(df)]])
    stats, tokens = Counter(), Counter()
    opts = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {s: tf.io.TFRecordWriter(os.path.join(out_dir, f"{s}.tfrecord.gz"), opts)
               for s in ("train", "valid", "test")}
    n = 0
    train = []
    for a, b in zip(starts, ends):
        log, _ = organize_user(users[a], records[a:b])
        for split, ex in builder.build(log, table, universe, cutoffs, stats, tokens):
            if split == "train":
                train.append(ex)  # written below in the Beam job's hash order
            else:
                writers[split].write(ex)
            n += 1
    # the same order as pipelines.preprocess.shuffled_by_hash (bucket, then second hash)
    second = seed + 1
    train.sort(key=lambda r: (hash_bucket(r, 4096, seed), hash_bucket(r, 1 << 62, second), r))
    for ex in train:
        writers["train"].write(ex)
    for w in writers.values():
        w.close()
    return n


def beam_job(csv: str, out_dir: str, seed: int, beam_args) -> dict:
    from pipelines import preprocess as P
    from pipelines.sources import get_source

    cfg = P.PreprocessConfig(output_dir=out_dir, seed=seed, source_name="synthetic", input=csv)
    return P.run(get_source("synthetic", csv), cfg, ["--runner=DirectRunner", *beam_args])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_preprocess")
    ap.add_argument("--modes", default="pandas,inprocess,multiproc")
    args = ap.parse_args(argv)
    import logging
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    from pipelines.synthetic import generate

    os.makedirs(args.workdir, exist_ok=True)
    csv = os.path.join(args.workdir, f"log_{args.rows}_{args.seed}.csv")
    t0 = time.perf_counter()
    if not os.path.exists(csv):
        generate(args.rows, args.seed).to_csv(csv, index=False)
    print(f"log: {csv} ({args.rows} rows; generated/reused in {time.perf_counter() - t0:.1f}s)")
    results = {}
    for mode in args.modes.split(","):
        out = os.path.join(args.workdir, f"out_{mode}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        t = time.perf_counter()
        cpu0 = _cpu()
        if mode == "pandas":
            n = pandas_baseline(csv, out, args.seed)
        elif mode == "inprocess":
            st = beam_job(csv, out, args.seed, ["--direct_running_mode=in_memory"])
            n = sum(st["examples"].values())
        elif mode == "multiproc":
            st = beam_job(csv, out, args.seed, ["--direct_num_workers=2",
                                                "--direct_running_mode=multi_processing"])
            n = sum(st["examples"].values())
        else:
            raise SystemExit(f"unknown mode {mode}")
        dt = time.perf_counter() - t
        cpu = _cpu() - cpu0
        results[mode] = dict(seconds=round(dt, 2), cpu_seconds=round(cpu, 2), examples=n,
                             rows_per_s=round(args.rows / dt),
                             rows_per_cpu_s=round(args.rows / cpu),
                             loadavg_1m_after=round(os.getloadavg()[0], 2))
        print(f"{mode:10s} {dt:8.1f}s wall {args.rows / dt:9.0f} rows/s | {cpu:8.1f}s cpu "
              f"{args.rows / cpu:9.0f} rows/cpu-s | {n} examples | load {os.getloadavg()[0]:.1f}",
              flush=True)
    base = results.get("pandas")
    if base:
        for mode, r in results.items():
            print(f"ratio {mode}/pandas: rows/s {r['rows_per_s'] / base['rows_per_s']:.2f}, "
                  f"rows/cpu-s {r['rows_per_cpu_s'] / base['rows_per_cpu_s']:.2f}")
    print(json.dumps({"rows": args.rows, "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
