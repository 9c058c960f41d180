"""Flag files parse and validate; inconsistent flags fail with a clear message before any work."""
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

from ccn import models
from ccn import train as T
from ctrcore.config import ConfigError, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# flag files of other entry points / fragments included by the per-run files
NOT_TRAIN_CONFIGS = ("search_",)
FRAGMENTS = ("common", )


def _parse(args, cwd=ROOT):
    fv = flags.FlagValues()
    T.define_flags(fv)
    old = os.getcwd()
    os.chdir(cwd)  # nested --flagfile paths are relative to the repository root
    try:
        fv(["ccn.train"] + list(args))
    finally:
        os.chdir(old)
    return T.config_from_flags(fv)


def _train_configs():
    out = []
    for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags"))):
        name = os.path.basename(p)
        if name.startswith(NOT_TRAIN_CONFIGS) or any(f in name for f in FRAGMENTS):
            continue
        out.append(name)
    return out


def test_required_configs_exist():
    names = set(_train_configs())
    for ds in ("synthetic", "mind"):
        for m in ("ccn", "tan", "wide_deep", "din", "sim", "tan_base", "ccn_notsi",
                  "ccn_no_attraction", "ccn_no_repulsion"):
            assert f"{m}_{ds}.flags" in names


@pytest.mark.parametrize("name", _train_configs())
def test_config_parses_and_validates(name):
    # a model_dir first so files without one (their command line gives it) validate too
    cfg, lp = _parse(["--model_dir=/tmp/unused_model_dir", f"--flagfile=configs/{name}"])
    T.validate_all(cfg, lp, check_data=False)
    assert cfg.model in models.MODELS
    assert not os.path.isabs(cfg.data_dir), "data_dir must be relative to the repo root"
    ds = name.rsplit("_", 1)[-1].split(".")[0]
    if ds in ("synthetic", "mind"):
        assert cfg.data_dir == f"out/{ds}/data"
        assert cfg.model == name[: -len(f"_{ds}.flags")]
        assert "{" not in cfg.model_dir and cfg.model_dir.endswith(f"/seed{cfg.seed}")


def test_seed_placeholder_in_model_dir():
    cfg, _ = _parse(["--flagfile=configs/ccn_synthetic.flags", "--seed=3"])
    assert cfg.model_dir == "runs/synthetic/ccn/seed3" and cfg.seed == 3
    cfg, _ = _parse(["--data_dir=x", "--model_dir=r/{run_key}/s{seed}", "--model=din", "--aux_losses=aqcl"])
    assert cfg.model_dir == "r/din+aqcl/s0"


def _errors(args, check_data=False):
    cfg, lp = _parse(args)
    with pytest.raises(ConfigError) as ei:
        T.validate_all(cfg, lp, check_data=check_data)
    return str(ei.value)


BASE = ["--data_dir=/nonexistent", "--model_dir=/tmp/x"]


