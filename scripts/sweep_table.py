#!/usr/bin/env python
"""One table of a hyper-parameter sweep made of run directories: per variant (a directory of
``seed*`` runs) the flags that differ from the other variants, the best validation AUC (the
choice is made on it) and, for the record only, the test AUC.

    python scripts/sweep_table.py --runs='runs/synthetic_sweep_*/ccn' \\
        --output=results/ccn_synthetic_tau_xi_sweep [--title=...] [--seeds=0,1,2]

Reads each run's ``metrics.json`` (``best_val_auc``, ``auc``) and ``train_config.json``
(``run_info.argv`` and the effective ``run_info.loss_params``). Writes ``OUTPUT.md`` and ``OUTPUT.json``; the variant with the highest mean
validation AUC is marked.

``--prior=A.json[,B.json]`` adds the per-seed records of tables this script generated earlier
(their ``variants[].runs``), for variants whose path matches ``--runs`` (paths compared below
``runs/`` or the ledger ``results/runs/``) and seeds that no run directory has: runs whose
directories are gone (a new machine) still count, each marked with the table it came from.
"""
from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ctrcore.rundir import RunDir  # noqa: E402


def _flags(argv: List[str]) -> Dict[str, str]:
    out = {}
    for a in argv:
        if a.startswith("--") and "=" in a and not a.startswith(("--model_dir=", "--seed=")):
            k, v = a[2:].split("=", 1)
            out[k] = v
    return out


def collect(pattern: str, seeds: Optional[Sequence[int]] = None, priors: Sequence[str] = ()) -> List[dict]:
    """The variants under ``pattern`` with their finished runs (only ``seeds`` when given, so
    that variants are compared on the same seeds), plus the runs of ``priors``
    (:func:`merge_prior`), summarised (:func:`summarise`)."""
    rows = gather(pattern, seeds)
    if priors:
        rows = merge_prior(rows, priors, pattern, seeds)
    return summarise(rows)


def gather(pattern: str, seeds: Optional[Sequence[int]] = None) -> List[dict]:
    """``[{variant, runs}]``: the finished runs of each variant directory under ``pattern`` (a
    glob, or several separated by commas)."""
    rows = []
    for d in sorted({d for p in pattern.split(",") if p for d in glob.glob(p)}):
        runs = []
        for sd in sorted(glob.glob(os.path.join(d, "seed*"))):
            if seeds is not None and int(os.path.basename(sd)[4:]) not in seeds:
                continue
            run = RunDir(sd)
            if not (run.has_metrics() and run.has_config()):
                continue
            m, c = run.read_metrics(), run.read_config()
            runs.append({"seed": int(os.path.basename(sd)[4:]), "best_val_auc": m.get("best_val_auc"),
                         "test_auc": m.get("auc"), "best_epoch": m.get("best_epoch"),
                         "flags": dict(_flags((c.get("run_info") or {}).get("argv") or []),
                                       **{k: str(v) for k, v in ((c.get("run_info") or {}).get("loss_params")
                                                                 or {}).items()})})
        if runs:
            rows.append({"variant": os.path.relpath(d, ROOT) if d.startswith(ROOT) else d, "runs": runs})
    return rows


def variant_key(variant: str) -> str:
    """A variant's path below the (last) ``runs`` folder of its path: ``runs/X``, the ledger's
    ``results/runs/X`` and ``/abs/path/runs/X`` are the same variant ``X``."""
    parts = variant.replace(os.sep, "/").split("/")
    return "/".join(parts[len(parts) - parts[::-1].index("runs"):]) if "runs" in parts else variant


def merge_prior(rows: List[dict], priors: Sequence[str], pattern: str,
                seeds: Optional[Sequence[int]] = None) -> List[dict]:
    """Add to ``rows`` the runs of earlier tables (``priors``: this script's JSON files) whose
    variant matches ``pattern`` and whose seed no row of that variant has yet; each such run gets
    ``from`` = the JSON's path. Variants only in a prior table become rows of their own."""
    want = [variant_key(os.path.relpath(p, ROOT) if p.startswith(ROOT) else p) for p in pattern.split(",") if p]
    by_key = {variant_key(r["variant"]): r for r in rows}
    for path in priors:
        with open(path) as fh:
            prior = json.load(fh)
        for v in prior.get("variants", []):
            key = variant_key(v["variant"])
            if not any(fnmatch.fnmatch(key, w) for w in want):
                continue
            row = by_key.get(key)
            if row is None:
                row = by_key[key] = {"variant": v["variant"], "runs": []}
                rows.append(row)
            have = {r["seed"] for r in row["runs"]}
            for run in v["runs"]:
                if run["seed"] not in have and (seeds is None or run["seed"] in seeds):
                    row["runs"].append(dict(run, **{"from": path}))
            row["runs"].sort(key=lambda r: r["seed"])
    rows.sort(key=lambda r: variant_key(r["variant"]))
    return rows


