"""ccn.report over hand-made run directories (no TensorFlow): grouping, mean ± std, RelaImpr,
row order, missing rows, skipped runs, CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ccn import report
from ctrcore import metrics as M


def _run(root, key, seed, auc, groups=(0.6, 0.7, 0.8), gauc=0.65, evaluated=True):
    d = os.path.join(root, key, f"seed{seed}")
    os.makedirs(d)
    model = key.split("+")[0]
    data = {"source": "fake", "stats_sha256": "abc", "feature_spec_sha256": "def"}
    if evaluated:
        m = {"auc": auc, "gauc": gauc, "page_auc": auc - 0.05, "logloss": 0.6, "n": 100,
             "run_key": key, "model": model, "seed": seed, "split": "test", "data_dir": "out/x",
             "data": data, "best_epoch": 2, "best_val_auc": auc + 0.01,
             "groups": {g: {"auc": a, "gauc": a, "n": 10} for g, a in zip(M.GROUP_NAMES, groups)}}
        with open(os.path.join(d, "metrics.json"), "w") as fh:
            json.dump(m, fh)
    with open(os.path.join(d, "train_config.json"), "w") as fh:
        json.dump({"seed": seed, "run_info": {"run_key": key, "command":
                                              f"python -m ccn.train --flagfile=configs/{model}_synthetic.flags --seed={seed}"},
                   "data": data}, fh)
    with open(os.path.join(d, "history.json"), "w") as fh:
        json.dump({"runtime": {"train_seconds": 10.0 + seed, "wall_seconds": 12.0, "steps": 100,
                               "examples_per_second": 1000.0}}, fh)
    return d


def test_aggregate_mean_std_relaimpr_and_order(tmp_path):
    root = str(tmp_path)
    for s, a in enumerate([0.70, 0.72, 0.74]):
        _run(root, "tan", s, a)
    for s, a in enumerate([0.75, 0.77]):
        _run(root, "ccn", s, a, groups=(0.65, 0.72, 0.81))
    _run(root, "din", 0, 0.69)
    _run(root, "sim", 0, 0.0, evaluated=False)  # matched, no metrics.json
    md, data = report.build_report(os.path.join(root, "*", "seed*"), layout="ccn", base="tan")
    g = data["groups"]
    assert g["tan"]["n_seeds"] == 3 and g["tan"]["seeds"] == [0, 1, 2]
    assert g["tan"]["auc"]["mean"] == pytest.approx(0.72)
    assert g["tan"]["auc"]["std"] == pytest.approx(np.std([0.70, 0.72, 0.74], ddof=1))
    assert g["din"]["auc"]["std"] is None  # one seed: no std
    assert g["ccn"]["relaimpr"]["auc"] == pytest.approx(M.relaimpr(0.76, 0.72))
    assert g["ccn"]["relaimpr"]["groups"]["highly_active"] == pytest.approx(M.relaimpr(0.81, 0.8))
    assert g["tan"]["relaimpr"]["auc"] == pytest.approx(0.0)
    assert g["ccn"]["runtime"]["train_seconds"]["mean"] == pytest.approx(10.5)
    # the CCN paper's protocol (drop best and worst) and the paired per-seed comparison
    assert g["tan"]["best_val_auc"]["mean"] == pytest.approx(0.73)
    assert g["tan"]["auc_trimmed"] == pytest.approx(0.72) and g["ccn"]["auc_trimmed"] is None
    assert g["ccn"]["paired_vs_base"] == {"seeds": [0, 1], "n": 2, "wins": 2}
    assert g["din"]["paired_vs_base"] == {"seeds": [0], "n": 1, "wins": 0}
    # rows in CCN Table 2 order, missing rows as "not run", numbers from the files
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    order = [l.split("|")[1].strip() for l in lines[1:]]
    assert order[0].startswith("Wide&Deep") and "not run" in lines[1]
    assert [o.split(" (`")[0] for o in order] == [r.label for r in report.LAYOUTS["ccn"].rows]
    assert "0.7600 ± 0.0141" in md and "+18.18%" in md  # ccn: mean ± std, RelaImpr vs tan
    assert "| +18.18% | 2/2 |" in md and "| 0.7200 ± 0.0200 | 0.7200 | +0.00% | - |" in md
    assert "SIM (`sim`) | 0 | not run" in md
    assert "no metrics.json" in md  # the unevaluated sim run is reported
    assert "--flagfile=configs/ccn_synthetic.flags --seed=1" in md
    assert "seeds: [0, 1, 2]" in md


def test_aqcl_layouts_and_extra_rows(tmp_path):
    root = str(tmp_path)
    _run(root, "din", 0, 0.6956, groups=(0.6719, 0.7064, 0.7998))
    _run(root, "din+aqcl", 0, 0.7078, groups=(0.6826, 0.7231, 0.8105))
    _run(root, "wide_deep", 0, 0.68)
    _run(root, "wide_deep+aqcl", 0, 0.69)
    _run(root, "tan", 0, 0.70)  # not in the AQCL layouts -> listed after them
    md, data = report.build_report(os.path.join(root, "*", "seed*"), layout="aqcl")
    assert data["base"] == "din"
    ri = data["groups"]["din+aqcl"]["relaimpr"]
    assert ri["auc"] == pytest.approx(6.24, abs=0.01)  # AQCL Table 2 (Amazon) numbers reproduce
    assert ri["groups"]["non_active"] == pytest.approx(6.22, abs=0.02)
    assert ri["groups"]["slightly_active"] == pytest.approx(8.09, abs=0.02)
    assert "| AQCL (`din+aqcl`) |" in md and "| DMR (`din+dmr`) | 0 | not run" in md
    assert md.index("AQCL (`din+aqcl`)") < md.index("TAN (`tan`)")
    md2, data2 = report.build_report(os.path.join(root, "*", "seed*"), layout="aqcl_backbones")
    assert data2["groups"]["wide_deep+aqcl"]["relaimpr_base"] == "wide_deep"
    assert data2["groups"]["din+aqcl"]["relaimpr_base"] == "din"
    assert data2["groups"]["din"]["relaimpr"] is None


def test_group_by_directory_for_sweeps(tmp_path):
    root = str(tmp_path)
    for w, auc in (("w0.01", 0.70), ("w0.1", 0.74)):  # RUNS/<config>/seed0, same run key
        _run(root, "din+aqcl", 0, auc)
        os.rename(os.path.join(root, "din+aqcl"), os.path.join(root, w))
    glob_ = os.path.join(root, "*", "seed*")
    _, by_key = report.build_report(glob_, layout="all")
    assert list(by_key["groups"]) == ["din+aqcl"] and by_key["groups"]["din+aqcl"]["n_seeds"] == 2
    md, by_dir = report.build_report(glob_, layout="all", group_by="dir")
    assert by_dir["groups"]["w0.01"]["auc"]["mean"] == pytest.approx(0.70)
    assert by_dir["groups"]["w0.1"]["best_val_auc"]["mean"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="group_by"):
        report.build_report(glob_, group_by="nope")


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.build_report(os.path.join(str(tmp_path), "*"))
    with pytest.raises(ValueError, match="layout"):
        _run(str(tmp_path), "din", 0, 0.7)
        report.build_report(os.path.join(str(tmp_path), "*", "seed*"), layout="nope")


def test_cli_writes_markdown_and_json(tmp_path):
    root = str(tmp_path / "runs")
    _run(root, "tan", 0, 0.70)
    _run(root, "ccn", 0, 0.73)
    out, js = str(tmp_path / "r" / "t.md"), str(tmp_path / "r" / "t.json")
    r = subprocess.run([sys.executable, "-m", "ccn.report", f"--runs_glob={root}/*/seed*", "--base=tan",
                        f"--output={out}", f"--json={js}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "CCN (`ccn`)" in open(out).read()
    data = json.load(open(js))
    assert data["groups"]["ccn"]["relaimpr"]["auc"] == pytest.approx(M.relaimpr(0.73, 0.70))
    r = subprocess.run([sys.executable, "-m", "ccn.report", f"--runs_glob={tmp_path}/none*"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no evaluated runs" in r.stderr


def test_hyperparameter_section_says_what_was_chosen_and_flags_other_values(tmp_path):
    """The recorded loss parameters of the aux losses each row used, how the configs' values were
    chosen (ccn.tables.SEARCHED of the data source), a run off the chosen value flagged, the fixed
    training settings listed."""
    from ccn import tables
    root = str(tmp_path)
    lam = tables.SEARCHED["synthetic"]["ccn_lambda"][0]
    for key, seed, aux, lam_value in (("tan", 0, [], 1.0), ("ccn", 0, ["ccn"], lam), ("ccn", 1, ["ccn"], 7.0)):
        d = _run(root, key, seed, 0.7)
        rec = json.load(open(os.path.join(d, "train_config.json")))
        rec["data"]["source"] = "synthetic"
        rec["config"] = {"optimizer": "adagrad", "batch_size": 1024, "learning_rate": 0.05, "model_dir": "x"}
        rec["run_info"].update(all_aux_losses=aux, loss_params={"ccn_lambda": lam_value, "ccn_xi": 0.8,
                                                                "aqcl_weight": 0.05})
        json.dump(rec, open(os.path.join(d, "train_config.json"), "w"))
    md, data = report.build_report(os.path.join(root, "*", "seed*"), layout="ccn", base="tan")
    hp = data["hyperparameters"]
    assert hp["sources"] == ["synthetic"] and set(hp["loss"]) == {"ccn"}  # TAN used no aux loss
    assert hp["loss"]["ccn"]["ccn_lambda"] == [lam, 7.0] and "aqcl_weight" not in hp["loss"]["ccn"]
    section = md[md.index("## Hyperparameters"):md.index("## Commands")]
    assert f"`ccn`: ccn_lambda = [{lam}, 7.0]: **not the chosen value {lam}**; chosen on best validation AUC" in section
    assert "`ccn`: ccn_xi = 0.8: chosen on validation AUC at 5 epochs" in section
    assert "every row: learning_rate = 0.05: chosen on" in section
    assert 'fixed in the configs (not searched): optimizer = "adagrad", batch_size = 1024' in section
    assert "model_dir" not in section
    # a source with no record of what was searched: every parameter "not searched"
    for d in [os.path.join(root, "ccn", "seed0"), os.path.join(root, "ccn", "seed1"), os.path.join(root, "tan", "seed0")]:
        rec = json.load(open(os.path.join(d, "train_config.json")))
        rec["data"]["source"] = "generic"
        json.dump(rec, open(os.path.join(d, "train_config.json"), "w"))
    md, _ = report.build_report(os.path.join(root, "*", "seed*"), layout="ccn", base="tan")
    assert f"ccn_lambda = [{lam}, 7.0]: not searched" in md and "learning_rate = 0.05, " in md
