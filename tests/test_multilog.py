"""ccn.multilog (TAN vs CCN on several synthetic logs) over run directories written with RunDir
the way the trainer and ccn.evaluate write them, and scripts/reproduce_ccn.py's commands for a
grid of logs (--dry_run). No TensorFlow, nothing trained."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ccn import multilog, report
from ccn.multilog import SyntheticLog
from ctrcore.rundir import RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEC = importlib.util.spec_from_file_location("reproduce_ccn", os.path.join(ROOT, "scripts", "reproduce_ccn.py"))
D = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(D)

LOG_A, LOG_B = SyntheticLog(1, 5000), SyntheticLog(2, 5000)


def _fake_run(root, log, model, seed, test_auc, val_aucs, cap, tag="conv", stopped_early=True):
    """A finished run as ccn.train leaves it: train_config.json (record with the plan),
    history.json (per-epoch validation, best, stopped_early, runtime), metrics.json."""
    rel = os.path.join("runs", log.runs_name(tag), model, f"seed{seed}")
    run = RunDir(os.path.join(root, rel))
    run.create()
    best = max(range(len(val_aucs)), key=lambda i: val_aucs[i]) + 1
    cmd = (f"python -m ccn.train --flagfile=configs/{model}_synthetic.flags --seed={seed} "
           f"--data_dir={log.data_dir} --model_dir={rel} --epochs={cap}")
    run.write_config({"config": {"model": model, "seed": seed, "epochs": cap, "early_stopping_patience": 3},
                      "run_info": {"run_key": model, "command": cmd}, "seed": seed,
                      "data": {"stats_sha256": f"digest{log.gen_seed}"},
                      "plan": {"epochs": cap, "steps_per_epoch": 4, "total_steps": 4 * cap}})
    hist = {"epochs": [{"epoch": i + 1, "global_step": 4 * (i + 1), "steps": 4, "train": {"loss": 0.5},
                        "val": {"auc": v, "logloss": 0.4, "n": 100}} for i, v in enumerate(val_aucs)],
            "best": {"epoch": best, "global_step": 4 * best, "val_auc": max(val_aucs)},
            "completed": True, "sessions": [{}],
            "runtime": {"train_seconds": 10.0, "wall_seconds": 12.0, "steps": 4 * len(val_aucs),
                        "examples_per_second": 400.0, "median_steady_examples_per_second": 410.0}}
    if stopped_early:
        hist["stopped_early"] = {"epoch": len(val_aucs), "best_epoch": best}
    run.write_history(hist)
    run.write_metrics("test", {"auc": test_auc, "gauc": 0.6, "page_auc": 0.6, "logloss": 0.3, "n": 100,
                               "model": model, "run_key": model, "seed": seed, "split": "test",
                               "data_dir": log.data_dir, "data": {"source": "synthetic",
                                                                  "stats_sha256": f"digest{log.gen_seed}"},
                               "best_epoch": best, "best_val_auc": max(val_aucs), "groups": {}})


@pytest.fixture
def grid(tmp_path):
    root = str(tmp_path)
    # log A: TAN 0.70 / 0.72 / 0.74, CCN 0.73 / 0.71 / 0.76 -> CCN above TAN on seeds 0 and 2
    tan_val = {0: [0.60, 0.65, 0.70, 0.69, 0.68, 0.67], 1: [0.62, 0.66, 0.64, 0.63, 0.62], 2: [0.61, 0.63, 0.62, 0.61, 0.60]}
    for s, a in enumerate([0.70, 0.72, 0.74]):
        _fake_run(root, LOG_A, "tan", s, a, tan_val[s], cap=10)
    for s, a in enumerate([0.73, 0.71, 0.76]):
        _fake_run(root, LOG_A, "ccn", s, a, [0.64, 0.68, 0.67, 0.66, 0.65], cap=10)
    # log B: CCN seed 1 still improving at its cap of 4 epochs (not converged)
    _fake_run(root, LOG_B, "tan", 0, 0.80, [0.7, 0.75, 0.74, 0.73], cap=4)
    _fake_run(root, LOG_B, "tan", 1, 0.78, [0.7, 0.72, 0.71, 0.70], cap=4)
    _fake_run(root, LOG_B, "ccn", 0, 0.79, [0.7, 0.76, 0.75, 0.74], cap=4)
    _fake_run(root, LOG_B, "ccn", 1, 0.81, [0.7, 0.72, 0.73, 0.74], cap=4, stopped_early=False)
    os.makedirs(os.path.join(root, LOG_A.data_dir))
    with open(os.path.join(root, LOG_A.data_dir, "stats.json"), "w") as fh:
        json.dump({"rows_read": 4999, "examples": {"train": 4000, "valid": 500, "test": 499}}, fh)
    return root


def test_log_names_and_paths():
    d = SyntheticLog(0, 100_000)
    assert d.is_default and d.name == "synthetic" and d.data_dir == "out/synthetic/data"
    assert d.runs_name() == "synthetic" and d.runs_name("conv") == "synthetic_conv"
    g = SyntheticLog(11, 200_000)
    assert g.name == "synthetic_g11_r200000" and g.data_dir == "out/synthetic_g11_r200000/data"
    assert g.prep_commands()[0] == ["pipelines.synthetic", "--output=out/synthetic_g11_r200000/log/exposures.csv",
                                    "--rows=200000", "--seed=11"]
    assert "--output_dir=out/synthetic_g11_r200000/data" in g.prep_commands()[1]
    assert SyntheticLog.from_name(g.name) == g and SyntheticLog.from_name("synthetic") == d
    with pytest.raises(ValueError, match="not a synthetic log"):
        SyntheticLog.from_name("mind")


def test_table_numbers_wins_and_convergence(grid):
    md, data = multilog.build([LOG_A, LOG_B], tag="conv", root=grid)
    a, b = data["logs"][LOG_A.name]["groups"], data["logs"][LOG_B.name]["groups"]
    assert a["ccn"]["auc"]["mean"] == pytest.approx(0.22 / 3 + 0.66)  # (0.73 + 0.71 + 0.76) / 3
    assert a["ccn"]["paired_vs_base"] == {"seeds": [0, 1, 2], "n": 3, "wins": 2}
    assert a["ccn"]["relaimpr"]["auc"] == pytest.approx(((0.22 / 3 + 0.16) / 0.22 - 1) * 100)  # +6.06 %
    assert b["ccn"]["paired_vs_base"]["wins"] == 1 and b["ccn"]["convergence"]["at_cap_seeds"] == [1]
    assert a["tan"]["best_epoch"]["mean"] == pytest.approx(7 / 3)  # best epochs 3, 2, 2
    assert a["tan"]["convergence"] == {"caps": [10], "best_epoch_max": 3, "at_cap_seeds": [],
                                       "n_stopped_early": 3}
    rows = {tuple(c.strip() for c in l.split("|")[1:3]): l for l in md.splitlines() if l.startswith("| synthetic_g")}
    ccn_a = rows[(LOG_A.name, "CCN (`ccn`)")]
    assert "| 3 | 0.7333 ± 0.0252 | +6.06% | 2/3 | 2.0 ± 0.0 | 2 / 10 | 3/3 | yes |" in ccn_a
    assert rows[(LOG_A.name, "TAN (`tan`)")].endswith("| +0.00% | - | 2.3 ± 0.6 | 3 / 10 | 3/3 | yes |")
    # the hyperparameters of every log's runs (the caps of both logs; the fake source has no search record)
    assert "## Hyperparameters: what was chosen, and on what" in md
    assert "fixed in the configs (not searched): epochs = [10, 4], early_stopping_patience = 3" in md
    assert "| 4 / 4 | 1/2 | **no**: seeds [1] at cap |" in rows[(LOG_B.name, "CCN (`ccn`)")]
    assert list(rows)[:2] == [(LOG_A.name, "TAN (`tan`)"), (LOG_A.name, "CCN (`ccn`)")]  # Table 2 order
    # the header: each log's generator seed, rows, digest; the size mismatch with stats.json shows
    assert "`synthetic_g2_r5000`: generator seed 2, 5000 rows; data `out/synthetic_g2_r5000/data` (stats digest digest2" in md
    assert "(stats.json: 4999 input rows, not 5000)" in md and "train / valid / test 4000 / 500 / 499" in md
    assert "--data_dir=out/synthetic_g1_r5000/data --model_dir=runs/synthetic_g1_r5000_conv/ccn/seed2" in md
    # curves: mean over the runs that reached each epoch
    tan_curve = {p["epoch"]: p for p in data["logs"][LOG_A.name]["curves"]["tan"]}
    assert tan_curve[2]["n"] == 3 and tan_curve[2]["mean"] == pytest.approx((0.65 + 0.66 + 0.63) / 3)
    assert tan_curve[6]["n"] == 1 and tan_curve[6]["mean"] == pytest.approx(0.67)
    assert sorted(tan_curve) == [1, 2, 3, 4, 5, 6]


def test_ccn_report_flags_runs_at_their_cap(grid):
    md, _ = report.build_report(os.path.join(grid, "runs", LOG_B.runs_name("conv"), "*", "seed*"), base="tan")
    assert "**not converged**" in md and "`ccn` seeds [1]" in md and "`tan` seeds" not in md
    md, _ = report.build_report(os.path.join(grid, "runs", LOG_A.runs_name("conv"), "*", "seed*"), base="tan")
    assert "not converged" not in md


def test_png_and_cli(grid, tmp_path):
    md, _ = multilog.build([LOG_A, LOG_B], tag="conv", root=grid, png="results/curves.png")
    png = os.path.join(grid, "results", "curves.png")
    with open(png, "rb") as fh:
        head = fh.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 5000
    assert "`results/curves.png`" in md and "over the runs that reached e" in md
    # the CLI, run from the grid's root (its relative paths), as the driver calls it
    r = subprocess.run([sys.executable, "-m", "ccn.multilog", f"--logs={LOG_A.name},{LOG_B.name}", "--tag=conv",
                        "--output=results/m.md", "--json=results/m.json", "--png=results/m.png",
                        "--command=python scripts/reproduce_ccn.py --tag=conv"],
                       cwd=grid, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    md = open(os.path.join(grid, "results", "m.md")).read()
    assert "`python scripts/reproduce_ccn.py --tag=conv`; `python -m ccn.multilog --logs=synthetic_g1_r5000" in md
    js = json.load(open(os.path.join(grid, "results", "m.json")))
    assert js["logs"][LOG_A.name]["groups"]["ccn"]["paired_vs_base"]["wins"] == 2
    assert os.path.getsize(os.path.join(grid, "results", "m.png")) > 5000
    r = subprocess.run([sys.executable, "-m", "ccn.multilog", "--logs=synthetic_g9_r1"], cwd=grid,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and "no evaluated runs" in r.stderr


def _dry(monkeypatch, capsys, root, *args):
    monkeypatch.setattr(D, "ROOT", root)
    D.main(["--dry_run", *args])
    return [l[len("$ python -m "):] for l in capsys.readouterr().out.splitlines() if l.startswith("$ python -m ")]


def test_driver_grid_commands(tmp_path, monkeypatch, capsys):
    root = str(tmp_path)
    # resumable: a run with metrics is skipped; a log whose stats.json exists is not prepared again
    done = RunDir(os.path.join(root, "runs", "synthetic_g0_r200000_conv", "tan", "seed0"))
    done.create()
    done.write_metrics("test", {"auc": 0.7})
    os.makedirs(os.path.join(root, "out", "synthetic_g11_r200000", "data"))
    open(os.path.join(root, "out", "synthetic_g11_r200000", "data", "stats.json"), "w").close()
    cmds = _dry(monkeypatch, capsys, root, "--gen_seeds=0,11", "--rows_list=200000", "--seeds=0,1",
                "--only=ccn_notsi,ccn,tan", "--tag=conv", "--converged")
    gen = [c for c in cmds if c.startswith("pipelines.synthetic")]
    assert gen == ["pipelines.synthetic --output=out/synthetic_g0_r200000/log/exposures.csv --rows=200000 --seed=0"]
    assert cmds[1].startswith("pipelines.preprocess") and "--output_dir=out/synthetic_g0_r200000/data" in cmds[1]
    train = [c for c in cmds if c.startswith("ccn.train")]
    conv = "--epochs=60 --early_stopping_patience=3"
    assert train[0] == ("ccn.train --flagfile=configs/ccn_synthetic.flags --seed=0 "
                        f"--data_dir=out/synthetic_g0_r200000/data --model_dir=runs/synthetic_g0_r200000_conv/ccn/seed0 {conv}")
    assert (f"ccn.train --flagfile=configs/tan_synthetic.flags --seed=1 --data_dir=out/synthetic_g11_r200000/data "
            f"--model_dir=runs/synthetic_g11_r200000_conv/tan/seed1 {conv}") in train
    assert not any("synthetic_g0_r200000_conv/tan/seed0" in c for c in train)  # has metrics: skipped
    # TAN and CCN on every log and seed before any other model: 2 logs x 2 seeds x 2 - 1 skipped
    assert len(train) == 7 + 4 and all("ccn_notsi" in c for c in train[7:])
    assert all(f"--model_dir=runs/synthetic_g{g}_r200000_conv/" in c for g in (0, 11)
               for c in [x for x in train if f"out/synthetic_g{g}_r" in x])
    reports = [c for c in cmds if c.startswith(("ccn.report", "ccn.multilog"))]
    # the reports read the ledger (results/runs), which outlives runs/
    assert reports[0].startswith("ccn.report '--runs_glob=results/runs/synthetic_g0_r200000_conv/*/seed*'")
    assert "--output=results/ccn_synthetic_g11_r200000_conv.md" in reports[1]
    assert reports[2].startswith("ccn.multilog --logs=synthetic_g0_r200000,synthetic_g11_r200000 --tag=conv "
                                 "--runs_dir=results/runs")
    assert "--png=results/ccn_synthetic_multilog_conv_curves.png" in reports[2]


def test_driver_default_log_keeps_its_paths(tmp_path, monkeypatch, capsys):
    cmds = _dry(monkeypatch, capsys, str(tmp_path), "--seeds=0", "--only=tan")
    assert cmds == ["pipelines.synthetic --output=out/synthetic/log/exposures.csv --rows=100000 --seed=0",
                    "pipelines.preprocess --source=synthetic --input=out/synthetic/log/exposures.csv "
                    "--output_dir=out/synthetic/data --seed=0 --runner=DirectRunner",
                    "ccn.train --flagfile=configs/tan_synthetic.flags --seed=0",
                    "ccn.report '--runs_glob=results/runs/synthetic/*/seed*' --layout=ccn --base=tan "
                    "--output=results/ccn_synthetic.md --json=results/ccn_synthetic.json "
                    "'--title=CCN Table 2 layout on synthetic'"]
    cmds = _dry(monkeypatch, capsys, str(tmp_path), "--seeds=0", "--only=tan", "--tag=long", "--extra=--epochs=30")
    assert "ccn.train --flagfile=configs/tan_synthetic.flags --seed=0 --model_dir=runs/synthetic_long/tan/seed0 --epochs=30" in cmds
    with pytest.raises(SystemExit, match="needs a --tag"):
        D.main(["--dry_run", "--converged"])
    with pytest.raises(SystemExit, match="synthetic log"):
        D.main(["--dry_run", "--dataset=mind", "--gen_seeds=1"])


def test_driver_ledger(tmp_path, monkeypatch):
    """A finished run is archived to the ledger (record only) and not trained again, even once
    runs/ is gone; a run in the ledger is skipped; the reports read the ledger; --ledger= reads runs/."""
    root = str(tmp_path)
    monkeypatch.setattr(D, "ROOT", root)
    os.makedirs(os.path.join(root, "out", "synthetic", "data"))
    open(os.path.join(root, "out", "synthetic", "data", "stats.json"), "w").close()
    calls = []

    def fake_run(args, log):  # "trains" ccn seed 1: leaves an evaluated run dir
        calls.append(list(args))
        if args[0] == "ccn.train":
            _fake_run(root, SyntheticLog(0, 100000), "ccn", 1, 0.7, [0.6, 0.7], cap=60)
        return 0

    monkeypatch.setattr(D, "run", fake_run)
    _fake_run(root, SyntheticLog(0, 100000), "ccn", 0, 0.71, [0.6, 0.7], cap=60)  # finished earlier
    D.main(["--seeds=0,1", "--only=ccn", "--tag=conv"])
    train = [c for c in calls if c[0] == "ccn.train"]
    assert train == [["ccn.train", "--flagfile=configs/ccn_synthetic.flags", "--seed=1",
                      "--model_dir=runs/synthetic_conv/ccn/seed1"]]
    for s in (0, 1):
        led = RunDir(os.path.join(root, "results", "runs", "synthetic_conv", "ccn", f"seed{s}"))
        assert led.has_metrics() and led.has_config() and led.has_history() and not led.has_best_weights()
    report = [c for c in calls if c[0] == "ccn.report"]
    assert report and report[0][1] == "--runs_glob=results/runs/synthetic_conv/*/seed*"

    # --report_only trains nothing but still archives a finished run
    _fake_run(root, SyntheticLog(0, 100000), "ccn", 2, 0.72, [0.6, 0.7], cap=60)
    calls.clear()
    D.main(["--seeds=0,1,2,3", "--only=ccn", "--tag=conv", "--report_only"])
    assert [c for c in calls if c[0] == "ccn.train"] == [] and [c[0] for c in calls] == ["ccn.report"]
    assert RunDir(os.path.join(root, "results", "runs", "synthetic_conv", "ccn", "seed2")).has_metrics()

    import shutil
    shutil.rmtree(os.path.join(root, "runs"))  # a new machine: runs/ is gone, the ledger is committed
    calls.clear()
    D.main(["--seeds=0,1", "--only=ccn", "--tag=conv"])
    assert [c for c in calls if c[0] == "ccn.train"] == []
    calls.clear()
    D.main(["--seeds=0", "--only=ccn", "--tag=conv", "--ledger="])  # no ledger: runs/ decides
    assert [c[:4] for c in calls if c[0] == "ccn.train"] == [["ccn.train", "--flagfile=configs/ccn_synthetic.flags",
                                                           "--seed=0", "--model_dir=runs/synthetic_conv/ccn/seed0"]]
