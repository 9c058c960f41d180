"""Trainer + ccn.train / ccn.evaluate / ccn.report end to end on the fake dataset (tiny runs)."""
import glob
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ccn import models  # noqa: E402
from ccn import train as T  # noqa: E402
from ctrcore.config import ConfigError, TrainConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_KEYS = ("auc", "logloss", "gauc", "page_auc", "n", "groups", "model", "seed", "split",
               "data_dir", "data", "run_key")


def _missing(model, aux=()):
    """What this configuration needs that is not there yet (None if complete)."""
    from ctrcore import auxloss

    for mod in ("ctrcore.backbones", "ctrcore.model"):
        if importlib.util.find_spec(mod) is None:
            return mod
    for a in models.all_aux(model, aux):
        if a not in auxloss.names():
            return f"aux loss {a!r}"
    return None


def _skip_if_missing(model, aux=()):
    m = _missing(model, aux)
    if m:
        pytest.skip(f"{m} is not in the repository yet (needed by --model={model} "
                    f"--aux_losses={','.join(aux)})")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ctrcore.testing import write_fake_dataset
    d = str(tmp_path_factory.mktemp("fake") / "data")
    write_fake_dataset(d, n_examples=600, seed=0)
    return d


def _cfg(data_dir, model_dir, **kw):
    base = dict(data_dir=data_dir, model_dir=model_dir, batch_size=32, eval_batch_size=512, emb_dim=4,
                mlp_units=[8], num_heads=1, cm_dim=4, dropout=0.0, verbose=0, epochs=1, train_steps=2,
                backup_every_steps=0, early_stopping_patience=0)
    base.update(kw)
    return TrainConfig(**base)


def _lp(**kw):
    lp = models.default_loss_params()
    lp.update(aqcl_codebook_size=8, aqcl_top_k=2, aqcl_z_dim=8)
    lp.update(kw)
    return lp


# every --model value (+ aux-loss combinations) builds, trains a few steps and evaluates;
# the optimizers are varied across the cases so each is exercised
CASES = [(m, (), opt) for m, opt in zip(models.MODELS, ["adagrad", "adam", "composite"] * 4)] + [
    ("din", ("aqcl",), "adam"), ("din", ("icl",), "adagrad"), ("ccn", ("aqcl",), "composite"),
    ("din", ("dropoutnet", "deepmcp", "dmr"), "adam"),
]
# more TrainConfig for some cases (run key -> kwargs): each folds in a check that would otherwise
# cost a run of its own (a model build + traces); the other cases of the same backbone keep the
# defaults (train_input auto, no XLA)
CASE_KW = {
    "ccn": dict(train_input="memory", train_steps=3),  # the in-memory training input, named
    "din": dict(jit_compile=True),  # the XLA train step runs on CPU
}


@pytest.mark.parametrize("model, aux, optimizer", CASES,
                         ids=[models.run_key(m, a) + "-" + o for m, a, o in CASES])
def test_every_model_trains_and_evaluates(data, tmp_path, model, aux, optimizer):
    _skip_if_missing(model, aux)
    md = str(tmp_path / "run")
    cfg = _cfg(data, md, model=model, aux_losses=list(aux), optimizer=optimizer, learning_rate=0.01,
               **CASE_KW.get(models.run_key(model, aux), {}))
    s = T.run(cfg, _lp(), argv=[])
    m = s["metrics"]
    for k in METRIC_KEYS:
        assert k in m, k
    assert m["n"] > 0 and 0.0 <= m["auc"] <= 1.0 and np.isfinite(m["logloss"])
    assert m["run_key"] == models.run_key(model, aux)
    h = json.load(open(os.path.join(md, "history.json")))
    assert h["completed"] and h["runtime"]["steps"] == cfg.train_steps
    train_terms = h["epochs"][0]["train"]
    assert "ce" in train_terms and "total" in train_terms and np.isfinite(train_terms["total"])
    aux_terms = set(train_terms) - {"ce", "total", "loss", "auc", "emb_l2", "regularization"}
    if "ccn" in models.all_aux(model, aux):
        assert any(k.startswith("ccn") for k in aux_terms), train_terms
    if models.all_aux(model, aux):
        assert aux_terms, f"no aux loss term reported: {train_terms}"
    for a in aux:  # each added aux loss reports its own term(s), traced (cf. test_baselines.py)
        assert any(k.startswith(a) for k in aux_terms), (a, train_terms)


