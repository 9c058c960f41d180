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

The ledger (``--ledger``, default `results/runs`, committed): each finished run's record
(`ctrcore.rundir.RunDir.archive`: no weights) is copied to
`<ledger>/aqcl/<RUNS_DIR relative to the repository>/<name>/seed<k>`; a run in the ledger is not
trained again and the results are computed from the ledger, so that they outlive RUNS_DIR
(`--ledger=`: from RUNS_DIR only).

Finally (also with ``--report_only``) writes ``results/aqcl_beauty.json`` and ``.md``: per model
``auc_mean``, ``auc_std``, ``seeds``, per activeness group AUC means, and ``relaimpr`` (AQCL
Eq. 9) against DIN - all computed from the runs' ``metrics.json``, nothing hard-coded. The tables
are the AQCL paper's (``aqcl/tables.py``: their rows are also this driver's model list, run
``RUNS_DIR/<run key with + -> _>/seed<k>`` with ``configs/<that name>_beauty.flags``), aggregated
and rendered by ``ctrcore.reporting``, the code behind ``python -m ccn.report`` too.
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

from aqcl import tables
from ctrcore import reporting
from ctrcore.metrics import GROUP_NAMES as GROUPS
from ctrcore.rundir import RunDir, finished

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (table id in the results JSON, the paper table); a model's table is the first that has it
LAYOUTS = (("table2", tables.TABLE2), ("table3", tables.TABLE3), ("ablation", tables.FIG5_ALPHA))


def run_name(key: str) -> str:
    """Run directory / config name of a table row's run key (``din+aqcl`` -> ``din_aqcl``)."""
    return key.replace("+", "_")


def _models():
    """``(MODELS, RUN_KEY)`` from the paper tables: name -> (flagfile, display, table, is_aqcl:
    gets the searched alpha), and name -> the table rows' run key."""
    models: Dict[str, tuple] = {}
    keys: Dict[str, str] = {}
    for table, layout in LAYOUTS:
        for row in layout.rows:
            name = run_name(row.key)
            keys.setdefault(name, row.key)
            models.setdefault(name, (f"configs/{name}_beauty.flags", row.label, table, row.key.endswith("+aqcl")))
    return models, keys


MODELS, RUN_KEY = _models()
TABLE2, TABLE3, ABLATION = ([run_name(k) for k in layout.keys] for _, layout in LAYOUTS)


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
        return {"w1": float(b["w1"]), "w2": float(b["w2"]), "source": os.path.relpath(path, ROOT),
                "objective": b.get("objective"), "n_trials": b.get("n_complete")}
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
def _none_if_nan(v: Optional[float]) -> Optional[float]:
    return None if v is None or math.isnan(v) else v


def _vs(row: dict, base: dict) -> dict:
    """RelaImpr (None where undefined) and per-seed wins of a row's summary against a base's."""
    c = reporting.compare(row, base, GROUPS)
    return {"relaimpr": _none_if_nan(c["relaimpr"]["auc"]),
            "groups": {g: _none_if_nan(c["relaimpr"]["groups"][g]) for g in GROUPS},
            "wins": {"wins": c["paired"]["wins"], "n": c["paired"]["n"]}}


