"""Aggregate evaluated runs into a results table (mean ± std over seeds).

    python -m ccn.report --runs_glob='runs/synthetic/*/seed*' --base=tan \\
        --output=results/ccn_synthetic.md [--json=results/ccn_synthetic.json] [--layout=ccn]

Every number comes from the runs' own files: ``metrics.json`` (or ``metrics_<split>.json``),
``train_config.json`` (model, seed, command, data digest) and ``history.json`` (runtime).
Nothing is hard-coded. Runs are grouped by *run key* (``--model`` plus ``+aux`` for every extra
aux loss, e.g. ``din+aqcl``); for each group: number of seeds, mean ± sample std (ddof=1) of AUC,
GAUC, page AUC, LogLoss and per-activeness-group AUC, RelaImpr (AQCL Eq. 9) of the *mean* AUCs
against the base group, training time and throughput.

Layouts (``--layout``):

* ``ccn`` - CCN paper Table 2 order: Wide&Deep, DIN, SIM, DIHN, DIAN, TAN (w/o CM & TSI), TAN,
  CCN (w/o TSI), CCN (w/o L_S+), CCN (w/o L_S-), CCN. Default base: ``sim``.
* ``aqcl`` - AQCL paper Table 2: DIN, DropoutNet, DeepMCP, DMR, ICL, AQCL (all on DIN) with AUC and
  RelaImpr overall and per activeness group. Default base: ``din``.
* ``aqcl_backbones`` - AQCL Table 3: W&D, AQCL_W&D, DeepFM, AQCL_DeepFM, DIN, AQCL_DIN; RelaImpr of
  each AQCL row against its own backbone.
* ``all`` - every run key found, sorted.

Rows of the layout that have no runs are listed as "not run"; runs whose key is not in the
layout are listed after it, so nothing found is dropped.
"""
from __future__ import annotations

import glob
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import app, flags

from ccn import models
from ctrcore import metrics as metrics_lib

GROUPS = metrics_lib.GROUP_NAMES
LAYOUTS: Dict[str, List[Tuple[str, str]]] = {
    "ccn": [("wide_deep", "Wide&Deep"), ("din", "DIN"), ("sim", "SIM"), ("dihn", "DIHN"), ("dian", "DIAN"),
            ("tan_base", "TAN (w/o CM & TSI)"), ("tan", "TAN"), ("ccn_notsi", "CCN (w/o TSI)"),
            ("ccn_no_attraction", "CCN (w/o L_S+)"), ("ccn_no_repulsion", "CCN (w/o L_S-)"),
            ("ccn", "CCN")],
    "aqcl": [("din", "DIN"), ("din+dropoutnet", "DropoutNet"), ("din+deepmcp", "DeepMCP"),
             ("din+dmr", "DMR"), ("din+icl", "ICL"), ("din+aqcl", "AQCL")],
    "aqcl_backbones": [("wide_deep", "W&D"), ("wide_deep+aqcl", "AQCL_W&D"), ("deepfm", "DeepFM"),
                       ("deepfm+aqcl", "AQCL_DeepFM"), ("din", "DIN"), ("din+aqcl", "AQCL_DIN")],
}
DEFAULT_BASE = {"ccn": "sim", "aqcl": "din", "aqcl_backbones": None, "all": None}


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _read(path: str):
    with open(path) as fh:
        return json.load(fh)