def _tags(event_dir):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2
    tags = set()
    for f in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
        for r in tf.data.TFRecordDataset(f):
            e = event_pb2.Event.FromString(r.numpy())
            tags.update(v.tag for v in e.summary.value)
    return tags


def test_short_training_learns_and_writes_everything(tmp_path_factory):
    """~100 steps on a 4000-example fake set: val and test AUC clearly above 0.5 (TAN reaches
    ~0.8 here: the fake clicks depend on the trigger's category)."""
    _skip_if_missing("tan")
    from ctrcore.testing import write_fake_dataset
    d = str(tmp_path_factory.mktemp("learn") / "data")
    write_fake_dataset(d, n_examples=4000, seed=0)
    md = str(tmp_path_factory.mktemp("learnrun") / "tan")
    cfg = _cfg(d, md, model="tan", batch_size=64, epochs=2, train_steps=None, optimizer="adam",
               learning_rate=0.01, emb_dim=8, mlp_units=[32], tb_update_freq=5,
               export_base=str(tmp_path_factory.mktemp("export")), model_name="tan")
    s = T.run(cfg, _lp(), argv=["--model=tan"])
    if importlib.util.find_spec("serving.export") is not None:  # exported at the end
        assert s["export"] and os.path.exists(os.path.join(s["export"], "saved_model.pb")), s["export"]
    h = json.load(open(os.path.join(md, "history.json")))
    assert h["best"]["val_auc"] > 0.65, h["epochs"]
    assert s["metrics"]["auc"] > 0.65, s["metrics"]
    assert s["metrics"]["gauc"] > 0.6 and s["metrics"]["page_auc"] > 0.6, s["metrics"]
    assert len(h["epochs"]) == 2 and [e["epoch"] for e in h["epochs"]] == [1, 2]
    best_epoch = max(h["epochs"], key=lambda e: e["val"]["auc"])["epoch"]
    assert h["best"]["epoch"] == best_epoch == s["metrics"]["best_epoch"]
    # records
    rec = json.load(open(os.path.join(md, "train_config.json")))
    assert rec["seed"] == 0 and rec["config"]["model"] == "tan" and rec["data"]["stats_sha256"]
    assert rec["run_info"]["command"] == "python -m ccn.train --model=tan"
    # the code version: this checkout's commit (CI runs in a clone), or None outside git
    assert set(rec["code"]) <= {"commit", "dirty"}
    assert rec["code"]["commit"] is None or len(rec["code"]["commit"]) == 40
    assert rec["plan"]["steps_per_epoch"] == rec["data"]["examples"]["train"] // 64
    assert os.path.exists(os.path.join(md, "best", "weights.index"))
    md_text = open(os.path.join(md, "metrics.md")).read()
    assert "| all |" in md_text and "highly active" in md_text
    # TensorBoard scalars: every loss term, train and validation
    train_tags, val_tags = _tags(os.path.join(md, "tb", "train")), _tags(os.path.join(md, "tb", "validation"))
    assert {"batch_ce", "batch_total", "epoch_ce", "epoch_total"} <= train_tags, train_tags
    assert {"epoch_auc", "epoch_logloss", "epoch_gauc"} <= val_tags, val_tags
    # the finished run is not retrained when the command is repeated; evaluation is redone
    s2 = T.run(cfg, _lp(), argv=["--model=tan"], export=False)
    assert s2["skipped"] and s2["metrics"]["auc"] == pytest.approx(s["metrics"]["auc"], abs=1e-6)
    assert json.load(open(os.path.join(md, "history.json")))["runtime"]["steps"] == h["runtime"]["steps"]
    # ... and a different configuration in the same model_dir is refused
    with pytest.raises(ConfigError, match="different configuration"):
        T.run(_cfg(d, md, model="tan", batch_size=64, epochs=2, train_steps=None, optimizer="adam",
                   learning_rate=0.02, emb_dim=8, mlp_units=[32]), _lp(), argv=[])


