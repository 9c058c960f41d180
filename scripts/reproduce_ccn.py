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

The ledger (``--ledger``, default `results/runs`, committed): each finished run's record
(`ctrcore.rundir.RunDir.archive`: train_config, history, best.json and the evaluations; no
weights) is copied to `<ledger>/<runs name>/<model>/seed<s>`. A run already in the ledger is not
trained again, and the reports are built from the ledger, so that tables and multi-session
experiments outlive the machine whose `runs/` trained them (`--ledger=` turns it off: reports
from `runs/`).

``--tag=T`` keeps a variant protocol apart: its runs go to `runs/<dataset>_T/<model>/seed<s>` and
its tables to `results/ccn_<dataset>_T.md/.json`, with ``--extra`` (the variant's ccn.train flags)
on every run; the report lists each run's full command. ``--converged`` (needs a tag) adds
``--epochs=60 --early_stopping_patience=3`` before ``--extra``: early stopping on validation AUC
with a cap the synthetic rows do not reach (the reports flag a run whose best epoch is its cap).

Several synthetic logs (issue 14, item 4; ``ccn.multilog.SyntheticLog``): a log is chosen by
generator seed and rows (``--gen_seed``/``--rows``, or the grid ``--gen_seeds`` x ``--rows_list``).
Log ``synthetic_g<G>_r<R>`` has its data in `out/synthetic_g<G>_r<R>/data` and its runs in
`runs/synthetic_g<G>_r<R>[_T]/<model>/seed<s>` (``--data_dir`` and ``--model_dir`` passed to
ccn.train); the default log (seed 0, 100,000 rows) keeps `out/synthetic` and `runs/synthetic[_T]`.
TAN and CCN run on every log before the other models. Each log gets its own CCN table, and the
grid (``--gen_seeds`` / ``--rows_list`` given) also `results/ccn_synthetic_multilog[_T].md/.json`
and `..._curves.png` (``python -m ccn.multilog``):

    nohup python scripts/reproduce_ccn.py --gen_seeds=0,11,23 --rows_list=200000,1000000 \
        --only=tan,ccn,ccn_no_attraction,ccn_no_repulsion,ccn_notsi --tag=conv --converged \
        > out/multilog.log 2>&1 &
"""
from __future__ import annotations

import argparse
import glob
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional

from ccn import tables
from ccn.multilog import DEFAULT_GEN_SEED, DEFAULT_ROWS, SyntheticLog
from ctrcore.rundir import finished

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = tuple(tables.TABLE2.keys)  # the CCN paper's Table 2 rows (ccn/tables.py), in its order
PRIORITY = ("tan", "ccn")  # the comparison that must hold on the synthetic data comes first
#: ``--converged``: early stopping on validation AUC (patience 3) under a cap no synthetic row reaches
CONVERGED = "--epochs=60 --early_stopping_patience=3"


def data_commands(dataset: str, log: Optional[SyntheticLog] = None):
    """``(data dir, [python -m argument lists])`` that prepare the data of ``dataset`` (synthetic:
    of ``log``, the default log when None)."""
    if dataset == "synthetic":
        log = log or SyntheticLog(DEFAULT_GEN_SEED, DEFAULT_ROWS)
        return log.data_dir, log.prep_commands()
    if dataset == "mind":
        return "out/mind/data", [["pipelines.preprocess", "--source=mind",
                                  "--input=../shared/data/mind_small_sample", "--output_dir=out/mind/data",
                                  "--seed=0", "--runner=DirectRunner"]]
    raise SystemExit(f"unknown --dataset {dataset!r} (synthetic | mind)")


def run(args, log) -> int:
    cmd = [sys.executable, "-m", *args]
    print(f"$ {shlex.join(cmd)}", file=log, flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    print(f"-> exit {rc} in {time.time() - t0:.0f}s", file=log, flush=True)
    return rc


def _ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic", choices=("synthetic", "mind"))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--only", default="", help="comma list of models (default: all)")
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="synthetic log rows")
    ap.add_argument("--gen_seed", type=int, default=DEFAULT_GEN_SEED, help="synthetic generator seed")
    ap.add_argument("--gen_seeds", default="", help="grid of logs: comma list of generator seeds")
    ap.add_argument("--rows_list", default="", help="grid of logs: comma list of rows")
    ap.add_argument("--extra", default="", help="extra ccn.train flags for every run")
    ap.add_argument("--converged", action="store_true", help=f"add {CONVERGED!r} before --extra")
    ap.add_argument("--tag", default="", help="variant name: runs/<dataset>_<tag>, results/ccn_<dataset>_<tag>")
    ap.add_argument("--ledger", default="results/runs",
                    help="where each finished run's record is archived and the reports read from ('' = runs/)")
    ap.add_argument("--dry_run", action="store_true")
    ap.add_argument("--report_only", action="store_true",
                    help="train nothing: archive the finished runs into the ledger and write the reports")
    a = ap.parse_args(argv)
    models = [m for m in a.only.split(",") if m] or list(MODELS)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {MODELS}")
    models.sort(key=lambda m: (m not in PRIORITY, PRIORITY.index(m) if m in PRIORITY else 0))
    seeds = _ints(a.seeds)
    if a.tag and not a.tag.replace("_", "").isalnum():
        raise SystemExit(f"--tag={a.tag!r}: use letters, digits and '_' only")
    if a.converged and not a.tag:
        raise SystemExit("--converged needs a --tag (its runs must not mix with the default protocol's)")
    extra = " ".join(x for x in ((CONVERGED if a.converged else ""), a.extra) if x)
    grid = bool(a.gen_seeds or a.rows_list)
    if a.dataset == "synthetic":
        logs = [SyntheticLog(g, r) for r in (_ints(a.rows_list) or [a.rows])
                for g in (_ints(a.gen_seeds) or [a.gen_seed])]
    elif grid or (a.gen_seed, a.rows) != (DEFAULT_GEN_SEED, DEFAULT_ROWS):
        raise SystemExit("--gen_seed(s) / --rows / --rows_list choose a synthetic log")
    else:
        logs = [None]
    out = sys.stdout

    def name_of(log):
        if log is not None:
            return log.runs_name(a.tag)
        return f"{a.dataset}_{a.tag}" if a.tag else a.dataset

    prepared = set()
    # the TAN-vs-CCN comparison over every log and seed first, then the other models seed-major
    order = [(lg, s, m) for lg in logs for s in seeds for m in models if m in PRIORITY]
    order += [(lg, s, m) for lg in logs for s in seeds for m in models if m not in PRIORITY]
    for lg, seed, m in order:
        rel_dir = os.path.join("runs", name_of(lg), m, f"seed{seed}")
        ledger_dir = os.path.join(ROOT, a.ledger, name_of(lg), m, f"seed{seed}") if a.ledger else ""
        # --report_only: finished runs still go into the ledger; nothing is trained
        if finished(os.path.join(ROOT, rel_dir), ledger_dir, archive=not a.dry_run) or a.report_only:
            continue
        data, prep = data_commands(a.dataset, lg)
        if data not in prepared and not os.path.exists(os.path.join(ROOT, data, "stats.json")):
            for c in prep:
                if a.dry_run:
                    print("$ python -m " + shlex.join(c))
                elif run(c, out) != 0:
                    raise SystemExit(f"data preparation failed: {shlex.join(c)}")
        prepared.add(data)
        c = ["ccn.train", f"--flagfile=configs/{m}_{a.dataset}.flags", f"--seed={seed}"]
        if lg is not None and not lg.is_default:
            c += [f"--data_dir={data}", f"--model_dir={rel_dir}"]
        elif a.tag:
            c.append(f"--model_dir={rel_dir}")
        c += shlex.split(extra)
        if a.dry_run:
            print("$ python -m " + shlex.join(c))
        else:
            run(c, out)
            finished(os.path.join(ROOT, rel_dir), ledger_dir)  # archives it when it finished
    reports = []
    runs_root = a.ledger or "runs"
    for lg in logs:
        name = name_of(lg)
        if not (a.dry_run or glob.glob(os.path.join(ROOT, runs_root, name, "*", "seed*"))):
            continue
        what = a.dataset if lg is None or lg.is_default else f"{lg.name} (generator seed {lg.gen_seed}, {lg.rows} rows)"
        title = f"CCN Table 2 layout on {what}" + (f" ({a.tag}: {extra})" if a.tag else "")
        reports.append(["ccn.report", f"--runs_glob={runs_root}/{name}/*/seed*", "--layout=ccn", "--base=tan",
                        f"--output=results/ccn_{name}.md", f"--json=results/ccn_{name}.json", f"--title={title}"])
    if grid:
        res = "results/ccn_synthetic_multilog" + (f"_{a.tag}" if a.tag else "")
        reports.append(["ccn.multilog", "--logs=" + ",".join(lg.name for lg in logs), f"--tag={a.tag}",
                        f"--runs_dir={runs_root}",
                        "--base=tan", f"--output={res}.md", f"--json={res}.json", f"--png={res}_curves.png",
                        "--title=TAN vs CCN on several synthetic logs" + (f" ({a.tag}: {extra})" if a.tag else ""),
                        "--command=" + shlex.join(["python", "scripts/reproduce_ccn.py", *(argv if argv is not None
                                                                                             else sys.argv[1:])])])
    for rep in reports:
        if a.dry_run:
            print("$ python -m " + shlex.join(rep))
        else:
            os.makedirs(os.path.join(ROOT, "results"), exist_ok=True)
            run(rep, out)


if __name__ == "__main__":
    main()
