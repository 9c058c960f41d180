#!/usr/bin/env python
"""How much co-click signal does a synthetic log hold for the CCN loss to learn from? (Issue 14,
item 4: where CCN does not beat TAN, check the planted structure first.)

    python scripts/coclick_signal.py [--gen_seeds=0,11,23] [--rows_list=100000,200000,1000000] \\
        [--output=results/synthetic_coclick_signal]

The CCN loss (Eq. 5-12) compares, within one page, the collaborative degree
``s = MLP(E_user ⊕ E ⊙ E_trigger)`` of the target with those of the page's other items. The user
and the trigger are the same for every item of a page, so within a page ``s`` can tell the items
apart only by their interaction with the trigger (and the user): the loss has something to learn
exactly where the clicks within a page follow those interactions. The generator's hidden truth
(``pipelines.synthetic.generate(with_truth=True)``) says how much they do. Per log, no model:

* ``page_auc`` of a score: the mean over pages with both labels of the AUC of the score within
  the page: for the true click probability (the ceiling), the user-item latent affinity, the
  trigger-item latent affinity (the part ``E ⊙ E_trigger`` can express) and the observable
  "same category as the trigger" (a 0/1 feature), split by the page's entry type (trigger-driven
  or driven by the mini-app);
* pairs of items shown on the same page: the share in the same category for co-click,
  co-non-click and mono-click pairs, and the lift co-click / mono-click (what the generator's
  docstring promises the contrastive losses: co-click pairs are more category-concentrated);
* the share of training-like examples that have a non-empty S- (a mono-click partner on the
  page) and S+.

Writes ``OUTPUT.json`` and ``OUTPUT.md`` (one row per log, the command and the generator seed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SCORES = (("_p_click", "true click probability"), ("_affinity", "user-item affinity"),
          ("_trigger_affinity", "trigger-item affinity"), ("same_cat_as_trigger", "same category as trigger"))


def page_auc(df: pd.DataFrame, score: str) -> float:
    """Mean over pages with both labels of the within-page AUC of ``score`` (ties count half)."""
    g = df.groupby("page_id", sort=False)
    n_pos = g["clicked"].transform("sum")
    n = g["clicked"].transform("size")
    both = (n_pos > 0) & (n_pos < n)
    d = df[both]
    r = d.groupby("page_id", sort=False)[score].rank(method="average")
    pos_rank = (r * d["clicked"]).groupby(d["page_id"], sort=False).sum()
    k = d.groupby("page_id", sort=False)["clicked"].agg(["sum", "size"])
    auc = (pos_rank - k["sum"] * (k["sum"] + 1) / 2) / (k["sum"] * (k["size"] - k["sum"]))
    return float(auc.mean())


def pair_shares(df: pd.DataFrame) -> Dict[str, float]:
    """Share of same-category pairs among co-click, co-non-click and mono-click pairs of a page."""
    c = df.groupby(["page_id", "category_id"], sort=False)["clicked"].agg(["sum", "size"])
    kc, ku = c["sum"].to_numpy(np.float64), (c["size"] - c["sum"]).to_numpy(np.float64)
    p = df.groupby("page_id", sort=False)["clicked"].agg(["sum", "size"])
    nc, nu = p["sum"].to_numpy(np.float64), (p["size"] - p["sum"]).to_numpy(np.float64)
    same = {"co_click": (kc * (kc - 1) / 2).sum(), "co_non_click": (ku * (ku - 1) / 2).sum(),
            "mono_click": (kc * ku).sum()}
    total = {"co_click": (nc * (nc - 1) / 2).sum(), "co_non_click": (nu * (nu - 1) / 2).sum(),
             "mono_click": (nc * nu).sum()}
    out = {f"same_category_{k}": float(same[k] / total[k]) if total[k] else float("nan") for k in same}
    out["pairs"] = {k: int(v) for k, v in total.items()}
    out["lift_co_click_over_mono_click"] = out["same_category_co_click"] / out["same_category_mono_click"]
    return out


def analyse(gen_seed: int, rows: int) -> dict:
    from pipelines import synthetic

    t0 = time.time()
    df = synthetic.generate(rows, seed=gen_seed, with_truth=True)
    trig_cat = dict(zip(df["item_id"], df["category_id"]))
    df["same_cat_as_trigger"] = (df["trigger_item_id"].map(trig_cat) == df["category_id"]).astype(float)
    pages = df.groupby("page_id", sort=False)["clicked"].agg(["sum", "size"])
    n_pos = df["page_id"].map(pages["sum"])
    n = df["page_id"].map(pages["size"])
    # an exposure's S- is its page's items of the other label, S+ those of its own label
    s_minus = np.where(df["clicked"] == 1, n - n_pos, n_pos) > 0
    s_plus = np.where(df["clicked"] == 1, n_pos - 1, n - n_pos - 1) > 0
    out = {"gen_seed": gen_seed, "rows": rows, "exposures": int(len(df)), "pages": int(len(pages)),
           "ctr": float(df["clicked"].mean()),
           "pages_with_both_labels": float(((pages["sum"] > 0) & (pages["sum"] < pages["size"])).mean()),
           "examples_with_s_minus": float(s_minus.mean()), "examples_with_s_plus": float(s_plus.mean()),
           "page_auc": {}, "page_auc_trigger_driven": {}, "page_auc_app_driven": {}}
    for col, _ in SCORES:
        out["page_auc"][col] = page_auc(df, col)
        out["page_auc_trigger_driven"][col] = page_auc(df[df["_entry_by_trigger"]], col)
        out["page_auc_app_driven"][col] = page_auc(df[~df["_entry_by_trigger"]], col)
    out.update(pair_shares(df))
    out["seconds"] = time.time() - t0
    return out


def markdown(res: List[dict], command: str) -> str:
    L = ["# Co-click signal of the synthetic logs (no model: the generator's hidden truth)", "",
         f"Generated {time.strftime('%Y-%m-%d %H:%M')} by `{command}` (`pipelines.synthetic.generate`, "
         "with_truth=True; a log is its generator seed and rows).", "",
         "Within-page AUC (mean over pages with both labels) of each score: how far the clicks within "
         "a page follow it. The trigger-item affinity is the within-page part the collaborative "
         "module's `E ⊙ E_trigger` can express; the user is the same for every item of a page.", "",
         "| log (seed, rows) | CTR | pages with both labels | " + " | ".join(n for _, n in SCORES)
         + " | trigger-item, trigger-driven pages | trigger-item, app-driven pages |",
         "|---|---:|---:|" + "---:|" * (len(SCORES) + 2)]
    for r in res:
        cells = [f"g{r['gen_seed']}, {r['rows']:,}", f"{r['ctr']:.3f}", f"{r['pages_with_both_labels']:.2f}"]
        cells += [f"{r['page_auc'][c]:.3f}" for c, _ in SCORES]
        cells += [f"{r['page_auc_trigger_driven']['_trigger_affinity']:.3f}",
                  f"{r['page_auc_app_driven']['_trigger_affinity']:.3f}"]
        L.append("| " + " | ".join(cells) + " |")
    L += ["", "Pairs of items shown on the same page: share in the same category, by the pair's labels "
          "(the CCN loss attracts co-click / co-non-click pairs and repels mono-click ones), and the "
          "examples that have a non-empty S- / S+ (of the page's other items):", "",
          "| log (seed, rows) | co-click | co-non-click | mono-click | lift co-click / mono-click "
          "| examples with S- | with S+ |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res:
        L.append(f"| g{r['gen_seed']}, {r['rows']:,} | {r['same_category_co_click']:.3f} | "
                 f"{r['same_category_co_non_click']:.3f} | {r['same_category_mono_click']:.3f} | "
                 f"{r['lift_co_click_over_mono_click']:.2f} | {r['examples_with_s_minus']:.2f} | "
                 f"{r['examples_with_s_plus']:.2f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> List[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen_seeds", default="0,11,23")
    ap.add_argument("--rows_list", default="100000,200000,1000000")
    ap.add_argument("--output", default="results/synthetic_coclick_signal")
    a = ap.parse_args(argv)
    res = [analyse(g, r) for r in [int(x) for x in a.rows_list.split(",") if x]
           for g in [int(x) for x in a.gen_seeds.split(",") if x]]
    command = "python scripts/coclick_signal.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(a.output + ".json", "w") as fh:
        json.dump({"command": command.strip(), "logs": res}, fh, indent=1)
    with open(a.output + ".md", "w") as fh:
        fh.write(markdown(res, command.strip()))
    print(markdown(res, command.strip()))
    return res


if __name__ == "__main__":
    main()
