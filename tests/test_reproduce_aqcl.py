"""scripts/reproduce_aqcl.py's report over hand-made run directories: mean ± std, RelaImpr against
DIN (Table 2) and against each row's own backbone (Table 3, overall and per activeness group),
runtime columns and the commands section; nothing run."""
import importlib.util
import json
import os

import pytest

from ctrcore import metrics as M

_SPEC = importlib.util.spec_from_file_location(
    "reproduce_aqcl", os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "reproduce_aqcl.py"))
R = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(R)


def _run(root, name, seed, auc, groups):
    d = os.path.join(root, name, f"seed{seed}")
    os.makedirs(d)
    with open(os.path.join(d, "metrics.json"), "w") as fh:
        json.dump({"auc": auc, "logloss": 0.5, "groups": {g: {"auc": a, "n": 10} for g, a in zip(R.GROUPS, groups)}}, fh)
    with open(os.path.join(d, "history.json"), "w") as fh:
        json.dump({"best": {"epoch": 2}, "epochs": [{}, {}, {}],
                   "runtime": {"train_seconds": 100.0 + seed, "wall_seconds": 120.0}}, fh)


def test_tables_relaimpr_against_din_and_own_backbone(tmp_path):
    runs = str(tmp_path / "runs")
    for s, a in enumerate([0.70, 0.72]):
        _run(runs, "din", s, a, (0.68, 0.70, 0.80))
    for s, a in enumerate([0.73, 0.75]):
        _run(runs, "din_aqcl", s, a, (0.70, 0.72, 0.82))
    _run(runs, "wide_deep", 0, 0.66, (0.62, 0.66, 0.70))
    _run(runs, "wide_deep_aqcl", 0, 0.68, (0.64, 0.67, 0.72))
    res = R.collect(runs)
    assert res["din_aqcl"]["auc_mean"] == pytest.approx(0.74) and res["din_aqcl"]["seeds"] == [0, 1]
    assert res["din_aqcl"]["relaimpr"] == pytest.approx(M.relaimpr(0.74, 0.71))
    assert res["wide_deep_aqcl"]["relaimpr_vs_backbone"] == pytest.approx(M.relaimpr(0.68, 0.66))
    assert res["wide_deep_aqcl"]["groups_relaimpr_vs_backbone"]["highly_active"] == pytest.approx(
        M.relaimpr(0.72, 0.70))
    assert res["din_aqcl"]["train_seconds_mean"] == pytest.approx(100.5)
    assert res["din_aqcl"]["wins_vs_din"] == {"wins": 2, "n": 2}
    assert res["wide_deep_aqcl"]["wins_vs_backbone"] == {"wins": 1, "n": 1}
    assert "relaimpr_vs_backbone" not in res["wide_deep"]

    prefix = str(tmp_path / "out" / "aqcl")
    R.write_results(runs, prefix, [("din", 0), ("din_icl", 0)], None, str(tmp_path), "--seeds_table2=1")
    md = open(prefix + ".md").read()
    t2, t3 = md.split("## Table 3")[0], md.split("## Table 3")[1].split("## Fig. 5")[0]
    # Table 2: W&D's AQCL row is not in it; AQCL against DIN
    assert "| AQCL | 2 | 0.7400 ± 0.0141 | " + f"{M.relaimpr(0.74, 0.71):+.2f}% | 2/2 |" in t2
    # Table 3: AQCL_W&D against W&D (overall and non-active), the base row has '-'
    row = [l for l in t3.splitlines() if l.startswith("| AQCL_W&D |")][0]
    assert f"{M.relaimpr(0.68, 0.66):+.2f}%" in row and f"{M.relaimpr(0.64, 0.62):+.2f}%" in row
    assert [l for l in t3.splitlines() if l.startswith("| W&D |")][0].split("|")[4].strip() == "-"
    assert "| 1/1 |" in row
    assert "| 2.0 | 100s |" in t3
    assert "`python scripts/reproduce_aqcl.py --seeds_table2=1`" in md
    assert "--flagfile=configs/din_aqcl_beauty.flags --seed=S" in md
    assert "din_icl/seed0" in md  # planned but not run: listed as not finished
    js = json.load(open(prefix + ".json"))
    assert js["models"]["din_aqcl"]["auc_per_seed"] == [0.73, 0.75]


