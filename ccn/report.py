"""Aggregate evaluated runs into a results table (mean ± std over seeds).

    python -m ccn.report --runs_glob='runs/synthetic/*/seed*' --base=tan \\
        --output=results/ccn_synthetic.md [--json=results/ccn_synthetic.json] [--layout=ccn]

Every number comes from the runs' own files: ``metrics.json`` (or ``metrics_<split>.json``),
``train_config.json`` (model, seed, command, data digest) and ``history.json`` (runtime).
Nothing is hard-coded. Runs are grouped by *run key* (``--model`` plus ``+aux`` for every extra
aux loss, e.g. ``din+aqcl``); for each group: number of seeds, mean ± sample std (ddof=1) of AUC,
GAUC, page AUC, LogLoss and per-activeness-group AUC, RelaImpr (AQCL Eq. 9) of the *mean* AUCs
against the base group, training time and throughput.

Layouts (``--layout``; the paper tables are data, ``ccn/tables.py`` and ``aqcl/tables.py``,
aggregated and rendered by :mod:`ctrcore.reporting`, as ``scripts/reproduce_aqcl.py`` does):

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

import dataclasses
import glob
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app, flags

from aqcl import tables as aqcl_tables
from ccn import models
from ccn import tables as ccn_tables
from ccn.cli import checked_call
from ctrcore import metrics as metrics_lib
from ctrcore import reporting
from ctrcore.rundir import RunDir

GROUPS = metrics_lib.GROUP_NAMES
#: ``--layout`` -> paper table (``all``: every run key found, sorted, in the CCN table's columns)
LAYOUTS: Dict[str, reporting.TableLayout] = {
    t.name: t for t in (ccn_tables.TABLE2, aqcl_tables.TABLE2, aqcl_tables.TABLE3)}


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
    fname = RunDir.metrics_name(split)
    dirs = sorted({d for g in runs_glob.split(",") if g.strip() for d in glob.glob(g.strip())
                   if os.path.isdir(d)})
    runs, skipped = [], []
    for d in dirs:
        run = RunDir(d)
        if not run.has_metrics(split):
            skipped.append(f"{d}: no {fname}")
            continue
        m = run.read_metrics(split)
        rec = run.read_config(default={})
        hist = run.read_history(default={})
        key = m.get("run_key") or rec.get("run_info", {}).get("run_key") or m.get("model", "?")
        if group_by == "dir":  # sweeps: one row per configuration directory (RUNS/<config>/seed<k>)
            key = os.path.basename(os.path.dirname(os.path.normpath(d)))
        seed = m.get("seed", rec.get("seed"))
        runs.append({"dir": d, "key": key, "seed": seed, "metrics": m, "record": rec, "history": hist})
    return runs, skipped


def _distinct(values) -> str:
    """One value, or the sorted distinct values of several runs as a list."""
    vals = sorted({json.dumps(v, sort_keys=True) for v in values})
    return vals[0] if len(vals) == 1 else "[" + ", ".join(vals) + "]"


def hyperparameters(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What the runs were trained with and how it was chosen: ``{"sources": [...], "training":
    {setting: [values]}, "loss": {run key: {param: [values]}}}``. ``loss`` holds the parameters of
    the aux losses a run used (``run_info.all_aux_losses``: ``<loss>_*`` of
    ``run_info.loss_params``); ``training`` the :data:`ccn.tables.TRAINING_SETTINGS` of
    ``train_config.json``."""
    sources = sorted({(r["record"].get("data") or r["metrics"].get("data") or {}).get("source") or "?"
                      for r in runs})
    training: Dict[str, list] = {}
    loss: Dict[str, Dict[str, list]] = {}
    for r in runs:
        cfg = r["record"].get("config") or {}
        for k in ccn_tables.TRAINING_SETTINGS:
            if k in cfg:
                training.setdefault(k, []).append(cfg[k])
        info = r["record"].get("run_info") or {}
        params = info.get("loss_params") or {}
        for aux in info.get("all_aux_losses") or []:
            for k, v in params.items():
                if k.startswith(aux + "_"):
                    loss.setdefault(r["key"], {}).setdefault(k, []).append(v)
    return {"sources": sources, "training": training, "loss": loss}


