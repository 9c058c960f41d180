"""Benchmark: one large input file feeds every Beam worker (issue 12 section 2; not a test).

    python -m benchmarks.read_split [--rows=600000] [--split_mb=8] [--workers=2] \\
        [--workdir=/tmp/bench_read_split] [--out=benchmarks/read_split.json]

Writes ONE synthetic CSV, then runs the read stage of the preprocessing job
(:class:`pipelines.transforms.ReadSource` + canonicalization + a count) on the DirectRunner with
``--direct_num_workers=N --direct_running_mode=multi_processing`` twice: with the file read whole
(the shard size larger than the file, as every file was read before byte-range shards) and cut
into ``--split_mb`` shards. A sampler thread records the CPU seconds of every worker process
(psutil, every 0.2 s); the figure of merit is how evenly the workers' CPU time is spread
(``min/max``: 1.0 = perfectly even, ~0 = one worker did everything).
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time


def _sampler(stop, seen):
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        for c in me.children(recursive=True):
            try:
                t = c.cpu_times()
                seen[c.pid] = (" ".join(c.cmdline()[-3:])[:80], t.user + t.system)
            except psutil.Error:
                pass
        time.sleep(0.2)


def run_once(csv: str, split_bytes: int, workers: int) -> dict:
    import apache_beam as beam

    from pipelines import preprocess as P
    from pipelines import transforms as T
    from pipelines.sources import get_source

    src = get_source("synthetic", csv)
    src.split_bytes = split_bytes
    shards = len(src.plan(csv))
    opts = P.pipeline_options([f"--direct_num_workers={workers}",
                               "--direct_running_mode=multi_processing"])
    stop, seen = threading.Event(), {}
    th = threading.Thread(target=_sampler, args=(stop, seen), daemon=True)
    th.start()
    t0 = time.time()
    with beam.Pipeline(options=opts) as p:
        (p | T.ReadSource(src)
         | beam.ParDo(T.CanonicalizeFn(src.canonical_kwargs()))
         | beam.combiners.Count.Globally())
    wall = time.time() - t0
    stop.set()
    th.join()
    busy = sorted((cpu for _, cpu in seen.values()), reverse=True)[:workers]
    return {"split_bytes": split_bytes, "shards": shards, "wall_s": round(wall, 2),
            "worker_cpu_s": [round(c, 2) for c in busy],
            "balance_min_over_max": round(busy[-1] / busy[0], 3) if busy and busy[0] else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--split_mb", type=float, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_read_split")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from pipelines import synthetic

    os.makedirs(a.workdir, exist_ok=True)
    csv = os.path.join(a.workdir, f"log_{a.rows}_{a.seed}.csv")
    if not os.path.exists(csv):
        synthetic.write(synthetic.generate(a.rows, a.seed), csv)
    size = os.path.getsize(csv)
    res = {"command": "python -m benchmarks.read_split " + " ".join(
               f"--{k}={v}" for k, v in vars(a).items() if k not in ("out", "workdir")),
           "rows": a.rows, "file_bytes": size, "workers": a.workers,
           "loadavg_before": os.getloadavg(),
           "whole_file": run_once(csv, size + 1, a.workers),
           "split": run_once(csv, int(a.split_mb * (1 << 20)), a.workers),
           "loadavg_after": os.getloadavg()}
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
