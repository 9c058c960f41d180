"""scripts/compare_backbones_deepctr.py: a DeepCTR run on the fake data writes its metrics and
history, the report aggregates them, a finished run is not started again."""
import importlib.util
import json
import os

import ctrcore  # noqa: F401
import pytest

from ctrcore import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location("compare_backbones_deepctr",
                                                  os.path.join(ROOT, "scripts", "compare_backbones_deepctr.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    testing.write_fake_dataset(str(d / "data"), n_examples=1200, seed=1)
    return d


def test_deepctr_run_report_and_resume(fake, monkeypatch):
    pytest.importorskip("deepctr")  # the optional peer (pip install -e .[bench]), as the FuxiCTR tests
    C = _script()
    data_dir, runs, res = str(fake / "data"), str(fake / "runs"), str(fake / "res")
    old = os.getcwd()
    try:
        C.main(["--worker", "--model=deepctr_wdl", "--seed=3", f"--run_dir={runs}/deepctr_wdl/seed3",
                f"--data_dir={data_dir}"])
    finally:
        os.chdir(old)
    m = json.load(open(f"{runs}/deepctr_wdl/seed3/metrics.json"))
    h = json.load(open(f"{runs}/deepctr_wdl/seed3/history.json"))
    cfg = C.flagfile_config("wide_deep_beauty", data_dir)
    assert m["seed"] == 3 and m["model"] == "deepctr.WDL" and 0.0 <= m["auc"] <= 1.0
    assert m["setup"]["emb_dim"] == cfg.emb_dim and m["setup"]["mlp_units"] == list(cfg.mlp_units)
    assert m["setup"]["batch_size"] == cfg.batch_size
    assert m["data"]["feature_spec_sha256"] and "--seed=3" in m["command"]
    vals = [e["val"]["auc"] for e in h["epochs"]]
    assert 1 <= len(vals) <= cfg.epochs and m["best_val_auc"] == max(vals)
    assert vals.index(max(vals)) + 1 == m["best_epoch"]

    # the driver: the finished run is skipped (no subprocess), the report reads it
    started = []
    monkeypatch.setattr(C.subprocess, "call", lambda *a, **k: started.append(a) or 1)
    try:
        rc = C.main(["--only=deepctr_wdl", "--seeds=3", f"--runs_dir={runs}", f"--data_dir={data_dir}",
                     f"--results={res}"])
    finally:
        os.chdir(old)
    assert rc == 0 and started == []
    out = json.load(open(res + ".json"))
    wdl = out["models"]["deepctr_wdl"]
    assert wdl["seeds"] == [3] and wdl["auc_mean"] == pytest.approx(m["auc"])
    assert out["pending"] == [] and out["data_digests"][0]["feature_spec_sha256"] == m["data"]["feature_spec_sha256"]
    assert out["data_properties"]["train_user_ctr"]["min"] <= 0.5
    md = open(res + ".md").read()
    assert "WDL (DeepCTR 0.9.4)" in md and f"{m['auc']:.4f}" in md and "--seed=3" in md
