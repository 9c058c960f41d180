#!/usr/bin/env python
"""How close do trained models come to the synthetic log's *true* click probabilities, across
pages and within them? (The question behind CCN's higher AUC but lower page AUC than TAN.)

    python scripts/synthetic_truth_analysis.py --runs_glob='runs/synthetic/tan/seed*,runs/synthetic/ccn/seed*' \\
        --output=results/synthetic_truth_analysis

The synthetic generator is deterministic, so its hidden truth (``_p_click`` per exposure, and
whether the page's entry was driven by the trigger) is regenerated here from the same
``--rows`` / ``--seed`` as the log and joined to the test split on (page_id, item_id). For the
truth itself (the oracle) and for every run's test predictions this reports:

* ``auc`` / ``page_auc``: as in ccn.evaluate (page AUC = mean AUC within pages with both labels);
* ``corr_between``: Pearson correlation of the page-mean predicted logit with the page-mean true
  logit (how well the model ranks pages/users: what the overall AUC also rewards);
* ``corr_within``: Pearson correlation of the within-page deviations (predicted logit minus its
  page mean vs true logit minus its page mean), over pages with 2+ test items: what page AUC
  rewards;
* the same two split by the page's entry type (trigger-driven or not).

Writes ``OUTPUT.json`` and ``OUTPUT.md`` (per run, and mean ± std per model).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _logit(p, eps=1e-6):
    import numpy as np

    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def decomposition(page, y_true_logit, y_pred_logit) -> dict:
    """Between-page and within-page Pearson correlations of predicted vs true logits."""
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({"page": page, "t": y_true_logit, "p": y_pred_logit})
    g = df.groupby("page")
    means = g[["t", "p"]].transform("mean")
    counts = g["t"].transform("size")
    dev = df[counts >= 2]
    dm = means[counts >= 2]
    pm = g[["t", "p"]].mean()
    return {"corr_between": float(np.corrcoef(pm["t"], pm["p"])[0, 1]),
            "corr_within": float(np.corrcoef(dev["t"] - dm["t"], dev["p"] - dm["p"])[0, 1]),
            "pages": int(len(pm)), "pages_2plus": int(dev["page"].nunique())}


def test_predictions(model_dir: str):
    """``(page_id, item_id, label, prob)`` arrays of the test split for a run (file order)."""
    import numpy as np

    from ccn import evaluate
    from ctrcore.data import make_dataset

    model, spec, _, record = evaluate.rebuild(model_dir)
    cols = {"page_id": [], "item_id": [], "label": [], "prob": []}
    for b in make_dataset(record["config"]["data_dir"], "test", 4096, spec=spec, shuffle=False,
                          deterministic=True):
        cols["prob"].append(model(b, training=False)["probabilities"].numpy())
        for k, name in (("page_id", "page_id"), ("item_id", "item_id"), ("label", spec.label)):
            cols[k].append(b[name].numpy())
    out = {k: np.concatenate(v) for k, v in cols.items()}
    for k in ("page_id", "item_id"):
        out[k] = np.array([x.decode() for x in out[k]])
    return out


def block(df, pred_col: str) -> dict:
    from ctrcore import metrics as M

    res = {"auc": M.auc(df["label"].values, df[pred_col].values),
           "page_auc": M.page_auc(df["label"].values, df[pred_col].values, df["page_id"].values)}
    res.update(decomposition(df["page_id"].values, _logit(df["_p_click"].values), _logit(df[pred_col].values)))
    for name, sub in (("trigger_entry", df[df["_entry_by_trigger"]]), ("app_entry", df[~df["_entry_by_trigger"]])):
        d = decomposition(sub["page_id"].values, _logit(sub["_p_click"].values), _logit(sub[pred_col].values))
        res[name] = {"corr_between": d["corr_between"], "corr_within": d["corr_within"],
                     "page_auc": M.page_auc(sub["label"].values, sub[pred_col].values, sub["page_id"].values)}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs_glob", required=True, help="comma-separated globs of run directories")
    ap.add_argument("--rows", type=int, default=100_000, help="the synthetic log's --rows")
    ap.add_argument("--seed", type=int, default=0, help="the synthetic log's --seed")
    ap.add_argument("--output", default="results/synthetic_truth_analysis")
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    import numpy as np
    import pandas as pd

    from ctrcore import reporting
    from ctrcore.rundir import RunDir
    from pipelines import synthetic

    truth = synthetic.generate(a.rows, a.seed, with_truth=True)[["page_id", "item_id", "clicked", "_p_click",
                                                                 "_entry_by_trigger"]]
    runs = sorted({d for g in a.runs_glob.split(",") for d in glob.glob(g.strip())
                   if RunDir(d).has_metrics()})
    if not runs:
        raise SystemExit(f"no evaluated runs match {a.runs_glob!r}")
    per_run, oracle = [], None
    for d in runs:
        pred = pd.DataFrame(test_predictions(d))
        df = pred.merge(truth, on=["page_id", "item_id"], how="left", validate="many_to_one")
        missing = int(df["_p_click"].isna().sum())
        if missing:
            raise SystemExit(f"{d}: {missing} test examples have no synthetic truth: is the log "
                             f"--rows={a.rows} --seed={a.seed}?")
        if not (df["label"].values == df["clicked"].values).all():
            raise SystemExit(f"{d}: labels differ from the regenerated log's clicks (wrong --rows/--seed?)")
        if oracle is None:
            oracle = dict(block(df, "_p_click"), n=int(len(df)))
        rec = dict(block(df, "prob"), run=d, model=RunDir(d).read_metrics()["model"])
        per_run.append(rec)
        print(json.dumps({k: rec[k] for k in ("run", "auc", "page_auc", "corr_between", "corr_within")}), flush=True)
    keys = ("auc", "page_auc", "corr_between", "corr_within")
    models = {}
    for m in dict.fromkeys(r["model"] for r in per_run):
        rs = [r for r in per_run if r["model"] == m]
        models[m] = {"n_runs": len(rs)}
        for k in keys:
            v = [r[k] for r in rs]
            agg = reporting.mean_std(v)
            models[m][k] = {"mean": agg["mean"], "std": agg["std"]}
        for e in ("trigger_entry", "app_entry"):
            models[m][e] = {k: float(np.mean([r[e][k] for r in rs])) for k in ("corr_between", "corr_within", "page_auc")}
    meta = {"command": "python scripts/synthetic_truth_analysis.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "generated": time.strftime("%Y-%m-%d %H:%M"), "rows": a.rows, "seed": a.seed}
    with open(a.output + ".json", "w") as fh:
        json.dump({"meta": meta, "oracle": oracle, "models": models, "runs": per_run}, fh, indent=1)

    ms = reporting.fmt_ms

    L = ["# Trained models vs the synthetic truth (test split)", "",
         f"Generated {meta['generated']} by `{meta['command']}`. Truth: the generator's `_p_click` "
         f"(log --rows={a.rows} --seed={a.seed}), joined on (page_id, item_id). corr = Pearson "
         "correlation of predicted vs true logits: *between* pages (page means) and *within* pages "
         "(deviations from the page mean, pages with 2+ test items). Columns per entry type split the "
         "pages by whether the generator opened them from the user's interests (trigger-driven).", "",
         "| Model | runs | AUC | page AUC | corr between | corr within | within, trigger-driven | "
         "within, app-driven | page AUC trigger-driven | page AUC app-driven |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
         f"| truth (`_p_click`) | - | {oracle['auc']:.4f} | {oracle['page_auc']:.4f} | 1 | 1 | 1 | 1 | "
         f"{oracle['trigger_entry']['page_auc']:.4f} | {oracle['app_entry']['page_auc']:.4f} |"]
    for m, s in models.items():
        L.append(f"| {m} | {s['n_runs']} | {ms(s['auc'])} | {ms(s['page_auc'])} | {ms(s['corr_between'])} | "
                 f"{ms(s['corr_within'])} | {s['trigger_entry']['corr_within']:.4f} | {s['app_entry']['corr_within']:.4f} | "
                 f"{s['trigger_entry']['page_auc']:.4f} | {s['app_entry']['page_auc']:.4f} |")
    with open(a.output + ".md", "w") as fh:
        fh.write("\n".join(L) + "\n")
    print(f"wrote {a.output}.json / .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
