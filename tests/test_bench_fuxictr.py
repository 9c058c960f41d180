"""benchmarks.peer_fuxictr: FuxiCTR's DIN / SIM / DeepFM built from our prepared ids train and
predict; the driver's ratios and the results.json merge come from the runs' numbers."""
import json
import math

import pytest

from benchmarks import peer_fuxictr as pf


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from ctrcore.testing import write_fake_dataset

    root = tmp_path_factory.mktemp("fx")
    data_dir, work_dir = str(root / "data"), str(root / "work")
    write_fake_dataset(data_dir, n_examples=600, splits=("train", "test"))
    meta = pf.prepare(data_dir, work_dir)
    return data_dir, work_dir, meta


def test_prepare_writes_looked_up_columns(prepared):
    import numpy as np

    _, work_dir, meta = prepared
    names = meta["names"]
    cols = pf.load_prepared(work_dir, "train", names["user"] + names["short"] + [names["label"]])
    assert len(cols[names["label"]]) == meta["rows"]["train"] > 0
    for n in names["user"] + names["short"]:  # ours' ids: 0 = padding, 1 = OOV, < vocabulary size
        v = cols[n]
        assert v.dtype == np.int32 and v.min() >= 0
        assert v.max() < meta["vocab_size"][meta["vocab_of"][n]]
    assert cols[names["short"][0]].shape[1] == meta["short_len"]
    assert set(meta["short_is_long_prefix"]) == {"train", "test"}


@pytest.mark.parametrize("model", ["din", "deepfm", "sim"])
def test_fuxictr_model_two_steps_and_predict(prepared, model):
    pytest.importorskip("torch")  # the optional peer (pip install -e .[bench]); its wheel also
    pytest.importorskip("fuxictr")  # ships model_zoo.LongCTR, imported unguarded by build_fuxictr
    _, work_dir, meta = prepared
    a = pf.parser().parse_args(["--batch_size=32", "--mlp_units=16,8", "--emb_dim=8", "--heads=2"])
    names = meta["names"]
    hist = names["long"] if model == "sim" else names["short"]
    cols = names["user"] + names["sides"] + hist + [names["label"]]
    train = pf.FuxiBatches(pf.load_prepared(work_dir, "train", cols), meta, model)
    test = pf.FuxiBatches(pf.load_prepared(work_dir, "test", cols), meta, model)
    m = pf.build_fuxictr(model, meta, a, work_dir)
    if model != "deepfm":  # LongCTR layout: history + target per row, mask over the history
        bd, items, mask = train.batch(next(train.epochs(32)))
        L = meta["long_len"] if model == "sim" else meta["short_len"]
        assert mask.shape == (32, L) and items[names["sides"][0]].shape == (32 * (L + 1),)
        assert set(bd) == set(names["user"]) | {names["label"]}
    res = pf.fuxictr_train(m, train, epochs=1, warmup_epochs=1, spe=1, batch_size=32)  # 2 steps
    assert math.isfinite(res["train_loss_last_epoch"])
    probs = pf.fuxictr_predict(m, test)
    assert probs.shape == (test.n,)
    auc = pf._auc(test.label.numpy(), probs)["auc"]
    assert 0.0 <= auc <= 1.0


def _run(who, model, eps, auc, cpu_ms):
    return {"who": who, "examples_per_second": eps, "step_s_median": 1024 / eps,
            "cpu_s_per_step_median": cpu_ms / 1e3, "auc": auc}


def test_summarize_ratios_and_merge(tmp_path):
    runs = {"ours/din": [_run("ours", "din", 40000.0, 0.70, 50.0)],
            "fuxictr/din": [_run("fuxictr", "din", 10000.0, 0.69, 150.0)],
            "deepctr/din": [_run("deepctr", "din", 20000.0, 0.68, 100.0)],
            "ours/sim": [_run("ours", "sim", 30000.0, 0.71, 60.0), _run("ours", "sim", 20000.0, 0.72, 90.0),
                         _run("ours", "sim", 25000.0, 0.73, 70.0)],
            "ours/tan": [_run("ours", "tan", 20000.0, 0.74, 90.0)],
            "fuxictr/sim": [_run("fuxictr", "sim", 5000.0, 0.70, 300.0)]}
    res = pf.summarize(runs, threads=2)
    assert set(res) == {"vs_peer_din_fuxictr", "vs_peer_din_deepctr", "vs_peer_sim_fuxictr"}
    din = res["vs_peer_din_fuxictr"]
    assert din["ratio"] == pytest.approx(4.0) and din["ratio_cpu"] == pytest.approx(3.0)
    assert (din["ours_auc"], din["theirs_auc"], din["threads"]) == (0.70, 0.69, 2)
    assert res["vs_peer_din_deepctr"]["ratio"] == pytest.approx(2.0)
    sim = res["vs_peer_sim_fuxictr"]  # the median-speed round of ours (25k), with its AUC
    assert sim["ours_ex_s"] == 25000.0 and sim["ours_auc"] == 0.73 and sim["ratio"] == pytest.approx(5.0)
    assert (sim["tan_ex_s"], sim["tan_auc"]) == (20000.0, 0.74)

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"vs_peer_din": 1.66, "details": {"train": {"x": 1}}}))
    pf.merge_into_results(dict(res, runs=runs), str(path))
    out = json.loads(path.read_text())
    assert out["vs_peer_din"] == 1.66 and out["details"]["train"] == {"x": 1}  # kept
    assert out["vs_peer_sim_fuxictr"]["tan_auc"] == 0.74
    assert "vs_peer_deepfm_fuxictr" not in out  # not run, not invented
    assert out["details"]["peer_fuxictr"]["runs"]["fuxictr/din"][0]["auc"] == 0.69

    from benchmarks import report

    md = "\n".join(report.peers_fuxictr(out))
    assert "| din | fuxictr | 10,000 | 150.0 | 0.6900 | **4.00** | 3.00 |" in md
    assert "| sim | ours | 25,000 | 70.0 | 0.7300 | - | - |" in md
    assert "| sim | ours (TAN) | 20,000 | 90.0 | 0.7400 | - | - |" in md
    assert report.peers_fuxictr({"details": {}}) == ["(not run)"]