def find_runs(runs_glob: str, split: str = "test", group_by: str = "run_key") -> Tuple[List[Dict[str, Any]], List[str]]:
    """Every run dir matched by ``runs_glob`` (comma-separated globs allowed).

    Returns ``(runs, skipped)``: each run ``{dir, key, seed, metrics, config, history}``; skipped
    lists ``"dir: reason"`` for matched dirs without an evaluation of ``split``.
    """
    fname = "metrics.json" if split == "test" else f"metrics_{split}.json"
    dirs = sorted({d for g in runs_glob.split(",") if g.strip() for d in glob.glob(g.strip())
                   if os.path.isdir(d)})
    runs, skipped = [], []
    for d in dirs:
        mpath = os.path.join(d, fname)
        if not os.path.exists(mpath):
            skipped.append(f"{d}: no {fname}")
            continue
        m = _read(mpath)
        cfg_path = os.path.join(d, "train_config.json")
        rec = _read(cfg_path) if os.path.exists(cfg_path) else {}
        hist_path = os.path.join(d, "history.json")
        hist = _read(hist_path) if os.path.exists(hist_path) else {}
        key = m.get("run_key") or rec.get("run_info", {}).get("run_key") or m.get("model", "?")
        if group_by == "dir":  # sweeps: one row per configuration directory (RUNS/<config>/seed<k>)
            key = os.path.basename(os.path.dirname(os.path.normpath(d)))
        seed = m.get("seed", rec.get("seed"))
        runs.append({"dir": d, "key": key, "seed": seed, "metrics": m, "record": rec, "history": hist})
    return runs, skipped


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------
def _num(v) -> float:
    return float("nan") if v is None else float(v)


def mean_std(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "n": len(vals)}


def trimmed_mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """The CCN paper's protocol (Sec. 4.1): repeat 5 times, drop the best and the worst value,
    average the rest. Defined for 3 or more values (one best and one worst dropped); else None."""
    vals = sorted(float(v) for v in values if v is not None and not math.isnan(float(v)))
    if len(vals) < 3:
        return None
    return float(np.mean(vals[1:-1]))


def aggregate(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``{run_key: {n_seeds, seeds, dirs, auc: {mean,std,n}, gauc, page_auc, logloss,
    groups: {g: {auc, gauc, n}}, runtime: {...}, commands, data}}``."""
    by_key: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        by_key.setdefault(r["key"], []).append(r)
    out = {}
    for key, rs in by_key.items():
        rs = sorted(rs, key=lambda r: (r["seed"] is None, r["seed"]))
        ms = [r["metrics"] for r in rs]
        g = {"n_seeds": len(rs), "seeds": [r["seed"] for r in rs], "dirs": [r["dir"] for r in rs]}
        for k in ("auc", "gauc", "page_auc", "logloss"):
            g[k] = mean_std([m.get(k) for m in ms])
        g["auc_per_seed"] = {r["seed"]: r["metrics"].get("auc") for r in rs}
        g["auc_trimmed"] = trimmed_mean([m.get("auc") for m in ms])
        g["n_examples"] = sorted({m.get("n") for m in ms if m.get("n") is not None})
        g["groups"] = {}
        for grp in GROUPS:
            gm = [(m.get("groups") or {}).get(grp, {}) for m in ms]
            g["groups"][grp] = {"auc": mean_std([x.get("auc") for x in gm]),
                                "gauc": mean_std([x.get("gauc") for x in gm]),
                                "n": sorted({x.get("n") for x in gm if x.get("n") is not None})}
        rts = [r["history"].get("runtime", {}) for r in rs]
        g["runtime"] = {k: mean_std([rt.get(k) for rt in rts])
                        for k in ("train_seconds", "wall_seconds", "steps", "examples_per_second",
                                  "median_steady_examples_per_second")}
        g["best_epoch"] = mean_std([m.get("best_epoch") for m in ms])
        g["best_val_auc"] = mean_std([m.get("best_val_auc") for m in ms])
        g["commands"] = sorted({r["record"].get("run_info", {}).get("command", "") for r in rs} - {""})
        g["data"] = sorted({json.dumps({k: (m.get("data") or {}).get(k) for k in
                                        ("source", "stats_sha256", "feature_spec_sha256")}, sort_keys=True)
                            for m in ms})
        g["data_dirs"] = sorted({m.get("data_dir", "") for m in ms})
        out[key] = g
    return out


def add_relaimpr(agg: Dict[str, Dict[str, Any]], base_of) -> None:
    """RelaImpr of each group's mean AUC (overall and per activeness group) vs its base."""
    for key, g in agg.items():
        base_key = base_of(key)
        b = agg.get(base_key) if base_key else None
        g["relaimpr_base"] = base_key if b else None
        if not b:
            g["relaimpr"] = None
            g["paired_vs_base"] = None
            continue
        g["paired_vs_base"] = metrics_lib.paired_wins(g["auc_per_seed"], b["auc_per_seed"])
        g["relaimpr"] = {"auc": metrics_lib.relaimpr(g["auc"]["mean"], b["auc"]["mean"]),
                         "gauc": metrics_lib.relaimpr(g["gauc"]["mean"], b["gauc"]["mean"]),
                         "groups": {grp: metrics_lib.relaimpr(g["groups"][grp]["auc"]["mean"],
                                                              b["groups"][grp]["auc"]["mean"])
                                    for grp in GROUPS}}


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def fmt_ms(ms: Dict[str, Any], digits: int = 4) -> str:
    if not ms or ms.get("mean") is None:
        return "-"
    s = f"{ms['mean']:.{digits}f}"
    if ms.get("std") is not None:
        s += f" ± {ms['std']:.{digits}f}"
    return s


def fmt_pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}%"


