#!/usr/bin/env python
"""Resumable driver of the CCN experiments (CCN paper Table 2 layout) on the synthetic default
and on the MIND stand-in.

    python scripts/reproduce_ccn.py --dataset=synthetic [--seeds=0,1,2,3,4] [--only=tan,ccn] [--dry_run]
    python scripts/reproduce_ccn.py --dataset=synthetic --tag=long --extra='--epochs=30'
    nohup python scripts/reproduce_ccn.py --dataset=mind > out/mind/reproduce.log 2>&1 &

1. Prepares the data once (synthetic: `python -m pipelines.synthetic` then
   `python -m pipelines.preprocess`; mind: `python -m pipelines.preprocess --source=mind`), unless
   `OUT/<dataset>/data/stats.json` exists.
2. Runs `python -m ccn.train --flagfile=configs/<model>_<dataset>.flags --seed=S`, one
   subprocess per (model, seed): TAN and CCN over every seed first, then the other models
   seed-major, so that a report can be built from whatever has finished. A run whose metrics.json exists is skipped;
   an interrupted run resumes from its own checkpoint (BackupAndRestore).
3. Writes `results/ccn_<dataset>.md` and `.json` with `python -m ccn.report` (mean ± std over
   seeds, RelaImpr against TAN), computed from the runs' metrics.json only.

``--tag=T`` keeps a variant protocol apart: its runs go to `runs/<dataset>_T/<model>/seed<s>` and
its tables to `results/ccn_<dataset>_T.md/.json`, with ``--extra`` (the variant's ccn.train flags)
on every run; the report lists each run's full command.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

from ccn import tables
from ctrcore.rundir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = tuple(tables.TABLE2.keys)  # the CCN paper's Table 2 rows (ccn/tables.py), in its order
PRIORITY = ("tan", "ccn")  # the comparison that must hold on the synthetic data comes first


def data_commands(dataset: str, rows: int):
    data = f"out/{dataset}/data"
    beam = ["--runner=DirectRunner"]
    if dataset == "synthetic":
        log = f"out/{dataset}/log/exposures.csv"
        return data, [
            ["pipelines.synthetic", f"--output={log}", f"--rows={rows}", "--seed=0"],
            ["pipelines.preprocess", "--source=synthetic", f"--input={log}", f"--output_dir={data}",
             "--seed=0", *beam]]
    if dataset == "mind":
        return data, [["pipelines.preprocess", "--source=mind",
                       "--input=../shared/data/mind_small_sample", f"--output_dir={data}",
                       "--seed=0", *beam]]
    raise SystemExit(f"unknown --dataset {dataset!r} (synthetic | mind)")


def run(args, log) -> int:
    cmd = [sys.executable, "-m", *args]
    print(f"$ {shlex.join(cmd)}", file=log, flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    print(f"-> exit {rc} in {time.time() - t0:.0f}s", file=log, flush=True)
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic", choices=("synthetic", "mind"))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--only", default="", help="comma list of models (default: all)")
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic log rows")
    ap.add_argument("--extra", default="", help="extra ccn.train flags for every run")
    ap.add_argument("--tag", default="", help="variant name: runs/<dataset>_<tag>, results/ccn_<dataset>_<tag>")
    ap.add_argument("--dry_run", action="store_true")
    ap.add_argument("--report_only", action="store_true")
    a = ap.parse_args()
    models = [m for m in a.only.split(",") if m] or list(MODELS)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {MODELS}")
    models.sort(key=lambda m: (m not in PRIORITY, PRIORITY.index(m) if m in PRIORITY else 0))
    seeds = [int(s) for s in a.seeds.split(",") if s]
    if a.tag and not a.tag.replace("_", "").isalnum():
        raise SystemExit(f"--tag={a.tag!r}: use letters, digits and '_' only")
    name = f"{a.dataset}_{a.tag}" if a.tag else a.dataset
    log = sys.stdout
    data, prep = data_commands(a.dataset, a.rows)
    if not a.report_only:
        if not os.path.exists(os.path.join(ROOT, data, "stats.json")):
            for c in prep:
                if a.dry_run:
                    print("$ python -m " + shlex.join(c))
                elif run(c, log) != 0:
                    raise SystemExit(f"data preparation failed: {shlex.join(c)}")
        # the TAN-vs-CCN comparison over every seed first, then the other models seed-major
        order = [(s, m) for s in seeds for m in models if m in PRIORITY]
        order += [(s, m) for s in seeds for m in models if m not in PRIORITY]
        for seed, m in order:
            rel_dir = os.path.join("runs", name, m, f"seed{seed}")
            if RunDir(os.path.join(ROOT, rel_dir)).has_metrics():
                continue
            c = ["ccn.train", f"--flagfile=configs/{m}_{a.dataset}.flags", f"--seed={seed}",
                 *([f"--model_dir={rel_dir}"] if a.tag else []), *shlex.split(a.extra)]
            if a.dry_run:
                print("$ python -m " + shlex.join(c))
            else:
                run(c, log)
    title = f"CCN Table 2 layout on {a.dataset}" + (f" ({a.tag}: {a.extra})" if a.tag else "")
    rep = ["ccn.report", f"--runs_glob=runs/{name}/*/seed*", "--layout=ccn", "--base=tan",
           f"--output=results/ccn_{name}.md", f"--json=results/ccn_{name}.json", f"--title={title}"]
    if a.dry_run:
        print("$ python -m " + shlex.join(rep))
    else:
        os.makedirs(os.path.join(ROOT, "results"), exist_ok=True)
        run(rep, log)


if __name__ == "__main__":
    main()
