#!/usr/bin/env python
"""AUC of the intent task of trained DIHN / DIAN runs (the CCN paper quotes DIAN's: 0.6 on its
EPS data vs 0.943 in DIAN's own scenario).

    python scripts/intent_auc.py --runs_glob='runs/synthetic/di*/seed*' --output=results/ccn_intent_auc

For every run: the best weights, the ``split`` examples (default test) in file order, the
intent logits of the backbone against the page-level intent label of ``ccn.baselines``
(a click on the trigger's category on the page). Writes ``OUTPUT.json`` (per run, and mean ±
std per model) and ``OUTPUT.md``; every number is computed here from the runs' checkpoints.
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


def intent_scores(model_dir: str, split: str = "test", batch_size: int = 4096):
    """``(labels, logits)`` numpy arrays of the intent task for one run."""
    import numpy as np

    from ccn import evaluate
    from ccn.baselines import IntentLoss
    from ctrcore.data import make_dataset

    model, spec, _, record = evaluate.rebuild(model_dir)
    loss = next((a for a in model.aux_losses if isinstance(a, IntentLoss)), None)
    if loss is None:
        raise ValueError(f"{model_dir}: model {record['config']['model']!r} has no intent task")
    data_dir = record["config"]["data_dir"]
    ys, zs = [], []
    for batch in make_dataset(data_dir, split, batch_size, spec=spec, shuffle=False, deterministic=True):
        feats = model.backbone.lookup(batch)
        out = model.backbone(feats, training=False)
        ys.append(loss.labels(model, feats).numpy())
        zs.append(out["intent_logit"].numpy())
    return np.concatenate(ys), np.concatenate(zs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs_glob", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--output", default="results/ccn_intent_auc", help="prefix of .json / .md")
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    import numpy as np

    from ctrcore import reporting
    from ctrcore.metrics import auc as roc_auc_score

    from ctrcore.rundir import RunDir

    runs = sorted(d for d in glob.glob(a.runs_glob) if RunDir(d).has_metrics())
    if not runs:
        raise SystemExit(f"no evaluated runs match {a.runs_glob!r}")
    per_run, by_model = [], {}
    for d in runs:
        y, z = intent_scores(d, a.split)
        rec = {"run": d, "model": RunDir(d).read_metrics()["model"],
               "n": int(len(y)), "intent_rate": float(y.mean()),
               "intent_auc": float(roc_auc_score(y, z)) if 0 < y.mean() < 1 else None}
        per_run.append(rec)
        by_model.setdefault(rec["model"], []).append(rec["intent_auc"])
        print(json.dumps(rec), flush=True)
    summary = {}
    for m, v in by_model.items():
        ms = reporting.mean_std(v)  # None left out: the split has one intent class only (AUC undefined)
        summary[m] = {"n_runs": len(v), "n_defined": ms["n"], "mean": ms["mean"], "std": ms["std"]}
    meta = {"command": "python scripts/intent_auc.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "generated": time.strftime("%Y-%m-%d %H:%M"), "split": a.split}
    with open(a.output + ".json", "w") as fh:
        json.dump({"meta": meta, "models": summary, "runs": per_run}, fh, indent=1)
    lines = ["# Intent-task AUC of DIHN / DIAN", "",
             f"Generated {meta['generated']} by `{meta['command']}` on the `{a.split}` split. Intent label: "
             "a click on the trigger's category on the page (ccn/baselines.py); AUC of the backbone's "
             "intent logit against it. The CCN paper quotes DIAN's intent AUC: 0.6 on its EPS data, "
             "0.943 in DIAN's own scenario.", "",
             "| Model | runs | intent AUC | intent rate |", "|---|---:|---:|---:|"]
    for m, s in sorted(summary.items()):
        rate = np.mean([r["intent_rate"] for r in per_run if r["model"] == m])
        if s["mean"] is None:
            cell = "undefined (one class only)"
        else:
            cell = reporting.fmt_ms(s)
            if s["n_defined"] < s["n_runs"]:
                cell += f" ({s['n_defined']} runs defined)"
        lines.append(f"| {m} | {s['n_runs']} | {cell} | {rate:.3f} |")
    with open(a.output + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {a.output}.json / .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
