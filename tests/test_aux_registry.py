"""The auxiliary-loss plug-in contract (ctrcore.auxloss): flags, validation, requirements and
building all come from the registered specs; a loss defined in one file and registered with one
call works end to end."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from ccn import models
from ccn import train as T
from ctrcore import auxloss, capabilities
from ctrcore.config import ConfigError, TrainConfig

from tests import toy_aux_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the loss flags as they always were (flag files, train_config.json's loss_params and resumed
# runs depend on these names, kinds and defaults)
STABLE_FLAGS = {
    "ccn_lambda": ("float", 0.1), "ccn_tau": ("float", 0.5), "ccn_xi": ("float", 0.8),
    "ccn_attraction_form": ("str", "vector_cosine"), "ccn_attraction_scale": ("str", "unit"),
    "ccn_reduction": ("str", "valid"),
    "aqcl_weight": ("float", 0.05), "aqcl_w1": ("float", 1.0), "aqcl_w2": ("float", 1.0),
    "aqcl_const_alpha": ("float", None), "aqcl_codebook_size": ("int", 128), "aqcl_top_k": ("int", 5),
    "aqcl_z_dim": ("int", 64), "aqcl_tau": ("float", 0.1), "aqcl_mask_rate": ("float", 0.2),
    "aqcl_emb_dropout": ("float", 0.1), "aqcl_view_rows": ("float", None),
    "dropoutnet_rate": ("float", 0.5), "deepmcp_match_weight": ("float", 0.1),
    "deepmcp_corr_weight": ("float", 0.1), "dmr_weight": ("float", 0.1), "intent_weight": ("float", None),
}


def test_registered_losses_and_stable_flags():
    assert set(auxloss.names()) >= {"ccn", "intent", "aqcl", "icl", "dropoutnet", "deepmcp", "dmr"}
    got = {f.name: (f.kind, f.default) for f in auxloss.flags()}
    assert {k: got.get(k) for k in STABLE_FLAGS} == STABLE_FLAGS
    assert set(models.default_loss_params()) == set(STABLE_FLAGS)
    # AQCL and ICL share their two-view flags
    assert {f.name for f in auxloss.get("icl").config.flags()} < {f.name for f in auxloss.get("aqcl").config.flags()}


def test_model_table_goes_through_the_registry():
    for m in models.MODELS.values():
        for a in m.aux:
            auxloss.get(a)
        for a, opts in m.aux_options.items():
            assert a in m.aux
            fields = {f.name: f for f in dataclasses.fields(auxloss.get(a).config)}
            for k in opts:
                assert k in fields and not fields[k].metadata.get("flag", True), (m.name, a, k)
        assert m.backbone in capabilities.BACKBONES or not capabilities.provided_by(m.backbone)


def test_capability_table_matches_the_backbones(tmp_path):
    from ctrcore import backbones
    from ctrcore.testing import write_fake_dataset

    spec = write_fake_dataset(str(tmp_path), n_examples=50, seed=0)
    for name in backbones.BACKBONES:
        bb = backbones.build_backbone(name, spec, emb_dim=4, mlp_units=(4,), heads=1, cm_dim=2)
        feats = {n: np.asarray(v) for n, v in _one_batch(tmp_path, spec).items()}
        out = bb(feats, training=False)
        caps = capabilities.provided_by(name)
        assert bb.has_collaborative_module == (capabilities.COLLABORATIVE_MODULE in caps), name
        assert ("s_target" in out) == (capabilities.COLLABORATIVE_MODULE in caps), name
        assert ("intent_logit" in out) == (capabilities.INTENT_NETWORK in caps), name


def _one_batch(d, spec):
    from ctrcore import data

    return next(iter(data.make_dataset(str(d), "train", 4, spec=spec, shuffle=False)))


def test_flags_validate_without_tensorflow():
    code = ("import sys; from ccn import train as T, models; "
            "from ctrcore.config import TrainConfig; "
            "models.validate(TrainConfig(data_dir='d', model_dir='m', model='ccn', aux_losses=['aqcl']), "
            "models.default_loss_params()); "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_register_rejects_clashes():
    with pytest.raises(ValueError, match="already registered"):
        auxloss.register(dataclasses.replace(auxloss.get("aqcl"), description="another"))

    @dataclasses.dataclass(frozen=True)
    class Clash(auxloss.AuxLossConfig):
        flag_prefix = "aqcl_"
        weight: float = dataclasses.field(default=1.0, metadata={"help": "other default"})

    with pytest.raises(ValueError, match="--aqcl_weight"):
        auxloss.register(auxloss.AuxLossSpec("clash", Clash, lambda c, x: None))
    assert "clash" not in auxloss.names()
    auxloss.register(auxloss.get("aqcl"))  # the same spec again: a no-op


# --------------------------------------------------------------------- a new loss, end to end
@pytest.fixture
def toy():
    auxloss.register(toy_aux_loss.SPEC)  # the one registration call
    yield toy_aux_loss.SPEC
    auxloss.unregister("toy")


def _parse(args):
    fv = flags.FlagValues()
    T.define_flags(fv)
    fv(["ccn.train"] + list(args))
    return T.config_from_flags(fv)


def test_toy_loss_gets_flags_and_validates(toy):
    cfg, lp = _parse(["--data_dir=d", "--model_dir=m", "--model=din", "--aux_losses=toy",
                      "--toy_weight=0.25", "--toy_rows=8", "--toy_scale_by_ce"])
    assert (lp["toy_weight"], lp["toy_rows"], lp["toy_scale_by_ce"]) == (0.25, 8, True)
    assert auxloss.make_config("toy", lp) == toy_aux_loss.ToyConfig(0.25, 8, True)
    T.validate_all(cfg, lp, check_data=False)
    _, lp_default = _parse(["--data_dir=d", "--model_dir=m"])
    assert lp_default["toy_weight"] == 0.5 and lp_default["toy_rows"] is None
    cfg, lp = _parse(["--data_dir=d", "--model_dir=m", "--model=din", "--aux_losses=toy,aqcl",
                      "--toy_weight=-1", "--aqcl_top_k=500"])
    with pytest.raises(ConfigError) as ei:
        T.validate_all(cfg, lp, check_data=False)
    assert "--toy_weight must be >= 0" in str(ei.value) and "--aqcl_top_k" in str(ei.value)


def test_requirements_are_checked_generically(toy):
    needy = dataclasses.replace(toy, name="needy", title="needy",
                                requires=(capabilities.COLLABORATIVE_MODULE,))
    auxloss.register(needy)
    try:
        cfg = TrainConfig(data_dir="d", model_dir="m", model="din", aux_losses=["needy"])
        with pytest.raises(ConfigError, match="the needy loss needs a backbone with the collaborative "
                           r"module \(s_target, collaborative_degree\) \(tan, tan_notsi\); "
                           "--model=din uses 'din'; models with it: tan, ccn_notsi, "):
            models.validate(cfg, models.default_loss_params())
        models.validate(TrainConfig(data_dir="d", model_dir="m", model="tan", aux_losses=["needy"]),
                        models.default_loss_params())
        with pytest.raises(ConfigError, match="collaborative module"):
            auxloss.build(["needy"], {}, auxloss.AuxContext("din"))
    finally:
        auxloss.unregister("needy")


def test_toy_loss_trains_end_to_end(toy, tmp_path):
    import tensorflow as tf
    import tf_keras as keras

    from ctrcore import data
    from ctrcore.testing import write_fake_dataset

    d = str(tmp_path / "data")
    write_fake_dataset(d, n_examples=200, seed=0)
    cfg, lp = _parse([f"--data_dir={d}", f"--model_dir={tmp_path / 'run'}", "--model=din",
                      "--aux_losses=toy", "--toy_weight=0.25", "--emb_dim=4", "--mlp_units=8",
                      "--dropout=0"])
    spec, stats = T.validate_all(cfg, lp)  # with the data checks
    keras.utils.set_random_seed(0)
    model = models.build_model(cfg, lp, spec, stats)
    assert [a.name for a in model.aux_losses] == ["toy"]
    model.compile(optimizer=keras.optimizers.legacy.Adam(0.01))
    batches = list(data.make_dataset(d, "train", 32, spec=spec, shuffle=False).take(3))
    for b in batches:
        feats = model.backbone.lookup(b)
        terms, outputs = model.compute_terms(feats, training=True)
        want = 0.25 * np.mean(np.square(outputs["logits"].numpy()))
        np.testing.assert_allclose(terms["toy"].numpy(), want, rtol=1e-5)
        np.testing.assert_allclose(terms["total"].numpy(), terms["ce"].numpy() + terms["toy"].numpy(),
                                   rtol=1e-5)
        assert float(model.compute_loss(feats, training=True)) == pytest.approx(float(terms["total"]), rel=1e-5)
        logs = model.train_step(b)
        assert np.isfinite(float(logs["toy"])) and "toy" in logs
    assert isinstance(terms["toy"], tf.Tensor)