def test_resume_check_tolerates_a_new_unset_parameter(tmp_path):
    """A run recorded before a loss parameter existed resumes when the new parameter is unset
    (None), and is refused when it is set or an old one changed."""
    from ctrcore.record import check_resume
    from ctrcore.rundir import RunDir

    run = RunDir(str(tmp_path))
    check = lambda new: check_resume(run, new)  # noqa: E731
    path = str(tmp_path / "train_config.json")
    data = {"feature_spec_sha256": "a", "stats_sha256": "b"}
    old = {"config": {"model": "tan"}, "run_info": {"loss_params": {"ccn_tau": 0.5}, "command": "x"}, "data": data}
    with open(path, "w") as fh:
        json.dump(old, fh)
    new = lambda **lp: {"config": {"model": "tan"}, "run_info": {"loss_params": dict({"ccn_tau": 0.5}, **lp),
                                                                  "command": "y"}, "data": data}
    check(new(intent_weight=None))  # added later, unset: same run
    # a config field added later (absent from the old record) at its default: same run
    later = new()
    later["config"] = {"model": "tan", "l2_emb": 0.0}
    check(later)
    later["config"]["l2_emb"] = 1e-4
    with pytest.raises(ConfigError, match="l2_emb"):
        check(later)
    with pytest.raises(ConfigError, match="loss_params"):
        check(new(intent_weight=0.3))
    with pytest.raises(ConfigError, match="loss_params"):
        check(new(ccn_tau=0.7))


def test_resume_after_interruption_continues_from_backup(data, tmp_path):
    from ctrcore.trainer import InterruptAfterSteps
    _skip_if_missing("din")
    md = str(tmp_path / "run")
    cfg = _cfg(data, md, model="din", epochs=3, steps_per_epoch=5, train_steps=None,
               backup_every_steps=2, optimizer="adam")
    # first session: killed during epoch 2 at global step 8; backups at step 5 (epoch end) and
    # 7 (every 2 steps within epoch 2; the kill comes before the step-8 backup would be due)
    with pytest.raises(KeyboardInterrupt):
        T.run(cfg, _lp(), argv=[], callbacks=[InterruptAfterSteps(8)])
    h1 = json.load(open(os.path.join(md, "history.json")))
    assert not h1["completed"] and [e["epoch"] for e in h1["epochs"]] == [1]
    assert os.listdir(os.path.join(md, "backup"))
    assert not os.path.exists(os.path.join(md, "metrics.json"))
    # same command again: resumes at epoch 2, global step 7 (not from scratch)
    s = T.run(cfg, _lp(), argv=[])
    h = json.load(open(os.path.join(md, "history.json")))
    assert h["completed"]
    assert len(h["sessions"]) == 2
    assert h["sessions"][0]["resumed_from"] is None
    assert h["sessions"][1]["resumed_from"] == {"epoch": 1, "global_step": 7}
    assert h["sessions"][1]["steps"] == 15 - 7  # only the remaining steps were run
    assert [e["epoch"] for e in h["epochs"]] == [1, 2, 3]
    assert [e["global_step"] for e in h["epochs"]] == [5, 10, 15]
    assert h["runtime"]["steps"] == 15
    assert not os.listdir(os.path.join(md, "backup")) if os.path.exists(os.path.join(md, "backup")) else True
    assert os.path.exists(os.path.join(md, "metrics.json")) and s["metrics"]["n"] > 0


def test_resumed_run_equals_the_uninterrupted_one(data, tmp_path):
    """Interrupted at step 8 and resumed from its step-7 backup, a run without random draws
    (dropout 0) ends bit-for-bit where the uninterrupted run ends: the restored weights and
    optimizer state and an in-memory input that continues at the restored step (backup_step)."""
    from ctrcore.callbacks import backup_step
    from ctrcore.trainer import InterruptAfterSteps
    _skip_if_missing("din")
    out = {}
    for name in ("straight", "resumed"):
        md = str(tmp_path / name)
        cfg = _cfg(data, md, model="din", epochs=3, steps_per_epoch=5, train_steps=None,
                   backup_every_steps=2, optimizer="adagrad", learning_rate=0.05, dropout=0.0,
                   train_input="memory")
        if name == "resumed":
            with pytest.raises(KeyboardInterrupt):
                T.run(cfg, _lp(), argv=[], callbacks=[InterruptAfterSteps(8)], export=False)
            assert backup_step(os.path.join(md, "backup")) == 7
        out[name] = T.run(cfg, _lp(), argv=[], export=False)["metrics"]
    assert backup_step(str(tmp_path / "nothing")) == 0
    assert out["resumed"]["auc"] == out["straight"]["auc"] and out["resumed"]["logloss"] == out["straight"]["logloss"]