def test_paper_section_compares_relaimpr_and_states_each_target(tmp_path):
    runs = str(tmp_path / "runs")
    # AQCL +10 % RelaImpr over DIN (above the paper's +6.24 %), ICL above DIN, AQCL_W&D below W&D
    aucs = {"din": [0.80, 0.80], "din_icl": [0.80, 0.82], "din_aqcl": [0.83, 0.83],
            "wide_deep": [0.79], "wide_deep_aqcl": [0.78]}
    for name, per_seed in aucs.items():
        for seed, auc in enumerate(per_seed):
            _run(runs, name, seed, auc, (0.78, 0.80, 0.86))
    prefix = str(tmp_path / "aqcl")
    R.write_results(runs, prefix, [], None, str(tmp_path), "")
    md = open(prefix + ".md").read()
    sec = md.split("## Against the paper (Amazon)")[1].split("## Commands")[0]
    row = [l for l in sec.splitlines() if l.startswith("| AQCL |")][0]
    assert row == (f"| AQCL | 0.7078 | {M.relaimpr(0.7078, 0.6956):+.2f}% | 0.8300 | "
                   f"{M.relaimpr(0.83, 0.80):+.2f}% | 2/2 | yes |")
    wd = [l for l in sec.splitlines() if l.startswith("| AQCL_W&D |")][0]
    assert wd.endswith("| 0/1 | **no** |")  # ours below W&D, the paper's above
    assert "AQCL RelaImpr over DIN >= +6.24 % (the paper's): +10.00% -> **met**" in sec
    assert "ours AQCL > ICL > DIN -> **met**" in sec
    assert "AQCL helps W&D: " in sec and "-> **missed**" in sec
    assert "alpha = R(L): **not searched**" in md


def test_driver_args_name_what_decides_the_runs():
    """The Commands section's driver line reproduces the selection: --only, runs dir, results."""
    from types import SimpleNamespace
    a = SimpleNamespace(seeds_table2=5, seeds_table3=0, seeds_ablation=0, only="din,din_aqcl",
                        runs_dir="out/x", alpha_from="", results="results/y", train_flag=[])
    assert R.driver_args(a) == ("--seeds_table2=5 --seeds_table3=0 --seeds_ablation=0 "
                                "--only=din,din_aqcl --runs_dir=out/x --results=results/y")
    a.only = ""
    assert "--only" not in R.driver_args(a)


def test_ledger_keeps_finished_runs_after_runs_dir_is_gone(tmp_path, monkeypatch):
    """A finished run is archived to results/runs/aqcl/<RUNS_DIR>/ and the results come from
    there; once RUNS_DIR is gone the run is neither trained again nor missing from the results."""
    import shutil
    root = str(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setattr(R, "ROOT", root)
    calls = []
    monkeypatch.setattr(R.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 1)
    _run(os.path.join(root, "out", "beauty", "runs"), "din", 0, 0.71, (0.6, 0.7, 0.8))
    args = ["--seeds_table2=1", "--seeds_table3=0", "--seeds_ablation=0", "--only=din", "--retries=0",
            f"--results={root}/res"]
    assert R.main(args) == 0 and calls == []
    led = os.path.join(root, "results", "runs", "aqcl", "out", "beauty", "runs", "din", "seed0")
    assert sorted(f for f in os.listdir(led) if os.path.isfile(os.path.join(led, f))) == ["history.json", "metrics.json"]
    shutil.rmtree(os.path.join(root, "out"))
    assert R.main(args) == 0 and calls == []
    res = json.load(open(f"{root}/res.json"))
    assert res["models"]["din"]["seeds"] == [0] and res["meta"]["missing"] == []
    assert res["meta"]["read_from"] == "results/runs/aqcl/out/beauty/runs" and res["meta"]["runs_dir"] == "out/beauty/runs"
    # without the ledger the run is planned again (the stubbed training fails: reported, not raised)
    assert R.main(args + ["--ledger="]) == 0 and len(calls) == 1
    assert R.ledger_dir(R.argparse.Namespace(ledger="results/runs", runs_dir="/elsewhere/runs")) == os.path.join(
        root, "results", "runs", "aqcl", "elsewhere", "runs")
