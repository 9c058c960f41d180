#!/usr/bin/env python
"""Resumable driver of the AQCL reproduction on Amazon Beauty.

    python scripts/reproduce_aqcl.py [--dry_run] [--only=din,din_aqcl] [--runs_dir=out/beauty/runs]
    nohup python scripts/reproduce_aqcl.py > out/beauty/reproduce.log 2>&1 &

Runs, one ``python -m ccn.train`` subprocess at a time (background friendly: nothing is held in
this process), one result directory per run ``RUNS_DIR/<name>/seed<k>``:

* Table 2, Amazon block (``--seeds_table2``, paper: 5): DIN, DropoutNet, DeepMCP, DMR, ICL, AQCL
  (all on DIN);
* Table 3, Amazon column (``--seeds_table3``, paper's protocol: 3 here): W&D, AQCL_W&D, DeepFM,
  AQCL_DeepFM (DIN / AQCL_DIN come from Table 2);
* Fig. 5 right (``--seeds_ablation``, 3): AQCL on DIN with constant alpha in {0, 0.3, 0.6, 1}.

Order: DIN and DIN+AQCL first (seed by seed, interleaved), then the other Table 2 rows, Table 3,
the ablation. A run whose ``metrics.json`` exists is skipped, so re-running the same command
resumes (``ccn.train`` itself resumes an interrupted run from its ``backup/``). A failed run is
logged and the driver goes on.

AQCL runs get ``--aqcl_w1/--aqcl_w2`` from the alpha search's ``best.json`` when
``--alpha_from`` names one (``python -m aqcl.search --flagfile=configs/search_din_aqcl_beauty.flags``
writes ``out/beauty/search_din_aqcl/best.json``), else the config's values; the values each row
used are recorded in the results (``loss_params``; a list when seeds differ).

Finally (also with ``--report_only``) writes ``results/aqcl_beauty.json`` and ``.md``: per model
``auc_mean``, ``auc_std``, ``seeds``, per activeness group AUC means, and ``relaimpr`` (AQCL
Eq. 9) against DIN - all computed from the runs' ``metrics.json``, nothing hard-coded.
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ("non_active", "slightly_active", "highly_active")

# name -> (flagfile, display, table, is_aqcl)
MODELS = {
    "din": ("configs/din_beauty.flags", "DIN", "table2", False),
    "din_dropoutnet": ("configs/din_dropoutnet_beauty.flags", "DropoutNet", "table2", False),
    "din_deepmcp": ("configs/din_deepmcp_beauty.flags", "DeepMCP", "table2", False),
    "din_dmr": ("configs/din_dmr_beauty.flags", "DMR", "table2", False),
    "din_icl": ("configs/din_icl_beauty.flags", "ICL", "table2", False),
    "din_aqcl": ("configs/din_aqcl_beauty.flags", "AQCL", "table2", True),
    "wide_deep": ("configs/wide_deep_beauty.flags", "W&D", "table3", False),
    "wide_deep_aqcl": ("configs/wide_deep_aqcl_beauty.flags", "AQCL_W&D", "table3", True),
    "deepfm": ("configs/deepfm_beauty.flags", "DeepFM", "table3", False),
    "deepfm_aqcl": ("configs/deepfm_aqcl_beauty.flags", "AQCL_DeepFM", "table3", True),
    "din_aqcl_alpha0": ("configs/din_aqcl_alpha0_beauty.flags", "AQCL alpha=0", "ablation", False),
    "din_aqcl_alpha0.3": ("configs/din_aqcl_alpha0.3_beauty.flags", "AQCL alpha=0.3", "ablation", False),
    "din_aqcl_alpha0.6": ("configs/din_aqcl_alpha0.6_beauty.flags", "AQCL alpha=0.6", "ablation", False),
    "din_aqcl_alpha1": ("configs/din_aqcl_alpha1_beauty.flags", "AQCL alpha=1", "ablation", False),
}
TABLE2 = ["din", "din_dropoutnet", "din_deepmcp", "din_dmr", "din_icl", "din_aqcl"]
TABLE3 = ["wide_deep", "wide_deep_aqcl", "deepfm", "deepfm_aqcl", "din", "din_aqcl"]
ABLATION = ["din_aqcl_alpha0", "din_aqcl_alpha0.3", "din_aqcl_alpha0.6", "din_aqcl_alpha1", "din_aqcl"]


def plan(seeds_table2: int, seeds_table3: int, seeds_ablation: int) -> List[tuple]:
    """Ordered ``(name, seed)`` list (see the module docstring)."""
    runs: List[tuple] = []
    for s in range(seeds_table2):  # headline rows first, interleaved by seed
        runs += [("din", s), ("din_aqcl", s)]
    for s in range(seeds_table2):
        runs += [(m, s) for m in TABLE2 if m not in ("din", "din_aqcl")]
    for s in range(seeds_table3):
        runs += [(m, s) for m in ("wide_deep", "wide_deep_aqcl", "deepfm", "deepfm_aqcl")]
    for s in range(seeds_ablation):
        runs += [(m, s) for m in ABLATION if m != "din_aqcl"]
    return runs


def selected(name: str, only: Optional[List[str]]) -> bool:
    return not only or any(fnmatch.fnmatchcase(name, pat) for pat in only)


def alpha_params(path: Optional[str]) -> Optional[Dict[str, float]]:
    if path and os.path.exists(path):
        with open(path) as fh:
            b = json.load(fh)
        return {"w1": float(b["w1"]), "w2": float(b["w2"]), "source": os.path.relpath(path, ROOT)}
    return None


def command(name: str, seed: int, run_dir: str, alpha: Optional[dict], extra: List[str],
            python: str = sys.executable) -> List[str]:
    flagfile, _, _, is_aqcl = MODELS[name]
    cmd = [python, "-m", "ccn.train", f"--flagfile={flagfile}", f"--seed={seed}",
           f"--model_dir={run_dir}"]
    if is_aqcl and alpha:
        cmd += [f"--aqcl_w1={alpha['w1']!r}", f"--aqcl_w2={alpha['w2']!r}"]
    return cmd + list(extra)


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%Y-%m-%d %H:%M:%S}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------
def relaimpr(auc: Optional[float], base: Optional[float]) -> Optional[float]:
    """AQCL Eq. 9 in percent (``ctrcore.metrics.relaimpr``), None where it is undefined."""
    from ctrcore import metrics as metrics_lib  # imports TensorFlow: only when reporting

    v = metrics_lib.relaimpr(auc, base)
    return None if math.isnan(v) else v


def _mean_std(xs: List[float]):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def paired_wins(r: dict, base: dict) -> dict:
    """On how many of the seeds both rows have run the row's AUC beats the base's (same seed)."""
    from ctrcore import metrics as metrics_lib  # imports TensorFlow: only when reporting

    w = metrics_lib.paired_wins(dict(zip(r["seeds"], r["auc_per_seed"])),
                                dict(zip(base["seeds"], base["auc_per_seed"])))
    return {"wins": w["wins"], "n": w["n"]}


def collect(runs_dir: str) -> Dict[str, dict]:
    """Aggregate ``RUNS_DIR/<name>/seed*/metrics.json`` per model name."""
    out: Dict[str, dict] = {}
    for name in MODELS:
        d = os.path.join(runs_dir, name)
        if not os.path.isdir(d):
            continue
        per_seed = []
        for sd in sorted(os.listdir(d)):
            p = os.path.join(d, sd, "metrics.json")
            if sd.startswith("seed") and os.path.exists(p):
                with open(p) as fh:
                    per_seed.append((int(sd[4:]), json.load(fh), os.path.join(d, sd)))
        if not per_seed:
            continue
        per_seed.sort(key=lambda t: t[0])
        aucs = [m.get("auc") for _, m, _ in per_seed]
        am, asd = _mean_std(aucs)
        lm, _ = _mean_std([m.get("logloss") for _, m, _ in per_seed])
        groups = {}
        for g in GROUPS:
            gm, gsd = _mean_std([(m.get("groups") or {}).get(g, {}).get("auc") for _, m, _ in per_seed])
            groups[g] = {"auc_mean": gm, "auc_std": gsd,
                         "n": (per_seed[0][1].get("groups") or {}).get(g, {}).get("n")}
        alphas = []
        for _, _, rd in per_seed:
            cfgp = os.path.join(rd, "train_config.json")
            if os.path.exists(cfgp):
                with open(cfgp) as fh:
                    lp = (json.load(fh).get("run_info") or {}).get("loss_params") or {}
                alphas.append({k: lp.get(k) for k in ("aqcl_w1", "aqcl_w2", "aqcl_const_alpha",
                                                       "aqcl_weight") if k in lp})
        hist_epochs = []
        for _, _, rd in per_seed:
            hp = os.path.join(rd, "history.json")
            if os.path.exists(hp):
                with open(hp) as fh:
                    h = json.load(fh)
                hist_epochs.append({"best_epoch": (h.get("best") or {}).get("epoch"),
                                    "epochs_run": len(h.get("epochs") or []),
                                    "train_seconds": (h.get("runtime") or {}).get("train_seconds"),
                                    "wall_seconds": (h.get("runtime") or {}).get("wall_seconds")})
        flagfile, display, table, _ = MODELS[name]
        out[name] = {
            "display": display, "table": table, "flagfile": flagfile,
            "seeds": [s for s, _, _ in per_seed], "n_seeds": len(per_seed),
            "auc_mean": am, "auc_std": asd, "auc_per_seed": aucs, "logloss_mean": lm,
            "groups": groups, "loss_params": alphas[0] if alphas and len({json.dumps(a, sort_keys=True)
                                                                          for a in alphas}) == 1 else alphas,
            "runs": hist_epochs,
            "train_seconds_mean": _mean_std([r.get("train_seconds") for r in hist_epochs])[0],
            "best_epoch_mean": _mean_std([r.get("best_epoch") for r in hist_epochs])[0],
        }
    base = out.get("din")
    for name, r in out.items():
        if base:
            r["wins_vs_din"] = paired_wins(r, base)
            r["relaimpr"] = relaimpr(r["auc_mean"], base["auc_mean"])
            for g in GROUPS:
                r["groups"][g]["relaimpr"] = relaimpr(r["groups"][g]["auc_mean"],
                                                      base["groups"][g]["auc_mean"])
        else:
            r["relaimpr"] = None
    for bb in ("wide_deep", "deepfm", "din"):  # Table 3: AQCL_X against its own backbone X
        r, b = out.get(f"{bb}_aqcl"), out.get(bb)
        if r and b:
            r["wins_vs_backbone"] = paired_wins(r, b)
            r["relaimpr_vs_backbone"] = relaimpr(r["auc_mean"], b["auc_mean"])
            r["groups_relaimpr_vs_backbone"] = {g: relaimpr(r["groups"][g]["auc_mean"], b["groups"][g]["auc_mean"])
                                                for g in GROUPS}
    return out


def _f(v, nd=4):
    return "-" if v is None else f"{v:.{nd}f}"


def _p(v):
    return "-" if v is None else f"{v:+.2f}%"


def markdown(res: Dict[str, dict], meta: dict) -> str:
    L = ["# AQCL reproduction on Amazon Beauty", "",
         f"Generated {meta['generated']} by `scripts/reproduce_aqcl.py` from the runs' `metrics.json` "
         f"(test split) under `{meta['runs_dir']}`. AUC = mean over the seeds listed (± sample std); "
         "RelaImpr (AQCL Eq. 9) is computed from the mean AUCs against DIN; > base: on how many of the seeds both "
         "rows have run the row's AUC beats its base's of the same seed. Activeness groups: "
         f"history length thresholds {meta.get('activeness_thresholds')} from stats.json.", ""]
    if meta.get("alpha"):
        L.append(f"AQCL alpha = exp(-w1 (L/L_bar)^w2) with w1={meta['alpha']['w1']:.4g}, "
                 f"w2={meta['alpha']['w2']:.4g} from `{meta['alpha']['source']}`.")
    else:
        L.append("AQCL alpha: **not searched** (no alpha search best.json); the config's w1/w2 were used "
                 "(see loss_params in the JSON).")
    L.append("")

    def block(title, names, own_backbone=False):
        """own_backbone: RelaImpr of each AQCL_X row against X (X rows are the bases: '-')."""
        rows = [n for n in names if n in res]
        L.extend([f"## {title}", ""])
        if not rows:
            L.extend(["(no finished runs yet)", ""])
            return
        if own_backbone:
            L.extend(["RelaImpr of each AQCL row against its own backbone (AQCL_W&D vs W&D, AQCL_DeepFM "
                      "vs DeepFM, AQCL vs DIN); the backbone rows are the bases.", ""])
        L.append("| Model | seeds | AUC | RelaImpr | > base | Non-active AUC | RelaImpr | Slightly-active AUC | "
                 "RelaImpr | Highly-active AUC | RelaImpr | best epoch | train time |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for n in rows:
            r = res[n]
            if own_backbone:
                ri = r.get("relaimpr_vs_backbone")
                gri = r.get("groups_relaimpr_vs_backbone") or {}
                w = r.get("wins_vs_backbone")
            else:
                ri, gri = r.get("relaimpr"), {g: r["groups"][g].get("relaimpr") for g in GROUPS}
                w = r.get("wins_vs_din") if n != "din" else None
            cells = [r["display"], str(r["n_seeds"]), f"{_f(r['auc_mean'])} ± {_f(r['auc_std'])}", _p(ri),
                     f"{w['wins']}/{w['n']}" if w else "-"]
            for g in GROUPS:
                cells += [_f(r["groups"][g]["auc_mean"]), _p(gri.get(g))]
            cells += [_f(r.get("best_epoch_mean"), 1),
                      "-" if r.get("train_seconds_mean") is None else f"{r['train_seconds_mean']:.0f}s"]
            L.append("| " + " | ".join(cells) + " |")
        L.append("")

    block("Table 2 (Amazon block): regularisers on DIN", TABLE2)
    block("Table 3 (Amazon column): AQCL on other backbones", TABLE3, own_backbone=True)
    block("Fig. 5 right: constant alpha vs alpha-adaptation (AQCL on DIN)", ABLATION)
    driver = " ".join(["python scripts/reproduce_aqcl.py"] + ([meta["driver_args"]] if meta.get("driver_args") else []))
    L.extend(["## Commands", "", f"Driver (resumable; skips runs that have a metrics.json): `{driver}`. "
              "Each run, one per model and seed (train time: training seconds without validation, mean "
              "over seeds; best epoch: the epoch whose validation AUC was kept):", ""])
    for n in [n for n in MODELS if n in res]:
        L.append(f"* {res[n]['display']} (`{n}`, seeds {res[n]['seeds']}): "
                 f"`python -m ccn.train --flagfile={res[n]['flagfile']} --seed=S "
                 f"--model_dir={meta['runs_dir']}/{n}/seedS`")
    L.append("")
    missing = meta.get("missing") or []
    if missing:
        L.extend(["## Not finished", "", f"{len(missing)} planned runs have no metrics.json yet: "
                  + ", ".join(missing), ""])
    return "\n".join(L) + "\n"


def driver_args(args) -> str:
    """The driver's own arguments that decide what runs (for the Commands section)."""
    parts = [f"--seeds_table2={args.seeds_table2}", f"--seeds_table3={args.seeds_table3}",
             f"--seeds_ablation={args.seeds_ablation}"]
    if args.runs_dir != "out/beauty/runs":
        parts.append(f"--runs_dir={args.runs_dir}")
    if args.alpha_from:
        parts.append(f"--alpha_from={args.alpha_from}")
    if args.results != "results/aqcl_beauty":
        parts.append(f"--results={args.results}")
    parts += [f"--train_flag={f}" for f in args.train_flag]
    return shlex.join(parts)