@pytest.mark.slow
def test_resume_after_subprocess_kill(data, tmp_path):
    """The CLI killed (SIGKILL) mid-run resumes from its last backup when rerun."""
    _skip_if_missing("din")
    import signal
    import time
    md = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "ccn.train", f"--data_dir={data}", f"--model_dir={md}", "--model=din",
           "--batch_size=8", "--epochs=1", "--steps_per_epoch=400", "--backup_every_steps=20",
           "--emb_dim=4", "--mlp_units=8", "--eval_batch_size=512", "--verbose=0", "--optimizer=adam"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not glob.glob(os.path.join(md, "backup", "**", "*.index"), recursive=True):
            time.sleep(0.2)
        time.sleep(1.0)
        assert p.poll() is None, "the run finished before it could be killed"
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    assert not os.path.exists(os.path.join(md, "metrics.json"))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    h = json.load(open(os.path.join(md, "history.json")))
    resumed = h["sessions"][-1]["resumed_from"]
    assert resumed is not None and resumed["global_step"] >= 20 and resumed["global_step"] % 20 == 0
    assert h["runtime"]["steps"] == 400 and h["sessions"][-1]["steps"] == 400 - resumed["global_step"]
    assert os.path.exists(os.path.join(md, "metrics.json"))


@pytest.fixture(scope="module")
def two_runs(data, tmp_path_factory):
    _skip_if_missing("din")
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for key, model, seed in (("a", "din", 0), ("b", "din", 1)):
        md = str(root / model / f"seed{seed}")
        T.run(_cfg(data, md, model=model, seed=seed, train_steps=4, optimizer="adam", learning_rate=0.01),
              _lp(), argv=[f"--model={model}", f"--seed={seed}"])
        dirs[key] = md
    return root, dirs