def fmt_time(ms: Dict[str, Any]) -> str:
    if not ms or ms.get("mean") is None:
        return "-"
    return f"{ms['mean']:.0f}s"


def ordered_rows(agg: Dict[str, Any], layout: str) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    if layout == "all":
        return [(k, models.display_name(k)) for k in sorted(agg)], []
    rows = list(LAYOUTS[layout])
    known = {k for k, _ in rows}
    extra = [(k, models.display_name(k)) for k in sorted(agg) if k not in known]
    return rows, extra


def render(agg: Dict[str, Any], layout: str, base: Optional[str], runs_glob: str, split: str,
           skipped: List[str], title: Optional[str] = None) -> str:
    rows, extra = ordered_rows(agg, layout)
    seeds = sorted({s for g in agg.values() for s in g["seeds"] if s is not None})
    data = sorted({d for g in agg.values() for d in g["data_dirs"]})
    sources = sorted({json.loads(d).get("source") or "?" for g in agg.values() for d in g["data"]})
    digests = sorted({json.loads(d).get("stats_sha256") or "?" for g in agg.values() for d in g["data"]})
    L = [f"# {title or 'Results'}", "",
         f"* generated by `python -m ccn.report --runs_glob='{runs_glob}' --layout={layout}"
         + (f" --base={base}" if base else "") + f"` on {time.strftime('%Y-%m-%d %H:%M')} from "
         f"{sum(g['n_seeds'] for g in agg.values())} evaluated runs",
         f"* dataset: {', '.join(f'`{d}`' for d in data) or '-'} (source {', '.join(sources) or '-'}; "
         f"stats digest {', '.join(digests) or '-'}), split `{split}`",
         f"* seeds: {seeds}; cells are mean ± sample std over the seeds of each row (n = #seeds)",
         "* AUC over all test examples; GAUC = per-user AUC weighted by impressions (users with both "
         "labels); page AUC = mean AUC within pages with both labels; "
         "RelaImpr = ((AUC - 0.5) / (AUC_base - 0.5) - 1) x 100% on the mean AUCs (AQCL Eq. 9); "
         f"'-' where the base's mean AUC is below {0.5 + metrics_lib.RELAIMPR_MIN_BASE_LIFT:.2f} "
         "(no lift over chance to relate to)",
         "* AUC trimmed: the CCN paper's protocol (mean after dropping each row's best and worst "
         "seed; needs 3 or more seeds); > base: on how many of the seeds both rows have run the row's "
         "AUC is above the base's AUC of the same seed",
         "* train time: training seconds (validation excluded) summed over a run's sessions, mean over "
         "seeds; ex/s: median over epochs of the training throughput without each epoch's first "
         "step (tracing), mean over seeds"]
    for d in data:  # the dataset's size, from its stats.json (when it is still there)
        sp = os.path.join(d, "stats.json")
        if os.path.exists(sp):
            st = _read(sp)
            ex, pg = st.get("examples") or {}, st.get("pages") or {}
            L.append(f"* `{d}`: examples train / valid / test {ex.get('train')} / {ex.get('valid')} / "
                     f"{ex.get('test')}; pages {pg.get('train')} / {pg.get('valid')} / {pg.get('test')}; "
                     f"users {st.get('users')}; vocabularies {st.get('vocab_sizes')}; clicked per page "
                     f"{st.get('avg_clicked_per_page')}; P_S+ {st.get('p_s_plus')}; input rows "
                     f"{st.get('rows_read')}, dead-lettered {st.get('rows_dead_letter')}")
    if len(digests) > 1:
        L.append(f"* **warning: the runs use {len(digests)} different datasets (stats digests "
                 f"{digests}); rows are not comparable**")
    if layout == "ccn":
        L.append("* DIHN / DIAN: intent label = a click on the trigger's category on the page (a proxy: "
                 "docs/method-baselines.md)")
    if base and base not in agg:
        L.append(f"* base `{base}` has no evaluated runs: no RelaImpr")
    L.append("")

    def row_cells(key, label):
        g = agg.get(key)
        if g is None:
            return None
        return g

    if layout in ("aqcl", "aqcl_backbones"):
        hdr = ["Model", "n", "AUC", "RelaImpr"]
        for grp in GROUPS:
            hdr += [f"{grp.replace('_', '-')} AUC", "RelaImpr"]
        hdr += ["GAUC", "LogLoss", "train time"]
        L += ["| " + " | ".join(hdr) + " |", "|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|"]
        for key, label in rows + extra:
            g = row_cells(key, label)
            if g is None:
                L.append(f"| {label} (`{key}`) | 0 | not run |" + " |" * (len(hdr) - 3))
                continue
            ri = g.get("relaimpr") or {}
            cells = [f"{label} (`{key}`)", str(g["n_seeds"]), fmt_ms(g["auc"]), fmt_pct(ri.get("auc"))]
            for grp in GROUPS:
                cells += [fmt_ms(g["groups"][grp]["auc"]), fmt_pct((ri.get("groups") or {}).get(grp))]
            cells += [fmt_ms(g["gauc"]), fmt_ms(g["logloss"]), fmt_time(g["runtime"]["train_seconds"])]
            L.append("| " + " | ".join(cells) + " |")
    else:
        hdr = ["Model", "n", "AUC", "AUC trimmed", "RelaImpr", "> base", "GAUC", "page AUC", "LogLoss"] + \
              [f"{grp.replace('_', '-')} AUC" for grp in GROUPS] + ["best epoch", "best val AUC", "train time", "ex/s"]
        L += ["| " + " | ".join(hdr) + " |", "|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|"]
        for key, label in rows + extra:
            g = row_cells(key, label)
            if g is None:
                L.append(f"| {label} (`{key}`) | 0 | not run |" + " |" * (len(hdr) - 3))
                continue
            ri = g.get("relaimpr") or {}
            eps = g["runtime"]["median_steady_examples_per_second"]
            if eps["mean"] is None:
                eps = g["runtime"]["examples_per_second"]
            pv = g.get("paired_vs_base")
            cells = [f"{label} (`{key}`)", str(g["n_seeds"]), fmt_ms(g["auc"]),
                     "-" if g["auc_trimmed"] is None else f"{g['auc_trimmed']:.4f}", fmt_pct(ri.get("auc")),
                     "-" if not pv or not pv["n"] or key == g.get("relaimpr_base") else f"{pv['wins']}/{pv['n']}",
                     fmt_ms(g["gauc"]), fmt_ms(g["page_auc"]), fmt_ms(g["logloss"])] + \
                    [fmt_ms(g["groups"][grp]["auc"]) for grp in GROUPS] + \
                    [fmt_ms(g["best_epoch"], 1), fmt_ms(g["best_val_auc"]), fmt_time(g["runtime"]["train_seconds"]),
                     "-" if eps["mean"] is None else f"{eps['mean']:.0f}"]
            L.append("| " + " | ".join(cells) + " |")
    L += ["", "RelaImpr bases: " + (", ".join(sorted({f"`{k}` vs `{g['relaimpr_base']}`" for k, g in agg.items()
                                                       if g.get("relaimpr_base")})) or "none"), ""]
    L += ["## Commands", ""]
    for key, label in rows + extra:
        g = agg.get(key)
        if g is None:
            continue
        L.append(f"* {label} (`{key}`, seeds {g['seeds']}):")
        for c in g["commands"]:
            L.append(f"  * `{c}`")
    if skipped:
        L += ["", "## Matched but not evaluated", ""] + [f"* {s}" for s in skipped]
    return "\n".join(L) + "\n"