@pytest.mark.parametrize("args, message", [
    (["--model=transformer"], "unknown --model='transformer'"),
    (["--model=din", "--aux_losses=ccn"], "collaborative module"),
    (["--model=tan_base", "--aux_losses=ccn"], "collaborative module"),
    (["--model=ccn", "--aux_losses=ccn"], "given twice"),
    (["--model=din", "--aux_losses=foo"], "unknown aux loss 'foo'"),
    (["--model=din", "--aux_losses=aqcl,icl"], "do not combine with icl"),
    (["--train_steps=0"], "--train_steps must be > 0"),
    (["--train_steps=-5"], "--train_steps must be > 0"),
    (["--epochs=0"], "--epochs must be > 0"),
    (["--batch_size=0"], "--batch_size must be > 0"),
    (["--dropout=1.5"], "--dropout"),
    (["--export_base=/tmp/e"], "--export_base and --model_name"),
    (["--distribution=multi_worker_mirrored"], "TF_CONFIG"),
    (["--model=din", "--aux_losses=aqcl", "--aqcl_top_k=200"], "--aqcl_top_k"),
    (["--model=din", "--aux_losses=aqcl", "--aqcl_const_alpha=2"], "--aqcl_const_alpha"),
    (["--model=din", "--aux_losses=aqcl", "--aqcl_view_rows=1"], "--aqcl_view_rows"),
    (["--model=din", "--aux_losses=icl", "--aqcl_view_rows=64.5"], "--aqcl_view_rows"),
    (["--ccn_tau=0"], "--ccn_tau"),
    (["--train_input=memory", "--distribution=parameter_server"], "--train_input=memory"),
    (["--in_memory_max_mb=-1"], "--in_memory_max_mb"),
    (["--model=din", "--aux_losses=intent"], "intent network"),
    (["--model=dihn", "--intent_weight=-1"], "--intent_weight"),
])
def test_inconsistent_flags_fail(args, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert message in _errors(BASE + args)


def test_bad_enum_and_list_values_fail_at_parse():
    with pytest.raises(flags.IllegalFlagValueError):
        _parse(BASE + ["--optimizer=sgd"])
    with pytest.raises(ConfigError, match="mlp_units"):
        _parse(BASE + ["--mlp_units=10,abc"])


def test_several_problems_are_reported_together():
    msg = _errors(["--data_dir=", "--model_dir=", "--epochs=0", "--model=nope"])
    assert "--data_dir is required" in msg and "--epochs must be > 0" in msg and "unknown --model" in msg


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    from ctrcore.testing import write_fake_dataset
    d = str(tmp_path_factory.mktemp("flagdata") / "data")
    write_fake_dataset(d, n_examples=300)
    return d


def test_data_checks(fake_data, tmp_path):
    # missing feature_spec.json
    bad = str(tmp_path / "nospec")
    shutil.copytree(fake_data, bad)
    os.remove(os.path.join(bad, "feature_spec.json"))
    msg = _errors([f"--data_dir={bad}", "--model_dir=/tmp/x", "--model=din"], check_data=True)
    assert "feature_spec.json missing" in msg
    # missing data dir / split shards
    msg = _errors([f"--data_dir={tmp_path}/none", "--model_dir=/tmp/x"], check_data=True)
    assert "does not exist" in msg
    noval = str(tmp_path / "noval")
    shutil.copytree(fake_data, noval)
    for f in glob.glob(os.path.join(noval, "valid-*")):
        os.remove(f)
    assert "no valid-*.tfrecord.gz" in _errors([f"--data_dir={noval}", "--model_dir=/tmp/x"], check_data=True)
    # CCN on data without in-page context features
    noctx = str(tmp_path / "noctx")
    shutil.copytree(fake_data, noctx)
    p = os.path.join(noctx, "feature_spec.json")
    spec = json.load(open(p))
    spec["features"] = {k: v for k, v in spec["features"].items() if not k.startswith("context_")}
    json.dump(spec, open(p, "w"))
    msg = _errors([f"--data_dir={noctx}", "--model_dir=/tmp/x", "--model=ccn"], check_data=True)
    assert "in-page context features" in msg
    # ... while a model without the CCN loss is fine on it
    cfg, lp = _parse([f"--data_dir={noctx}", "--model_dir=/tmp/x", "--model=tan"])
    T.validate_all(cfg, lp, check_data=True)


def test_cli_fails_before_any_work(tmp_path, fake_data):
    md = str(tmp_path / "model")
    r = subprocess.run([sys.executable, "-m", "ccn.train", f"--data_dir={fake_data}", f"--model_dir={md}",
                        "--model=din", "--aux_losses=ccn", "--train_steps=0"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "collaborative module" in r.stderr and "--train_steps must be > 0" in r.stderr
    assert not os.path.exists(md)  # nothing written
    r = subprocess.run([sys.executable, "-m", "ccn.train", "--model_dir=/tmp/x", "--bogus_flag=1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "bogus_flag" in r.stderr


def test_train_config_roundtrip():
    cfg = TrainConfig(data_dir="d", model_dir="m", aux_losses=["aqcl"], mlp_units=[4, 2])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert set(TrainConfig.field_names()) <= set(_parse(BASE)[0].to_dict())


def test_every_backbone_hyperparameter_is_a_flag_with_the_builder_default():
    """TrainConfig.backbone_hparams() sets every keyword of build_backbone (ctrcore.archs.HParams),
    and the flag defaults are the builder's (a default config builds the models it always built)."""
    from ctrcore.archs import HParams

    cfg, _ = _parse(BASE)
    hp = cfg.backbone_hparams()
    assert set(hp) == set(HParams.names())
    built = HParams(**hp).to_dict()
    for f in dataclasses.fields(HParams):
        want = f.default if f.name != "use_trigger" else False  # None and False: no trigger
        assert built[f.name] == (list(want) if isinstance(want, tuple) else want), f.name


BACKBONE_FLAGS = ["--emb_dim=4", "--mlp_units=6", "--num_heads=2", "--cm_dim=3", "--cm_units=5,7",
                  "--batch_norm", "--din_units=9,4", "--din_softmax", "--wide_buckets=128",
                  "--use_trigger", "--activation=tanh", "--intent_units=11"]


def test_backbone_flags_reach_the_built_backbone(fake_data):
    """Each backbone flag changes the backbone that ccn.models.build_model builds."""
    from ctrcore import schema

    cfg, lp = _parse([f"--data_dir={fake_data}", "--model_dir=/tmp/x"] + BACKBONE_FLAGS)
    T.validate_all(cfg, lp, check_data=False)
    spec, stats = schema.load_spec(fake_data), schema.load_stats(fake_data)

    def backbone(model):
        return models.build_model(dataclasses.replace(cfg, model=model), lp, spec, stats).backbone

    tan = backbone("tan")
    assert [d.units for d in tan.cm_mlp.denses] == [5, 7, 3]
    assert [d.units for d in tan.mlp.denses] == [6]
    assert tan.mlp.norms[0] is not None  # --batch_norm
    assert tan.mlp.denses[0].activation.__name__ == "tanh"
    assert tan.att_target_short.heads == 2
    din = backbone("din")
    assert din.din_att.softmax and [d.units for d in din.din_att.mlp.denses] == [9, 4, 1]
    wd = backbone("wide_deep")
    assert wd.trigger_aware and wd.cross_short.num_buckets == 128 and wd.cross_trigger.num_buckets == 128
    assert backbone("deepfm").trigger_aware
    dihn = backbone("dihn")
    assert [d.units for d in dihn.intent_mlp.denses] == [11, 1]
    assert [d.units for d in dihn.uin_att.mlp.denses] == [9, 4, 1] and dihn.ssm_att.softmax
    assert backbone("dian").hparams["intent_units"] == [11]


@pytest.mark.parametrize("flag", ["--din_units=4,x", "--cm_units=a", "--intent_units=1.5"])
def test_bad_unit_lists_fail_at_parse(flag):
    with pytest.raises(ConfigError, match=flag.split("=")[0]):
        _parse(BASE + [flag])


@pytest.mark.parametrize("flag, message", [("--din_units=0", "--din_units"), ("--intent_units=", "--intent_units"),
                                           ("--wide_buckets=0", "--wide_buckets")])
def test_bad_backbone_values_fail_validation(flag, message):
    assert message in _errors(BASE + [flag])