def summarise(runs_dir: str):
    """``(res, summaries)``: the results JSON's rows per model name (see :func:`collect`) and
    the :func:`ctrcore.reporting.summarise` summaries per run key the tables are rendered from."""
    records: List[dict] = []
    extra: Dict[str, dict] = {}
    for name in MODELS:
        d = os.path.join(runs_dir, name)
        if not os.path.isdir(d):
            continue
        per_seed = []
        for sd in sorted(os.listdir(d)):
            run = RunDir(os.path.join(d, sd))
            if sd.startswith("seed") and run.has_metrics():
                per_seed.append((int(sd[4:]), run.read_metrics(), run.path))
        if not per_seed:
            continue
        per_seed.sort(key=lambda t: t[0])
        alphas = []
        for _, _, rd in per_seed:
            if RunDir(rd).has_config():
                lp = (RunDir(rd).read_config().get("run_info") or {}).get("loss_params") or {}
                alphas.append({k: v for k, v in lp.items() if k.startswith("aqcl_")})
        hist_epochs, histories = [], {}
        for _, _, rd in per_seed:
            if RunDir(rd).has_history():
                h = RunDir(rd).read_history()
                histories[rd] = h
                hist_epochs.append({"best_epoch": (h.get("best") or {}).get("epoch"),
                                    "epochs_run": len(h.get("epochs") or []),
                                    "train_seconds": (h.get("runtime") or {}).get("train_seconds"),
                                    "wall_seconds": (h.get("runtime") or {}).get("wall_seconds")})
        records += [{"dir": rd, "key": RUN_KEY[name], "seed": s, "metrics": m, "record": {},
                     "history": histories.get(rd, {})} for s, m, rd in per_seed]
        extra[name] = {"per_seed": per_seed, "alphas": alphas, "runs": hist_epochs}
    summ = reporting.summarise(records, GROUPS)
    out: Dict[str, dict] = {}
    for name, x in extra.items():
        per_seed, alphas, sm = x["per_seed"], x["alphas"], summ[RUN_KEY[name]]
        flagfile, display, table, _ = MODELS[name]
        out[name] = {
            "display": display, "table": table, "flagfile": flagfile,
            "seeds": [s for s, _, _ in per_seed], "n_seeds": len(per_seed),
            "auc_mean": sm["auc"]["mean"], "auc_std": sm["auc"]["std"],
            "auc_per_seed": [m.get("auc") for _, m, _ in per_seed], "logloss_mean": sm["logloss"]["mean"],
            "groups": {g: {"auc_mean": sm["groups"][g]["auc"]["mean"], "auc_std": sm["groups"][g]["auc"]["std"],
                           "n": (per_seed[0][1].get("groups") or {}).get(g, {}).get("n")} for g in GROUPS},
            "loss_params": alphas[0] if alphas and len({json.dumps(a, sort_keys=True)
                                                        for a in alphas}) == 1 else alphas,
            "runs": x["runs"],
            "train_seconds_mean": sm["runtime"]["train_seconds"]["mean"],
            "best_epoch_mean": sm["best_epoch"]["mean"],
        }
    base = summ.get("din")
    for name, r in out.items():
        if base:
            v = _vs(summ[RUN_KEY[name]], base)
            r["wins_vs_din"], r["relaimpr"] = v["wins"], v["relaimpr"]
            for g in GROUPS:
                r["groups"][g]["relaimpr"] = v["groups"][g]
        else:
            r["relaimpr"] = None
    for row in tables.TABLE3.rows:  # Table 3: AQCL_X against its own backbone X
        r, base_key = out.get(run_name(row.key)), tables.TABLE3.base_of(row.key)
        if base_key and r and base_key in summ:
            v = _vs(summ[row.key], summ[base_key])
            r["wins_vs_backbone"], r["relaimpr_vs_backbone"] = v["wins"], v["relaimpr"]
            r["groups_relaimpr_vs_backbone"] = v["groups"]
    return out, summ


def collect(runs_dir: str) -> Dict[str, dict]:
    """Aggregate ``RUNS_DIR/<name>/seed*/metrics.json`` per model name: the results JSON's rows."""
    return summarise(runs_dir)[0]


def markdown(res: Dict[str, dict], meta: dict, summaries: Dict[str, dict]) -> str:
    """The Markdown report: the AQCL tables (``aqcl/tables.py``) rendered from ``summaries``,
    then the commands of ``res``'s models and the planned runs not finished."""
    L = ["# AQCL reproduction on Amazon Beauty", "",
         f"Generated {meta['generated']} by `scripts/reproduce_aqcl.py` from the runs' `metrics.json` "
         f"(test split) under `{meta.get('read_from') or meta['runs_dir']}`. AUC = mean over the seeds listed (± sample std); "
         "RelaImpr (AQCL Eq. 9) is computed from the mean AUCs against DIN; > base: on how many of the seeds both "
         "rows have run the row's AUC beats its base's of the same seed. Activeness groups: "
         f"history length thresholds {meta.get('activeness_thresholds')} from stats.json.", ""]
    if meta.get("alpha"):
        L.append(f"AQCL alpha = exp(-w1 (L/L_bar)^w2) with w1={meta['alpha']['w1']:.4g}, "
                 f"w2={meta['alpha']['w2']:.4g} from `{meta['alpha']['source']}`.")
    else:
        L.append("AQCL alpha: **not searched** (no alpha search best.json); the config's w1/w2 were used "
                 "(see loss_params in the JSON).")
    if meta.get("stats_sha256"):
        L.append(f"Data: `{meta.get('data_dir')}`, stats digest {', '.join(meta['stats_sha256'])} "
                 "(from the runs' metrics.json).")
    L.append("")
    L += searched_section(res, meta)
    for _, layout in LAYOUTS:
        L += reporting.render_section(layout, summaries, show_keys=False)
    L += paper_section(res)
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