def build_report(runs_glob: str, layout: str = "ccn", base: Optional[str] = None, split: str = "test",
                 title: Optional[str] = None, group_by: str = "run_key") -> Tuple[str, Dict[str, Any]]:
    """``group_by="dir"``: one row per configuration directory (sweeps whose runs share a run key)."""
    if layout not in LAYOUTS and layout != "all":
        raise ValueError(f"unknown --layout={layout!r}; choose one of {sorted(LAYOUTS) + ['all']}")
    if group_by not in ("run_key", "dir"):
        raise ValueError(f"unknown group_by={group_by!r} (run_key | dir)")
    runs, skipped = find_runs(runs_glob, split, group_by)
    if not runs:
        raise FileNotFoundError(f"no evaluated runs match {runs_glob!r} ({len(skipped)} without metrics)")
    agg = aggregate(runs)
    base = base if base is not None else DEFAULT_BASE.get(layout)
    if layout == "aqcl_backbones" and not base:
        add_relaimpr(agg, lambda k: k.split("+")[0] if "+" in k else None)
    else:
        add_relaimpr(agg, lambda k: base)
    md = render(agg, layout, base, runs_glob, split, skipped, title)
    return md, {"layout": layout, "base": base, "split": split, "runs_glob": runs_glob,
                "groups": agg, "skipped": skipped}


FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("runs_glob", None, "Glob(s) of run directories (comma-separated), e.g. "
                                           "'runs/synthetic/*/seed*'.")
    flags.DEFINE_string("base", None, "Run key of the RelaImpr base (default: sim for --layout=ccn, "
                                      "din for aqcl; each AQCL row's own backbone for aqcl_backbones).")
    flags.DEFINE_enum("layout", "ccn", sorted(LAYOUTS) + ["all"], "Row order / table format.")
    flags.DEFINE_string("output", None, "Markdown file to write (stdout if not given).")
    flags.DEFINE_string("json", None, "Also write the aggregated numbers as JSON here.")
    flags.DEFINE_string("split", "test", "Which evaluation to read (test -> metrics.json).")
    flags.DEFINE_string("title", None, "Title of the Markdown report.")
    flags.DEFINE_enum("group_by", "run_key", ["run_key", "dir"], "Rows: one per run key (model + aux "
                      "losses), or one per configuration directory RUNS/<config>/seed<k> (sweeps).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    if not FLAGS.runs_glob:
        print("ccn.report: --runs_glob is required", file=sys.stderr)
        sys.exit(2)
    try:
        md, data = build_report(FLAGS.runs_glob, FLAGS.layout, FLAGS.base, FLAGS.split, FLAGS.title,
                                FLAGS.group_by)
    except (FileNotFoundError, ValueError) as e:
        print(f"ccn.report: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.output:
        os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
        with open(FLAGS.output, "w") as fh:
            fh.write(md)
        print(f"wrote {FLAGS.output}")
    else:
        print(md)
    if FLAGS.json:
        os.makedirs(os.path.dirname(FLAGS.json) or ".", exist_ok=True)
        with open(FLAGS.json, "w") as fh:
            json.dump(metrics_lib.to_jsonable(data), fh, indent=1, sort_keys=True, allow_nan=False)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
