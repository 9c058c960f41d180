"""aqcl.search: resumable, budgeted TPE search of AQCL's alpha curve (Eq. 6-7)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aqcl import search


def _quadratic(calls):
    """Fake objective with its minimum at w1=1, w2=2 (log scale); records every call."""
    def objective(params, trial_dir):
        calls.append((params["w1"], params["w2"], trial_dir))
        return float(np.log(params["w1"]) ** 2 + np.log(params["w2"] / 2.0) ** 2)
    return objective


def test_alpha_curve_eq6():
    r = np.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(search.alpha_curve(r, 0.5, 2.0), np.exp(-0.5 * r ** 2))
    assert search.alpha_curve(0.0, 3.0, 0.5) == pytest.approx(1.0)
    a = search.alpha_curve(np.linspace(0, 5, 50), 1.3, 0.7)
    assert np.all(np.diff(a) <= 0) and np.all((a >= 0) & (a <= 1))


def test_search_resumes_from_sqlite_and_respects_budget(tmp_path):
    out = str(tmp_path / "s")
    calls = []
    # the outputs (a matplotlib plot after every trial) are checked once, after the last call
    study = search.run_search(_quadratic(calls), out_dir=out, n_trials=4, seed=3,
                              n_startup_trials=2, heartbeat_s=None, write_outputs=False,
                              log=lambda m: None)
    assert len(calls) == 4 and len(study.trials) == 4
    assert os.path.exists(os.path.join(out, "search.db"))
    # "interrupted" and restarted with a bigger budget: only the missing trials run
    search.run_search(_quadratic(calls), out_dir=out, n_trials=6, seed=3, n_startup_trials=2,
                      heartbeat_s=None, write_outputs=False, log=lambda m: None)
    assert len(calls) == 6
    # same budget again: nothing to do (the outputs are written from the stored trials)
    study = search.run_search(_quadratic(calls), out_dir=out, n_trials=6, seed=3,
                              n_startup_trials=2, heartbeat_s=None, log=lambda m: None)
    assert len(calls) == 6 and len(study.trials) == 6
    for w1, w2, d in calls:  # log-uniform within the default ranges, one directory per trial
        assert 0.01 <= w1 <= 10 and 0.1 <= w2 <= 10
    assert len({d for _, _, d in calls}) == 6
    best = json.load(open(os.path.join(out, "best.json")))
    vals = [np.log(w1) ** 2 + np.log(w2 / 2) ** 2 for w1, w2, _ in calls]
    assert best["value"] == pytest.approx(min(vals)) and best["n_complete"] == 6
    assert os.path.getsize(os.path.join(out, "alpha_curve.png")) > 1000
    csv_lines = open(os.path.join(out, "trials.csv")).read().strip().splitlines()
    assert len(csv_lines) == 7 and csv_lines[0].startswith("number,state,w1,w2,value")
    assert "| number |" in open(os.path.join(out, "trials.md")).read()


def test_search_is_seeded(tmp_path):
    runs = []
    for i in range(2):
        calls = []
        search.run_search(_quadratic(calls), out_dir=str(tmp_path / f"r{i}"), n_trials=3,
                          seed=7, n_startup_trials=2, heartbeat_s=None, write_outputs=False,
                          log=lambda m: None)
        runs.append([(a, b) for a, b, _ in calls])
    assert runs[0] == runs[1]


def test_joining_process_does_not_replay_the_first_ones_draws(tmp_path):
    """A resumed search (or a second worker on the same study) with the same --seed proposes new
    points, not the start-up draws the first process already evaluated."""
    out = str(tmp_path / "j")
    calls = []
    kw = dict(out_dir=out, seed=5, n_startup_trials=10, heartbeat_s=None, write_outputs=False,
              log=lambda m: None)
    search.run_search(_quadratic(calls), n_trials=2, **kw)
    search.run_search(_quadratic(calls), n_trials=4, **kw)
    params = [(round(a, 9), round(b, 9)) for a, b, _ in calls]
    assert len(params) == 4 and len(set(params)) == 4, params


def test_failed_trials_do_not_count_and_stop(tmp_path):
    calls = []

    def flaky(params, trial_dir):
        calls.append(params)
        if len(calls) % 2 == 1:
            raise RuntimeError("training crashed")
        return 1.0

    study = search.run_search(flaky, out_dir=str(tmp_path / "f"), n_trials=2, seed=0,
                              heartbeat_s=None, write_outputs=False, log=lambda m: None)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 2

    def always_fails(params, trial_dir):
        raise RuntimeError("boom")

    study = search.run_search(always_fails, out_dir=str(tmp_path / "g"), n_trials=5,
                              max_failures=3, heartbeat_s=None, log=lambda m: None)
    assert len(study.trials) == 3
    assert not os.path.exists(str(tmp_path / "g" / "best.json"))


def test_trial_of_dead_process_is_retried_in_its_directory(tmp_path):
    """A trial left RUNNING by a killed search is re-run with the same (w1, w2) and directory."""
    import optuna

    out = str(tmp_path / "k")
    storage = "sqlite:///" + os.path.join(out, "search.db")
    os.makedirs(out)
    st = optuna.create_study(study_name="aqcl_alpha", storage=storage, direction="minimize")
    t = st.ask({"w1": optuna.distributions.FloatDistribution(0.01, 10, log=True),
                "w2": optuna.distributions.FloatDistribution(0.1, 10, log=True)})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    t.set_user_attr("host", socket.gethostname())
    t.set_user_attr("pid", dead.pid)
    w1, w2 = t.params["w1"], t.params["w2"]
    calls = []
    study = search.run_search(_quadratic(calls), out_dir=out, n_trials=1, heartbeat_s=None,
                              write_outputs=False, log=lambda m: None)
    assert [(a, b) for a, b, _ in calls] == [(w1, w2)]
    assert calls[0][2].endswith("trial_000")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]


def test_subprocess_objective_command_and_metric(tmp_path):
    obj = search.SubprocessObjective(module="some.trainer", flagfile="a.flags",
                                     extra_flags=["--epochs=1"])
    cmd = obj.command({"w1": 0.5, "w2": 2.0}, "/x/trial_001")
    assert cmd[1:] == ["-m", "some.trainer", "--flagfile=a.flags", "--epochs=1",
                       "--aqcl_w1=0.5", "--aqcl_w2=2.0", "--model_dir=/x/trial_001"]
    # an already finished run is read, not retrained; the objective is the validation logloss
    # of the kept (best val AUC) epoch, not the test metrics
    d = tmp_path / "trial_001"
    d.mkdir()
    (d / "history.json").write_text(json.dumps({"completed": True, "best": {"epoch": 2}, "epochs": [
        {"epoch": 1, "val": {"auc": 0.6, "logloss": 0.50}},
        {"epoch": 2, "val": {"auc": 0.7, "logloss": 0.55}},
        {"epoch": 3, "val": {"auc": 0.65, "logloss": 0.45}}]}))
    (d / "metrics.json").write_text(json.dumps({"logloss": 0.1, "auc": 0.9}))
    assert obj({"w1": 0.5, "w2": 2.0}, str(d)) == pytest.approx(0.55)
    assert search.read_objective(str(d), "history:min.val.logloss") == pytest.approx(0.45)
    assert search.read_objective(str(d), "logloss") == pytest.approx(0.1)
    assert search.read_objective(str(d), "history.json:best.epoch") == 2
    with pytest.raises(KeyError):
        search.get_metric({"auc": 1}, "valid.logloss")


@pytest.mark.slow
def test_cli_one_real_trial_end_to_end(tmp_path):
    """`python -m aqcl.search` with one real DIN+AQCL trial on write_fake_dataset data (~1 min)."""
    from ctrcore.testing import write_fake_dataset

    data = str(tmp_path / "data")
    write_fake_dataset(data, n_examples=600, seed=0)
    flags = tmp_path / "trial.flags"
    flags.write_text("\n".join([f"--data_dir={data}", "--model=din", "--aux_losses=aqcl",
                                "--epochs=1", "--batch_size=64", "--optimizer=adam",
                                "--emb_dim=8", "--mlp_units=16,8", "--aqcl_codebook_size=16",
                                "--verbose=0"]) + "\n")
    out = str(tmp_path / "search")
    cmd = [sys.executable, "-m", "aqcl.search", f"--model_dir={out}", "--trainer_module=ccn.train",
           f"--train_flags={flags}",
           "--n_trials=1", "--heartbeat_s=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    best = json.load(open(os.path.join(out, "best.json")))
    trial_dir = best["trial_dir"]
    hist = json.load(open(os.path.join(trial_dir, "history.json")))
    assert best["value"] == pytest.approx(hist["epochs"][0]["val"]["logloss"])
    cfg = json.load(open(os.path.join(trial_dir, "train_config.json")))
    lp = cfg["run_info"]["loss_params"]
    assert lp["aqcl_w1"] == pytest.approx(best["w1"]) and lp["aqcl_w2"] == pytest.approx(best["w2"])
    assert best["mean_history_length"] > 0  # stats.json found through --train_flags' --data_dir
    assert os.path.getsize(os.path.join(out, "alpha_curve.png")) > 1000
    # a second call with the same budget trains nothing
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and len(os.listdir(os.path.join(out, "trials"))) == 1