def test_evaluate_cli_writes_metrics_with_relaimpr(two_runs, tmp_path):
    root, dirs = two_runs
    from ccn import evaluate as E
    r = subprocess.run([sys.executable, "-m", "ccn.evaluate", f"--model_dir={dirs['b']}",
                        f"--base_run={dirs['a']}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.load(open(os.path.join(dirs["b"], "metrics.json")))
    for k in METRIC_KEYS:
        assert k in m
    assert set(m["groups"]) == {"non_active", "slightly_active", "highly_active"}
    for g in m["groups"].values():
        for k in ("auc", "logloss", "gauc", "page_auc", "n"):
            assert k in g
    base = json.load(open(os.path.join(dirs["a"], "metrics.json")))
    from ctrcore.metrics import relaimpr
    def same(got, want):  # undefined RelaImpr (base within 0.01 of chance) is stored as None / nan
        if want is None or math.isnan(want):
            return got is None or math.isnan(got)
        return got == pytest.approx(want)

    assert same(m["relaimpr"]["auc"], relaimpr(m["auc"], base["auc"]))
    for g in m["groups"]:
        assert same(m["relaimpr"]["groups"][g], relaimpr(m["groups"][g]["auc"], base["groups"][g]["auc"]))
    text = open(os.path.join(dirs["b"], "metrics.md")).read()
    assert "RelaImpr" in text and "| slightly active |" in text
    # the rebuilt model (train_config.json + best weights) reproduces the validation AUC of the
    # kept epoch; another split goes to metrics_<split>.json
    mv = E.evaluate_run(dirs["a"], split="valid")
    assert mv["split"] == "valid" and mv["auc"] == pytest.approx(base["best_val_auc"], abs=1e-6)
    assert os.path.exists(os.path.join(dirs["a"], "metrics_valid.json"))
    r = subprocess.run([sys.executable, "-m", "ccn.evaluate", f"--model_dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "train_config.json" in r.stderr


def test_report_over_fake_runs(two_runs, tmp_path):
    from ccn import report
    root, dirs = two_runs
    md, data = report.build_report(os.path.join(str(root), "*", "seed*"), layout="ccn", base="din")
    g = data["groups"]
    assert g["din"]["n_seeds"] == 2 and g["din"]["seeds"] == [0, 1]
    aucs = [json.load(open(os.path.join(dirs[k], "metrics.json")))["auc"] for k in ("a", "b")]
    assert g["din"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert g["din"]["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    from ctrcore import metrics as M
    # 0 against itself, or undefined when the tiny fake runs' AUC is within 0.01 of chance
    want = M.relaimpr(g["din"]["auc"]["mean"], g["din"]["auc"]["mean"])
    assert g["din"]["relaimpr"]["auc"] == pytest.approx(want, nan_ok=True)
    assert "DIN (`din`) | 2 |" in md and "python -m ccn.train --model=din --seed=1" in md
    assert "SIM (`sim`) | 0 | not run" in md


@pytest.mark.parametrize("lookup_in_input,train_input", [(True, "cache"), (False, "stream"),
                                                         (True, "memory"), (True, "auto")])
def test_make_train_input_subset_lookup_and_cache(data, tmp_path, lookup_in_input, train_input):
    import tensorflow as tf

    from ctrcore import schema, trainer

    cfg = _cfg(data, str(tmp_path / "m"), model="din", lookup_in_input=lookup_in_input,
               train_input=train_input, batch_size=32)
    spec, stats = schema.load_spec(data), schema.load_stats(data)
    model = models.model_factory(cfg)(spec, stats)
    ds = trainer.make_train_input(cfg, spec, model)
    it = iter(ds)
    for _ in range(3 * (600 // 32)):  # several passes: the cached epochs too
        batch = next(it)
    names = set(model.train_feature_names())
    assert set(batch) <= names and "label" in batch and "short_item_ids" in batch
    assert not any(n.startswith(("long_", "context_")) for n in batch)
    want = tf.int32 if lookup_in_input else tf.string
    assert batch["item_id"].dtype == want and batch["short_item_ids"].dtype == want


def test_resolve_train_input_auto(data, tmp_path):
    """auto holds the split in memory when its parsed columns fit, else streams; the estimate
    is the exact size of the columns load_columns builds."""
    from ctrcore import data as D, schema, trainer

    spec, stats = schema.load_spec(data), schema.load_stats(data)
    cfg = _cfg(data, str(tmp_path / "m"), model="din")
    model = models.model_factory(cfg)(spec, stats)
    names, lookup = model.train_feature_names(), model.backbone.lookup
    cols = D.load_columns(data, "train", spec=spec, features=names, map_fn=lookup)
    rows = len(next(iter(cols.values())))
    assert rows == stats["examples"]["train"]
    assert trainer.parsed_bytes_per_example(spec, names) * rows == sum(v.nbytes for v in cols.values())
    mode, why = trainer.resolve_train_input(cfg, spec, names, lookup)
    assert mode == "memory" and "MiB" in why
    for kw, want in ((dict(in_memory_max_mb=0), "stream"), (dict(lookup_in_input=False), "stream"),
                     (dict(batch_size=rows + 1), "stream"), (dict(train_input="cache"), "cache"),
                     (dict(train_input="stream"), "stream")):
        assert trainer.resolve_train_input(_cfg(data, "m", model="din", **kw), spec, names,
                                           lookup)[0] == want, kw
    assert trainer.resolve_train_input(cfg, spec, names, None)[0] == "stream"
    assert trainer.resolve_train_input(cfg, spec, names, lookup, stats={})[0] == "stream"


def test_code_version_and_its_sessions(tmp_path, monkeypatch):
    """code_version: a git checkout's HEAD and dirty flag, None elsewhere; write_record keeps the
    first session's code and lists every session's once a resumed one ran other code."""
    from ctrcore import runtime, trainer
    from ctrcore.rundir import RunDir
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)
    git("init", "-q")
    (repo / "f.py").write_text("x = 1\n")
    git("add", "f.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    v = runtime.code_version(str(repo))
    assert len(v["commit"]) == 40 and v["dirty"] is False
    (repo / "f.py").write_text("x = 2\n")
    assert runtime.code_version(str(repo)) == dict(v, dirty=True)
    (repo / "sub").mkdir()  # inside a checkout but not its top (as site-packages in a venv could be)
    assert runtime.code_version(str(repo / "sub")) == {"commit": None}
    assert runtime.code_version(str(tmp_path / "nogit")) == {"commit": None}

    run = RunDir(str(tmp_path / "run"))
    run.create()
    codes = iter([{"commit": "a" * 40, "dirty": False}, {"commit": "a" * 40, "dirty": False},
                  {"commit": "b" * 40, "dirty": True}])
    monkeypatch.setattr(trainer, "code_version", lambda: next(codes))
    trainer.write_record(run, {"seed": 1})
    assert run.read_config()["code"]["commit"] == "a" * 40 and "code_sessions" not in run.read_config()
    trainer.write_record(run, {"seed": 1})  # resumed on the same code
    assert "code_sessions" not in run.read_config()
    trainer.write_record(run, {"seed": 1})  # resumed on other code
    rec = run.read_config()
    assert rec["code"]["commit"] == "a" * 40
    assert [c["commit"] for c in rec["code_sessions"]] == ["a" * 40, "b" * 40]
