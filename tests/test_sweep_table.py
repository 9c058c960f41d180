"""scripts/sweep_table.py: per variant the differing flags, mean validation AUC, and the choice
made on validation, never on test."""
import importlib.util
import json
import os

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "sweep_table", os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "sweep_table.py"))
S = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(S)


def _run(root, variant, seed, val, test, tau):
    d = os.path.join(root, variant, "ccn", f"seed{seed}")
    os.makedirs(d)
    json.dump({"best_val_auc": val, "auc": test, "best_epoch": 5}, open(os.path.join(d, "metrics.json"), "w"))
    json.dump({"run_info": {"argv": ["ccn.train", "--flagfile=configs/ccn_synthetic.flags", f"--seed={seed}",
                                     f"--model_dir={d}"],
                            "loss_params": {"ccn_tau": tau, "ccn_xi": 0.8}}},
              open(os.path.join(d, "train_config.json"), "w"))


def test_the_choice_is_the_best_mean_validation_auc(tmp_path):
    root = str(tmp_path)
    _run(root, "sweep_a", 0, 0.70, 0.90, 0.1)  # best on test, worst on validation
    _run(root, "sweep_a", 1, 0.72, 0.90, 0.1)
    _run(root, "sweep_b", 0, 0.75, 0.60, 0.5)
    _run(root, "sweep_b", 1, 0.73, 0.60, 0.5)
    rows = S.collect(os.path.join(root, "sweep_*", "ccn"))
    a, b = rows
    assert a["val_auc_mean"] == pytest.approx(0.71) and b["val_auc_mean"] == pytest.approx(0.74)
    assert b["chosen"] and not a["chosen"]
    assert a["flags"] == {"ccn_tau": "0.1"} and b["flags"] == {"ccn_tau": "0.5"}  # xi is the same: not listed
    md = S.markdown(rows, "cmd", "t")
    assert "| --ccn_tau=0.5 | [0, 1] | 0.7400 ± 0.0141 | 0.6000 | [5, 5] | **yes** |" in md


def test_seeds_compares_the_variants_on_the_same_seeds(tmp_path):
    root = str(tmp_path)
    _run(root, "sweep_a", 0, 0.70, 0.9, 0.1)
    _run(root, "sweep_a", 3, 0.99, 0.9, 0.1)  # a seed the other variant lacks
    _run(root, "sweep_b", 0, 0.75, 0.6, 0.5)
    a, b = S.collect(os.path.join(root, "sweep_*", "ccn"))
    assert a["chosen"] and a["seeds"] == [0, 3]  # all seeds: the extra seed decides
    a, b = S.collect(os.path.join(root, "sweep_*", "ccn"), seeds=[0])
    assert b["chosen"] and a["seeds"] == [0] == b["seeds"]


def test_prior_tables_fill_the_seeds_whose_run_dirs_are_gone(tmp_path):
    """Seeds 0-1 survive only in an earlier table's JSON; seed 2 is in the ledger: the variant is
    compared on 0-2, the prior runs marked; a run directory wins over a prior record of its seed;
    a prior variant outside --runs is left out."""
    root = str(tmp_path)
    _run(root, "results/runs/conv", 1, 0.80, 0.8, 0.5)  # re-run: overrides the prior seed 1
    _run(root, "results/runs/conv", 2, 0.78, 0.8, 0.5)
    _run(root, "results/runs/conv_lambda01", 2, 0.79, 0.8, 0.5)
    prior = os.path.join(root, "old.json")
    rec = lambda seed, val: {"seed": seed, "best_val_auc": val, "test_auc": 0.5, "best_epoch": 9,
                             "flags": {"ccn_tau": "0.5", "ccn_xi": "0.8"}}
    json.dump({"command": "old", "variants": [
        {"variant": "runs/conv/ccn", "runs": [rec(0, 0.70), rec(1, 0.10)]},
        {"variant": "runs/conv_lambda01/ccn", "runs": [rec(0, 0.76), rec(1, 0.77)]},
        {"variant": "runs/other/tan", "runs": [rec(0, 0.99)]}]}, open(prior, "w"))
    old_cwd = os.getcwd()
    os.chdir(root)
    try:
        rows = S.collect("results/runs/conv*/ccn", priors=[prior])
    finally:
        os.chdir(old_cwd)
    assert [r["variant"] for r in rows] == ["results/runs/conv/ccn", "results/runs/conv_lambda01/ccn"]
    conv, lam = rows
    assert conv["seeds"] == [0, 1, 2] == lam["seeds"]
    assert conv["val_auc_mean"] == pytest.approx((0.70 + 0.80 + 0.78) / 3)  # seed 1 from its run dir
    assert lam["val_auc_mean"] == pytest.approx((0.76 + 0.77 + 0.79) / 3) and lam["chosen"]
    assert [x.get("from") for x in conv["runs"]] == [prior, None, None]
    md = S.markdown(rows, "cmd", "t")
    assert f"from `{prior}`" in md and "`conv/ccn` seeds [0]; `conv_lambda01/ccn` seeds [0, 1]" in md
    absolute = S.collect(os.path.join(root, "results/runs/conv*/ccn"), seeds=[0, 2], priors=[prior])
    assert [r["seeds"] for r in absolute] == [[0, 2], [0, 2]]
    both = S.collect("results/runs/conv/ccn,results/runs/conv_lambda01/ccn".replace("results", os.path.join(root, "results")),
                     priors=[prior])
    assert [S.variant_key(r["variant"]) for r in both] == ["conv/ccn", "conv_lambda01/ccn"]
    assert S.variant_key("/a/runs/b/results/runs/conv/ccn") == "conv/ccn" == S.variant_key("runs/conv/ccn")