def write_results(runs_dir: str, out_prefix: str, planned: List[tuple], alpha: Optional[dict],
                  data_dir: str, driver: str = "") -> dict:
    res = collect(runs_dir)
    missing = [f"{n}/seed{s}" for n, s in planned
               if not os.path.exists(os.path.join(runs_dir, n, f"seed{s}", "metrics.json"))]
    thresholds = None
    sp = os.path.join(data_dir, "stats.json")
    if os.path.exists(sp):
        with open(sp) as fh:
            thresholds = json.load(fh).get("activeness_thresholds")
    meta = {"generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "runs_dir": os.path.relpath(runs_dir, ROOT), "alpha": alpha, "missing": missing,
            "activeness_thresholds": thresholds, "data_dir": data_dir, "driver_args": driver}
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    with open(out_prefix + ".json", "w") as fh:
        json.dump({"meta": meta, "models": res}, fh, indent=1, sort_keys=True)
    with open(out_prefix + ".md", "w") as fh:
        fh.write(markdown(res, meta))
    return res


# ---------------------------------------------------------------------------------------------
def run_all(planned: List[tuple], args, alpha: Optional[dict]) -> List[tuple]:
    """Run (or skip) every planned run in order; returns the failed ones."""
    failed = []
    for i, (name, seed) in enumerate(planned):
        run_dir = os.path.join(args.runs_dir, name, f"seed{seed}")
        cmd = command(name, seed, run_dir, alpha, args.train_flag)
        if os.path.exists(os.path.join(run_dir, "metrics.json")):
            log(f"[{i + 1}/{len(planned)}] {name} seed {seed}: done, skipped")
            continue
        if args.dry_run:
            print(shlex.join(cmd), flush=True)
            continue
        os.makedirs(run_dir, exist_ok=True)
        log(f"[{i + 1}/{len(planned)}] {name} seed {seed}: {shlex.join(cmd)}")
        t0 = time.time()
        with open(os.path.join(run_dir, "train.log"), "a") as fh:
            fh.write(f"$ {shlex.join(cmd)}\n")
            fh.flush()
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
        dt = time.time() - t0
        if rc != 0 or not os.path.exists(os.path.join(run_dir, "metrics.json")):
            log(f"    FAILED (exit {rc}, {dt:.0f}s); see {run_dir}/train.log")
            failed.append((name, seed))
        else:
            with open(os.path.join(run_dir, "metrics.json")) as fh:
                m = json.load(fh)
            log(f"    test AUC {m.get('auc')}, logloss {m.get('logloss')} ({dt:.0f}s)")
            write_results(args.runs_dir, args.results, args.planned, alpha, args.data_dir,
                          driver_args(args))
    return failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs_dir", default="out/beauty/runs")
    ap.add_argument("--data_dir", default="out/beauty/data", help="only for stats.json in the report")
    ap.add_argument("--results", default="results/aqcl_beauty", help="output prefix (.json / .md)")
    ap.add_argument("--alpha_from", default="",
                    help="alpha search best.json (e.g. out/beauty/search_din_aqcl/best.json) whose "
                         "w1/w2 every AQCL run gets; default: the config's w1/w2. Use a separate "
                         "--runs_dir per alpha setting so seeds of one row never mix settings.")
    ap.add_argument("--seeds_table2", type=int, default=5)
    ap.add_argument("--seeds_table3", type=int, default=3)
    ap.add_argument("--seeds_ablation", type=int, default=3)
    ap.add_argument("--only", default="", help="comma list of model-name globs (e.g. din,din_aqcl*)")
    ap.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--report_only", action="store_true", help="only (re)write the results files")
    ap.add_argument("--retries", type=int, default=1,
                    help="passes re-running the failed runs after the first pass")
    ap.add_argument("--train_flag", action="append", default=[],
                    help="extra ccn.train flag for every run (repeatable), e.g. --train_flag=--epochs=2")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    only = [p.strip() for p in args.only.split(",") if p.strip()] or None
    planned = [(n, s) for n, s in plan(args.seeds_table2, args.seeds_table3, args.seeds_ablation)
               if selected(n, only)]
    alpha = alpha_params(args.alpha_from)
    args.planned = planned
    if not args.report_only:
        log(f"{len(planned)} runs planned; alpha: "
            f"{'w1=%.4g w2=%.4g from %s' % (alpha['w1'], alpha['w2'], alpha['source']) if alpha else 'config defaults (no search best.json)'}")
        failed = run_all(planned, args, alpha)
        for attempt in range(args.retries):
            if not failed or args.dry_run:
                break
            log(f"retry pass {attempt + 1}/{args.retries}: {len(failed)} failed runs "
                "(ccn.train resumes them from their backup)")
            failed = run_all(failed, args, alpha)
        if failed:
            log(f"{len(failed)} runs failed: " + ", ".join(f"{n}/seed{s}" for n, s in failed))
    if args.dry_run:
        return 0
    res = write_results(args.runs_dir, args.results, planned, alpha, args.data_dir, driver_args(args))
    log(f"wrote {args.results}.json / .md ({len(res)} models with results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