def searched_section(res: Dict[str, dict], meta: dict) -> List[str]:
    """What was searched, and on what: alpha from the search's best.json, the AQCL loss settings
    of the runs as recorded in their train_config.json."""
    L = ["## Hyperparameters: what was searched, and on what", ""]
    a = meta.get("alpha")
    if a:
        L.append(f"* alpha = R(L) (Eq. 6): w1, w2 searched by `aqcl.search` "
                 f"({a.get('n_trials', '?')} trials, objective: {a.get('objective', '?')}, validation "
                 f"split), best trial from `{a['source']}`"
                 + (f"; the found curve: `{os.path.join(os.path.dirname(a['source']), 'alpha_curve.png')}`"
                    if os.path.exists(os.path.join(ROOT, os.path.dirname(a["source"]), "alpha_curve.png")) else "")
                 + ".")
    else:
        L.append("* alpha = R(L): **not searched**; the config's w1 / w2.")
    lp = (res.get("din_aqcl") or {}).get("loss_params")
    if isinstance(lp, dict) and lp:
        L.append("* the AQCL rows' other loss settings, as the runs recorded them: "
                 + ", ".join(f"{k}={v}" for k, v in sorted(lp.items()) if k not in ("aqcl_w1", "aqcl_w2"))
                 + "; of these w (aqcl_weight), the temperature (aqcl_tau) and the augmentation "
                 "(aqcl_mask_rate, aqcl_emb_dropout) were chosen on validation AUC, seed 0 "
                 "(docs/method.md 4.5), the rest are the paper's or the config defaults "
                 "(`configs/aqcl_beauty_common.flags`).")
    L += ["* every other setting (learning rate, L2, embedding size, MLPs, epochs with early stopping "
          "on validation AUC) is fixed in `configs/beauty_common.flags` for every row; nothing was "
          "chosen on the test split.", ""]
    return L


def _wins(w) -> str:
    return f"{w['wins']}/{w['n']}" if isinstance(w, dict) else "-"


def _order(res: Dict[str, dict], names: List[str], key: str) -> str:
    got = [n for n in names if n in res]
    return " > ".join(res[n]["display"] for n in sorted(got, key=lambda n: -res[n][key]))


def paper_section(res: Dict[str, dict]) -> List[str]:
    """Ours against the paper's Amazon numbers, row by row, and the targets met or missed."""
    rows = [n for n in MODELS if n in tables.PAPER_AMAZON_AUC and n in res]
    if not rows or "din" not in res:
        return []
    p = tables.PAPER_AMAZON_AUC
    L = ["## Against the paper (Amazon)", "",
         "RelaImpr against DIN for the Table 2 rows, against the row's own backbone for the AQCL rows "
         "of Table 3 (paper: Table 2 / Table 3, Amazon; the absolute AUCs differ with the negative "
         "sampling and split, docs/method-baselines.md).", "",
         "| Model | paper AUC | paper RelaImpr | our AUC | our RelaImpr | > base | same sign |",
         "|---|---:|---:|---:|---:|---:|---|"]

    def rel(a, b):
        return ((a - 0.5) / (b - 0.5) - 1.0) * 100.0

    verdicts = {}
    for n in rows:
        base = tables.BACKBONE_OF.get(n, "din" if n.startswith("din") else None)
        r = res[n]
        if base is None or n == base or base not in res:
            L.append(f"| {r['display']} | {p[n]:.4f} | - | {r['auc_mean']:.4f} | - | - | - |")
            continue
        ours = rel(r["auc_mean"], res[base]["auc_mean"])
        theirs = rel(p[n], p[base])
        wins = r.get("wins_vs_backbone") if base != "din" else r.get("wins_vs_din")
        verdicts[n] = ours
        L.append(f"| {r['display']} | {p[n]:.4f} | {theirs:+.2f}% | {r['auc_mean']:.4f} | {ours:+.2f}% "
                 f"| {_wins(wins)} | {'yes' if (ours > 0) == (theirs > 0) else '**no**'} |")
    L.append("")
    L += ["Targets (issue 14):", ""]
    if "din_aqcl" in verdicts:
        v = verdicts["din_aqcl"]
        L.append(f"* AQCL RelaImpr over DIN >= +6.24 % (the paper's): {v:+.2f}% -> "
                 + ("**met**" if v >= 6.24 else "**missed**"))
    trio = ["din_aqcl", "din_icl", "din"]
    if all(n in res for n in trio):
        got = _order(res, trio, "auc_mean")
        ok = res["din_aqcl"]["auc_mean"] > res["din_icl"]["auc_mean"] > res["din"]["auc_mean"]
        L.append(f"* the paper's order AQCL > ICL > DIN: ours {got} -> " + ("**met**" if ok else "**missed**"))
    for n in ("wide_deep_aqcl", "deepfm_aqcl"):
        if n in verdicts:
            L.append(f"* AQCL helps {res[tables.BACKBONE_OF[n]]['display']}: {verdicts[n]:+.2f}% "
                     f"({_wins(res[n].get('wins_vs_backbone'))} seeds above) -> "
                     + ("**met**" if verdicts[n] > 0 else "**missed**"))
    L += ["", "Where a target is missed, docs/method.md section 4 holds the experiments that bear on it "
          "(4.4: AQCL over the Dice DIN; 4.5: w, temperature and augmentation re-chosen on validation; "
          "4.6: Table 3).", ""]
    return L


