"""DIN options (issue 14): ``din_att_activation`` (the attention unit's hidden activation, with the
DIN paper's PReLU / Dice) and ``din_wide`` (first-order id weights / the W&D wide head on DIN).
Each option changes the variables and the forward pass; the default builds what it always built."""
import ctrcore  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from ctrcore import backbones, data, layers, schema, testing
from ctrcore.archs import HParams
from ctrcore.config import ConfigError, TrainConfig

CFG = schema.SpecConfig(short_len=5, long_len=12, max_context=4, user_profile=("gender",))
SIZES = dict(mlp_units=(32, 8), emb_dim=8)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fake_din_opts"))
    spec = testing.write_fake_dataset(d, n_examples=300, seed=3, spec_config=CFG)
    batch = next(iter(data.make_dataset(d, "train", 16, shuffle=False, deterministic=True)))
    return spec, batch


def build(spec, batch, seed=0, **kw):
    keras.utils.set_random_seed(seed)
    bb = backbones.build_backbone("din", spec, **SIZES, **kw)
    out = bb(batch, training=False)
    return bb, out


def var_names(bb):
    return [v.name for v in bb.variables]


def test_defaults_are_the_old_din():
    hp = HParams()
    assert hp.din_att_activation == "sigmoid" and hp.din_wide == ""
    cfg = TrainConfig(data_dir="x", model_dir="y")
    assert cfg.backbone_hparams()["din_att_activation"] == "sigmoid"
    assert cfg.backbone_hparams()["din_wide"] == ""


def test_default_din_has_no_new_variables(fake):
    spec, batch = fake
    bb, _ = build(spec, batch)
    names = var_names(bb)
    assert not [n for n in names if "act_" in n or "linear_" in n or "cross" in n]
    att = bb.din_att
    assert att.acts == [] and att.mlp.denses[0].activation.__name__ == "sigmoid"


@pytest.mark.parametrize("act, new_vars", [("prelu", ["act_0/alpha", "act_1/alpha"]),
                                           ("dice", ["act_0/alpha", "act_1/alpha", "act_0/bn/moving_mean"])])
def test_parametric_attention_activation(fake, act, new_vars):
    spec, batch = fake
    base, out0 = build(spec, batch)
    bb, out = build(spec, batch, din_att_activation=act)
    names = var_names(bb)
    for v in new_vars:
        assert any(v in n for n in names), (v, names)
    # the default's variables are all still there, with the same shapes
    shapes = {v.name: v.shape for v in bb.variables}
    for v in base.variables:
        assert shapes[v.name] == v.shape
    assert not np.allclose(out["logits"].numpy(), out0["logits"].numpy())


def _reference_unit(att: layers.DinAttention, q, seq, mask, act: str):
    """The unit by its definition: MLP over concat([q, k, q - k, q * k]) with act after each hidden
    layer, unnormalised weights, masked weighted sum."""
    qs = tf.broadcast_to(q[:, None, :], tf.shape(seq))
    x = tf.concat([qs, seq, qs - seq, qs * seq], axis=-1)
    d = att.mlp.denses
    for i, dense in enumerate(d):
        x = dense(x)
        if i < len(d) - 1:
            if act == "prelu":
                x = tf.maximum(x, 0.0) + att.acts[i].alpha * tf.minimum(x, 0.0)
            else:
                x = att.acts[i](x, training=False)
    w = tf.where(mask, x[..., 0], 0.0)
    return tf.einsum("bl,bld->bd", w, seq)


@pytest.mark.parametrize("act", ["prelu", "dice"])
def test_parametric_unit_matches_its_definition(act):
    rng = np.random.default_rng(0)
    q = tf.constant(rng.normal(size=(4, 6)), tf.float32)
    seq = tf.constant(rng.normal(size=(4, 5, 6)), tf.float32)
    mask = tf.constant(rng.random((4, 5)) > 0.3)
    att = layers.DinAttention((7, 3), activation=act)
    att(q, seq, mask)  # build
    for a in att.acts:  # non-zero slopes, so the negative side is exercised
        a.alpha.assign(tf.fill(a.alpha.shape, 0.3))
    got = att(q, seq, mask, training=False).numpy()
    want = _reference_unit(att, q, seq, mask, act).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # masked positions do not matter
    seq2 = tf.where(mask[..., None], seq, 99.0)
    if act == "prelu":  # (Dice's batch statistics see the padding values in training only)
        np.testing.assert_allclose(att(q, seq2, mask).numpy(), got, rtol=1e-5, atol=1e-5)


def test_dice_is_the_dice_formula():
    x = tf.constant([[-2.0, 0.5], [1.0, -0.25], [3.0, 1.5]])
    d = layers.Dice()
    d(x)
    d.alpha.assign([0.2, -0.1])
    p = tf.sigmoid(d.bn(x, training=True))
    want = p * x + (1 - p) * d.alpha * x
    np.testing.assert_allclose(d(x, training=True).numpy(), want.numpy(), rtol=1e-6)


@pytest.mark.parametrize("wide, extra", [("linear", []), ("wide", ["cross_target_short_category"])])
def test_din_wide(fake, wide, extra):
    spec, batch = fake
    _, out0 = build(spec, batch)
    bb, out = build(spec, batch, din_wide=wide)
    names = var_names(bb)
    for v in ["linear_item_id", "linear_user_id", "linear_category_id", "linear_seller_id"] + extra:
        assert any(v in n for n in names), (v, names)
    if wide == "linear":
        assert not any("cross" in n for n in names)
    # zero-initialised and created after the default layers: same seed -> the same logits at start
    np.testing.assert_allclose(out["logits"].numpy(), out0["logits"].numpy(), rtol=1e-6, atol=1e-7)
    # an item's weight moves exactly its examples' logits by that weight
    table = bb.linear["item_id"]  # the backbone attribute LinearTerms tracks its tables under
    ids = bb.lookup(batch)["item_id"].numpy()
    table.embeddings.assign(tf.tensor_scatter_nd_update(table.embeddings, [[int(ids[0])]], [[0.7]]))
    moved = bb(batch, training=False)["logits"].numpy() - out0["logits"].numpy()
    np.testing.assert_allclose(moved, np.where(ids == ids[0], 0.7, 0.0), atol=1e-5)
    assert len(bb.trainable_variables) > len(build(spec, batch)[0].trainable_variables)


def test_bad_din_wide_is_refused(fake):
    spec, batch = fake
    with pytest.raises(ValueError, match="din_wide"):
        build(spec, batch, din_wide="cross")
    cfg = TrainConfig(data_dir="x", model_dir="y", din_wide="cross")
    with pytest.raises(ConfigError, match="--din_wide"):
        cfg.validate(check_data=False)


def test_flags_reach_the_din(tmp_path):
    from absl import flags

    from ccn import train as T

    fv = flags.FlagValues()
    T.define_flags(fv)
    fv(["ccn.train", "--data_dir=x", "--model_dir=y", "--din_att_activation=dice", "--din_wide=linear"])
    cfg, _ = T.config_from_flags(fv)
    hp = cfg.backbone_hparams()
    assert hp["din_att_activation"] == "dice" and hp["din_wide"] == "linear"
    assert HParams(**hp).din_wide == "linear"