def summarise(rows: List[dict]) -> List[dict]:
    """Per variant: the flags that differ, the seeds, mean ± std validation AUC, mean test AUC,
    and ``chosen`` (the highest mean validation AUC)."""
    rows = [r for r in rows if r["runs"]]
    if not rows:
        return rows
    # the flags that differ between variants (or between a variant and the flagfile defaults)
    keys = sorted({k for r in rows for run in r["runs"] for k in run["flags"]})
    for r in rows:
        f = r["runs"][0]["flags"]
        r["flags"] = {k: f.get(k) for k in keys if len({str(x["runs"][0]["flags"].get(k)) for x in rows}) > 1}
        vals = [x["best_val_auc"] for x in r["runs"]]
        tests = [x["test_auc"] for x in r["runs"]]
        r["seeds"] = [x["seed"] for x in r["runs"]]
        r["val_auc_mean"] = statistics.mean(vals)
        r["val_auc_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        r["test_auc_mean"] = statistics.mean(tests)
    best = max(rows, key=lambda r: r["val_auc_mean"])
    for r in rows:
        r["chosen"] = r is best
    return rows


def markdown(rows: List[dict], command: str, title: str) -> str:
    L = [f"# {title}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `{command}` from the runs' "
         "metrics.json and train_config.json. Chosen on the **validation** AUC of the kept epoch (mean "
         "over the seeds); the test AUC is listed for the record and was not used.", ""]
    prior = sorted({(run["from"], run["seed"]) for r in rows for run in r["runs"] if run.get("from")})
    for src in sorted({p for p, _ in prior}):
        per = {variant_key(r["variant"]): [x["seed"] for x in r["runs"] if x.get("from") == src] for r in rows}
        L.append(f"* from `{src}` (generated earlier from run directories no longer on this machine): "
                 + "; ".join(f"`{k}` seeds {v}" for k, v in per.items() if v))
    if prior:
        L.append("")
    L += [
         "| variant | flags that differ | seeds | best val AUC | test AUC | best epoch | chosen |",
         "|---|---|---|---:|---:|---|---|"]
    for r in rows:
        flags = ", ".join(f"--{k}={v}" for k, v in r["flags"].items() if v is not None) or "-"
        L.append(f"| `{r['variant']}` | {flags} | {r['seeds']} | {r['val_auc_mean']:.4f} ± {r['val_auc_std']:.4f} "
                 f"| {r['test_auc_mean']:.4f} | {[x['best_epoch'] for x in r['runs']]} | "
                 f"{'**yes**' if r['chosen'] else ''} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> List[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="glob(s, comma-separated) of variant directories (each holds seed*/)")
    ap.add_argument("--output", required=True, help="prefix of OUTPUT.md / OUTPUT.json")
    ap.add_argument("--title", default="Hyper-parameter sweep")
    ap.add_argument("--seeds", default="", help="comma list: only these seeds of every variant")
    ap.add_argument("--prior", default="", help="comma list of earlier tables' JSON whose per-seed runs "
                                                "count where no run directory has that seed")
    a = ap.parse_args(argv)
    rows = collect(a.runs, [int(x) for x in a.seeds.split(",") if x] or None,
                   [p for p in a.prior.split(",") if p])
    if not rows:
        raise SystemExit(f"no finished runs under {a.runs!r}")
    command = "python scripts/sweep_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(a.output + ".json", "w") as fh:
        json.dump({"command": command, "variants": rows}, fh, indent=1)
    with open(a.output + ".md", "w") as fh:
        fh.write(markdown(rows, command, a.title))
    print(markdown(rows, command, a.title))
    return rows


if __name__ == "__main__":
    main()