def merge_hyperparameters(hps: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One :func:`hyperparameters` record of several (e.g. one per log)."""
    out: Dict[str, Any] = {"sources": sorted({s for hp in hps for s in hp["sources"]}), "training": {}, "loss": {}}
    for hp in hps:
        for k, v in hp["training"].items():
            out["training"].setdefault(k, []).extend(v)
        for key, params in hp["loss"].items():
            for k, v in params.items():
                out["loss"].setdefault(key, {}).setdefault(k, []).extend(v)
    return out


def hyperparameter_lines(hp: Dict[str, Any]) -> List[str]:
    """The Markdown section "Hyperparameters: what was chosen, and on what" (:func:`hyperparameters`,
    :data:`ccn.tables.SEARCHED`)."""
    searched: Dict[str, tuple] = {}
    for src in hp["sources"]:
        searched.update(ccn_tables.SEARCHED.get(src, {}))

    def how(k, values):
        if k not in searched:
            return "not searched (the paper's value or the config default)"
        chosen, where = searched[k]
        differs = any(v != chosen for v in values)
        return (f"**not the chosen value {chosen}**; " if differs else "") + f"chosen on {where}"

    L = ["## Hyperparameters: what was chosen, and on what", "",
         f"Values as the runs recorded them (`train_config.json`; a list where runs differ), data "
         f"source {', '.join(hp['sources'])}; nothing was chosen on the test split."]
    for key in sorted(hp["loss"]):
        for k, values in sorted(hp["loss"][key].items()):
            L.append(f"* `{key}`: {k} = {_distinct(values)}: {how(k, values)}")
    fixed = [f"{k} = {_distinct(v)}" for k, v in hp["training"].items() if k not in searched]
    for k, values in hp["training"].items():
        if k in searched:
            L.append(f"* every row: {k} = {_distinct(values)}: {how(k, values)}")
    if fixed:
        L.append("* every row, fixed in the configs (not searched): " + ", ".join(fixed))
    return L + [""]


def table_of(layout: str, agg: Dict[str, Any]) -> Tuple[reporting.TableLayout, List[reporting.Row]]:
    """The paper table of ``--layout`` and the rows found outside it (``all``: every run key,
    sorted, in the CCN table's columns), labelled by ``ccn.models.display_name``."""
    if layout == "all":
        table = dataclasses.replace(ccn_tables.TABLE2, name="all", title="all runs", rows=(), base=None, note="")
    else:
        table = LAYOUTS[layout]
    known = set(table.keys)
    return table, [reporting.Row(k, models.display_name(k)) for k in sorted(agg) if k not in known]


def render(agg: Dict[str, Any], layout: str, base: Optional[str], runs_glob: str, split: str,
           skipped: List[str], title: Optional[str] = None, base_override: Optional[str] = None,
           hp: Optional[Dict[str, Any]] = None) -> str:
    """The Markdown report: what was read and how the cells are computed, the paper table
    (:func:`ctrcore.reporting.render_table`), the RelaImpr bases, every run's command.
    ``base``: the table's base as reported; ``base_override``: ``--base`` when given (every row
    against it)."""
    table, extra = table_of(layout, agg)
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
         f"'-' where the base's mean AUC is below {0.5 + reporting.RELAIMPR_MIN_BASE_LIFT:.2f} "
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
    at_cap = {k: g["convergence"]["at_cap_seeds"] for k, g in agg.items() if g["convergence"]["at_cap_seeds"]}
    if at_cap:
        L.append("* **not converged** (best epoch = epoch cap: still improving when the cap ended "
                 "training): " + "; ".join(f"`{k}` seeds {s}" for k, s in sorted(at_cap.items())))
    if table.note and not (base_override and table.base == reporting.OWN_BACKBONE):
        L.append(f"* {table.note}")
    if base and base not in agg:
        L.append(f"* base `{base}` has no evaluated runs: no RelaImpr")
    L.append("")
    L += reporting.render_table(table, agg, base=base_override, extra_rows=extra)
    L += ["", "RelaImpr bases: " + (", ".join(sorted({f"`{k}` vs `{g['relaimpr_base']}`" for k, g in agg.items()
                                                       if g.get("relaimpr_base")})) or "none"), ""]
    if hp is not None:
        L += hyperparameter_lines(hp)
    L += ["## Commands", ""]
    for row in list(table.rows) + extra:
        g = agg.get(row.key)
        if g is None:
            continue
        L.append(f"* {row.label} (`{row.key}`, seeds {g['seeds']}):")
        for c in g["commands"]:
            L.append(f"  * `{c}`")
    if skipped:
        L += ["", "## Matched but not evaluated", ""] + [f"* {s}" for s in skipped]
    return "\n".join(L) + "\n"


def build_report(runs_glob: str, layout: str = "ccn", base: Optional[str] = None, split: str = "test",
                 title: Optional[str] = None, group_by: str = "run_key") -> Tuple[str, Dict[str, Any]]:
    """``(markdown, data)`` over the runs matched by ``runs_glob``. ``base``: every row's RelaImpr
    base (default: the layout's, see the module docstring). ``group_by="dir"``: one row per
    configuration directory (sweeps whose runs share a run key)."""
    if layout not in LAYOUTS and layout != "all":
        raise ValueError(f"unknown --layout={layout!r}; choose one of {sorted(LAYOUTS) + ['all']}")
    if group_by not in ("run_key", "dir"):
        raise ValueError(f"unknown group_by={group_by!r} (run_key | dir)")
    runs, skipped = find_runs(runs_glob, split, group_by)
    if not runs:
        raise FileNotFoundError(f"no evaluated runs match {runs_glob!r} ({len(skipped)} without metrics)")
    agg = reporting.summarise(runs, GROUPS)
    table, _ = table_of(layout, agg)
    override = base
    base = base if base is not None else table.fixed_base
    reporting.add_comparisons(agg, lambda k: table.base_of(k, override), GROUPS)
    hp = hyperparameters(runs)
    md = render(agg, layout, base, runs_glob, split, skipped, title, override, hp)
    return md, {"layout": layout, "base": base, "split": split, "runs_glob": runs_glob,
                "groups": agg, "skipped": skipped, "hyperparameters": hp}


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
    md, data = checked_call(
        "ccn.report", argv, {"runs_glob": FLAGS.runs_glob},
        lambda: build_report(FLAGS.runs_glob, FLAGS.layout, FLAGS.base, FLAGS.split, FLAGS.title,
                             FLAGS.group_by),
        (FileNotFoundError, ValueError))
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