def driver_args(args) -> str:
    """The driver's own arguments that decide what runs (for the Commands section)."""
    parts = [f"--seeds_table2={args.seeds_table2}", f"--seeds_table3={args.seeds_table3}",
             f"--seeds_ablation={args.seeds_ablation}"]
    if args.only:
        parts.append(f"--only={args.only}")
    if args.runs_dir != "out/beauty/runs":
        parts.append(f"--runs_dir={args.runs_dir}")
    if getattr(args, "ledger", "results/runs") != "results/runs":
        parts.append(f"--ledger={args.ledger}")
    if args.alpha_from:
        parts.append(f"--alpha_from={args.alpha_from}")
    if args.results != "results/aqcl_beauty":
        parts.append(f"--results={args.results}")
    parts += [f"--train_flag={f}" for f in args.train_flag]
    return shlex.join(parts)


def ledger_dir(args) -> str:
    """Where the ledger keeps ``args.runs_dir``'s runs ('' without a ledger)."""
    if not args.ledger:
        return ""
    runs = os.path.abspath(os.path.join(ROOT, args.runs_dir))
    rel = os.path.relpath(runs, ROOT)
    if rel.startswith(".."):  # outside the repository: its absolute path, below the ledger
        rel = runs.lstrip(os.sep)
    return os.path.join(ROOT, args.ledger, "aqcl", rel)


def write_results(runs_dir: str, out_prefix: str, planned: List[tuple], alpha: Optional[dict],
                  data_dir: str, driver: str = "", read_dir: str = "") -> dict:
    """The results JSON and Markdown from the runs under ``read_dir`` (the ledger's copy of
    ``runs_dir``; ``runs_dir`` itself when empty); ``runs_dir`` is where the runs trained."""
    train_dir, runs_dir = runs_dir, read_dir or runs_dir
    res, summaries = summarise(runs_dir)
    missing = [f"{n}/seed{s}" for n, s in planned
               if not RunDir(os.path.join(runs_dir, n, f"seed{s}")).has_metrics()]
    thresholds = None
    sp = os.path.join(data_dir, "stats.json")
    if os.path.exists(sp):
        with open(sp) as fh:
            thresholds = json.load(fh).get("activeness_thresholds")
    digests = sorted({(RunDir(os.path.join(runs_dir, n, f"seed{s}")).read_metrics().get("data") or {})
                      .get("stats_sha256") or "?" for n in res for s in res[n]["seeds"]})
    meta = {"generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "stats_sha256": digests,
            "runs_dir": os.path.relpath(train_dir, ROOT), "read_from": os.path.relpath(runs_dir, ROOT),
            "alpha": alpha, "missing": missing,
            "activeness_thresholds": thresholds, "data_dir": data_dir, "driver_args": driver}
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    with open(out_prefix + ".json", "w") as fh:
        json.dump({"meta": meta, "models": res}, fh, indent=1, sort_keys=True)
    with open(out_prefix + ".md", "w") as fh:
        fh.write(markdown(res, meta, summaries))
    return res


# ---------------------------------------------------------------------------------------------
def run_all(planned: List[tuple], args, alpha: Optional[dict]) -> List[tuple]:
    """Run (or skip) every planned run in order; returns the failed ones."""
    failed = []
    ledger = ledger_dir(args)
    for i, (name, seed) in enumerate(planned):
        run_dir = os.path.join(args.runs_dir, name, f"seed{seed}")
        cmd = command(name, seed, run_dir, alpha, args.train_flag)
        led = os.path.join(ledger, name, f"seed{seed}") if ledger else ""
        if finished(run_dir, led, archive=not args.dry_run):
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
        if rc != 0 or not RunDir(run_dir).has_metrics():
            log(f"    FAILED (exit {rc}, {dt:.0f}s); see {run_dir}/train.log")
            failed.append((name, seed))
        else:
            m = RunDir(run_dir).read_metrics()
            log(f"    test AUC {m.get('auc')}, logloss {m.get('logloss')} ({dt:.0f}s)")
            finished(run_dir, led)  # into the ledger
            write_results(args.runs_dir, args.results, args.planned, alpha, args.data_dir,
                          driver_args(args), ledger)
    return failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs_dir", default="out/beauty/runs")
    ap.add_argument("--ledger", default="results/runs",
                    help="where finished runs' records are archived and the results read from ('' = RUNS_DIR)")
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
    res = write_results(args.runs_dir, args.results, planned, alpha, args.data_dir, driver_args(args),
                        ledger_dir(args))
    log(f"wrote {args.results}.json / .md ({len(res)} models with results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
