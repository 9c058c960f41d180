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
