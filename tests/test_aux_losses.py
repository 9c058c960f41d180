"""Aux-loss plug-ins (ccn.aux.CCNLoss, aqcl.aux.AQCLLoss / ICLLoss) against a tiny fake backbone
implementing the documented interface (docs/architecture.md section 4), plus a smoke test with the
real CTRModel."""

import types

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from aqcl import losses as aloss
from aqcl.aux import AQCLLoss, ICLLoss, history_feature_groups
from ccn import losses as closs
from ccn.aux import CCNLoss, p_from_stats

B, C, S, LL, V, D = 6, 4, 5, 3, 50, 8
STATS = {"p_s_plus": 0.8, "p_s_minus": 0.2, "mean_history_length": 3.0,
         "avg_clicked_per_page": 2.0, "avg_unclicked_per_page": 8.0}


class FakeBackbone(keras.layers.Layer):
    """Integer ids (0 = padding) -> the documented output dict; implements embed_items and
    collaborative_degree with the real backbone's broadcasting rules."""

    has_collaborative_module = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.emb = keras.layers.Embedding(V, D, name="emb")
        self.user = keras.layers.Embedding(V, D, name="user")
        self.cm = keras.layers.Dense(4, name="cm")
        self.hidden = keras.layers.Dense(16, activation="relu", name="hidden")
        self.out = keras.layers.Dense(1, name="out")

    def _items(self, features, prefix, emb_dropout=0.0, seed=None):
        if prefix in ("", "trigger_"):
            names = [prefix + s for s in ("item_id", "category_id")]
        else:
            names = [prefix + s for s in ("item_ids", "category_ids")]
        e = tf.concat([self.emb(features[n]) for n in names], -1)
        if emb_dropout:
            e = tf.nn.experimental.stateless_dropout(e, emb_dropout, seed=seed)
        return e

    def embed_items(self, features, prefix):
        return self._items(features, prefix)

    def collaborative_degree(self, user_emb, item_emb, trigger_emb):
        if item_emb.shape.rank == 3:
            c = tf.shape(item_emb)[1]
            user_emb = tf.tile(user_emb[:, None, :], tf.stack([1, c, 1]))
            trigger_emb = trigger_emb[:, None, :]
        return self.cm(tf.concat([user_emb, item_emb * trigger_emb], -1))

    def call(self, features, training=False, emb_dropout=0.0, seed=None):
        user = self.user(features["user_id"])
        target = self._items(features, "", emb_dropout, seed)
        trigger = self._items(features, "trigger_", emb_dropout, seed)
        hist = self._items(features, "short_", emb_dropout, seed)
        m = tf.cast(tf.not_equal(features["short_item_ids"], 0), tf.float32)[..., None]
        hist = tf.reduce_sum(hist * m, 1) / tf.maximum(tf.reduce_sum(m, 1), 1.0)
        longh = self._items(features, "long_", emb_dropout, seed)
        ml = tf.cast(tf.not_equal(features["long_item_ids"], 0), tf.float32)[..., None]
        longh = tf.reduce_sum(longh * ml, 1) / tf.maximum(tf.reduce_sum(ml, 1), 1.0)
        s = self.collaborative_degree(user, target, trigger)
        latent = self.hidden(tf.concat([user, target, trigger, hist, longh, s], -1))
        return {"logits": self.out(latent)[:, 0], "latent": latent, "user_emb": user,
                "target_emb": target, "trigger_emb": trigger, "s_target": s}


class FakeModel:
    """The interface a plug-in sees (docs/architecture.md): the backbone, and the spec's label
    name (no feature config: sequences are found by name)."""

    def __init__(self):
        self.backbone = FakeBackbone(name="fake_backbone")
        self.spec = types.SimpleNamespace(label="label", config=None)


def make_features(seed=0):
    rng = np.random.default_rng(seed)

    def seq(n, lengths):
        x = rng.integers(2, V, size=(B, n))
        for i, ln in enumerate(lengths):
            x[i, ln:] = 0
        return tf.constant(x, tf.int32)

    hist_len = np.array([0, 1, 2, 3, 5, 5])
    f = {"user_id": tf.constant(rng.integers(2, V, B), tf.int32),
         "item_id": tf.constant(rng.integers(2, V, B), tf.int32),
         "category_id": tf.constant(rng.integers(2, V, B), tf.int32),
         "trigger_item_id": tf.constant(rng.integers(2, V, B), tf.int32),
         "trigger_category_id": tf.constant(rng.integers(2, V, B), tf.int32),
         "label": tf.constant([1, 0, 1, 0, 0, 1], tf.int64),
         "history_length": tf.constant(hist_len, tf.int64)}
    short_ids = seq(S, hist_len)
    f["short_item_ids"] = short_ids
    f["short_category_ids"] = tf.where(short_ids > 0, short_ids % 7 + 2, 0)
    long_ids = seq(LL, np.minimum(hist_len, LL))
    f["long_item_ids"] = long_ids
    f["long_category_ids"] = tf.where(long_ids > 0, long_ids % 7 + 2, 0)
    ctx_lab = np.array([[1, 0, 0, -1], [0, 0, -1, -1], [0, 0, 0, -1], [1, 1, 0, 0],
                        [-1, -1, -1, -1], [1, 0, 1, 0]])
    ctx = rng.integers(2, V, size=(B, C))
    ctx[ctx_lab < 0] = 0
    f["context_item_ids"] = tf.constant(ctx, tf.int32)
    f["context_category_ids"] = tf.constant(np.where(ctx > 0, ctx % 7 + 2, 0), tf.int32)
    f["context_labels"] = tf.constant(ctx_lab, tf.int64)
    return f


# ------------------------------------------------------------------ CCN
def test_p_from_stats():
    assert p_from_stats({"p_s_plus": 0.7}) == pytest.approx((0.7, 0.3))
    p, m = p_from_stats({"avg_unclicked_per_page": 8.0, "avg_clicked_per_page": 2.0})
    assert p == pytest.approx(58 / 90) and m == pytest.approx(32 / 90)
    with pytest.raises(ValueError):
        p_from_stats({})


def test_ccn_terms_match_pure_losses():
    model, f = FakeModel(), make_features()
    out = model.backbone(f)
    loss = CCNLoss(STATS, lambda_=0.3, tau=0.5, xi=0.8)
    terms = loss(model, f, out, training=True)
    assert set(terms) == {"ccn_repulsion", "ccn_attraction"}
    s_ctx = model.backbone.collaborative_degree(out["user_emb"],
                                                model.backbone.embed_items(f, "context_"),
                                                out["trigger_emb"])
    assert s_ctx.shape == (B, C, 4)
    rep = closs.repulsion_loss(out["s_target"], s_ctx, f["context_labels"], f["label"], 0.5)
    att = closs.attraction_loss(out["s_target"], s_ctx, f["context_labels"], f["label"], 0.8)
    np.testing.assert_allclose(terms["ccn_repulsion"].numpy(), 0.3 * rep.numpy(), rtol=1e-6)
    np.testing.assert_allclose(terms["ccn_attraction"].numpy(), 0.3 * 0.25 * att.numpy(),
                               rtol=1e-6)


def test_ccn_ablation_flags_and_gradients():
    model, f = FakeModel(), make_features()
    assert set(CCNLoss(STATS, use_attraction=False)(model, f, model.backbone(f))) == {
        "ccn_repulsion"}
    assert set(CCNLoss(STATS, use_repulsion=False)(model, f, model.backbone(f))) == {
        "ccn_attraction"}
    loss = CCNLoss(STATS)
    with tf.GradientTape() as tape:
        out = model.backbone(f, training=True)
        total = tf.add_n(list(loss(model, f, out, training=True).values()))
    grads = tape.gradient(total, model.backbone.trainable_variables)
    named = {v.name: g for v, g in zip(model.backbone.trainable_variables, grads)}
    for name, g in named.items():
        if "cm" in name or "emb" in name or "user" in name:
            assert g is not None, name
            gv = tf.convert_to_tensor(g).numpy()
            assert np.all(np.isfinite(gv)) and np.abs(gv).sum() > 0, name
    assert not loss.trainable_weights  # CCN adds no variables


def test_ccn_needs_collaborative_module():
    model, f = FakeModel(), make_features()
    out = model.backbone(f)
    model.backbone.has_collaborative_module = False
    with pytest.raises(ValueError):
        CCNLoss(STATS)(model, f, out)


# ------------------------------------------------------------------ AQCL / ICL
def test_history_feature_groups_by_name():
    groups = history_feature_groups(FakeModel(), make_features())
    assert groups == [["long_category_ids", "long_item_ids"],
                      ["short_category_ids", "short_item_ids"]]


def _aqcl(**kw):
    args = dict(weight=0.1, z_dim=8, T=6, K=2, tau1=0.1, tau2=0.1, tau3=0.1, mask_rate=0.3,
                emb_dropout=0.1)
    args.update(kw)
    return AQCLLoss(STATS, **args)


def test_aqcl_terms_and_gradient_routing():
    model, f = FakeModel(), make_features()
    loss = _aqcl()
    with tf.GradientTape(persistent=True) as tape:
        out = model.backbone(f, training=True)
        terms = loss(model, f, out, training=True)
    assert set(terms) == {"aqcl", "codebook"}
    for v in terms.values():
        assert np.isfinite(v.numpy())
    code_var = loss.codebook.codes
    proj_vars = loss.projector.trainable_variables
    bb_vars = model.backbone.trainable_variables
    assert len(proj_vars) == 6
    # the codebook term moves only Q
    g_code = tape.gradient(terms["codebook"], [code_var] + proj_vars + bb_vars)
    assert np.abs(g_code[0].numpy()).sum() > 0
    assert all(g is None for g in g_code[1:])
    # the AQCL term moves the projector and the backbone, never Q
    g_aq = tape.gradient(terms["aqcl"], [code_var] + proj_vars + bb_vars)
    assert g_aq[0] is None
    assert all(g is not None for g in g_aq[1:len(proj_vars) + 1])
    assert any(g is not None and np.abs(tf.convert_to_tensor(g).numpy()).sum() > 0
               for g in g_aq[len(proj_vars) + 1:])


def test_aqcl_value_matches_pure_loss_and_alpha():
    model, f = FakeModel(), make_features()
    loss = _aqcl(w1=2.0, w2=0.5)
    out = model.backbone(f)
    terms = loss(model, f, out, training=False)
    # recompute with the same seeds (evaluation does not advance the step)
    assert int(loss.step.numpy()) == 0
    ms, ds = loss.seeds()
    from aqcl.augment import mask_history
    aug = mask_history(f, history_feature_groups(model, f), 0.3, ms)
    z = loss.projector(out["latent"])
    zp = loss.projector(model.backbone(aug, training=False, emb_dropout=0.1, seed=ds)["latent"])
    alpha = np.exp(-2.0 * (f["history_length"].numpy() / 3.0) ** 0.5)
    np.testing.assert_allclose(loss.alpha(f).numpy(), alpha, rtol=1e-6)
    ref = aloss.aqcl_loss(z, zp, loss.codebook.codes, alpha, 0.1, 0.1, 2)
    np.testing.assert_allclose(terms["aqcl"].numpy(), 0.1 * ref.numpy(), rtol=1e-5)
    const = _aqcl(const_alpha=0.0)
    np.testing.assert_allclose(const.alpha(f).numpy(), np.zeros(B))
    # the constant needs no history_length (the trainer does not parse it then): the loss runs
    assert "history_length" not in (const.required_features(model) or [])
    no_len = {k: v for k, v in f.items() if k != "history_length"}
    np.testing.assert_allclose(_aqcl(const_alpha=0.3).alpha(no_len, B).numpy(), np.full(B, 0.3))
    t = _aqcl(const_alpha=0.3)(model, no_len, model.backbone(no_len), training=False)
    assert np.isfinite(t["aqcl"].numpy())


def test_aqcl_view_rows_subsample():
    """view_rows: Eq. 3 on the first rows only (second view of those rows), Eq. 5 on all rows;
    view_rows >= B is the full-batch loss; the other rows get no gradient from Eq. 3."""
    from aqcl import codebook as cb
    from aqcl.augment import mask_history

    model, f = FakeModel(), make_features()
    n = 4
    loss = _aqcl(view_rows=n)
    with tf.GradientTape(persistent=True) as tape:
        out = model.backbone(f)
        tape.watch(out["latent"])
        terms = loss(model, f, out, training=False)
    ms, ds = loss.seeds()
    fs = {k: v[:n] for k, v in f.items()}
    aug = mask_history(fs, history_feature_groups(model, fs), 0.3, ms)
    z = loss.projector(out["latent"][:n])
    zp = loss.projector(model.backbone(aug, training=False, emb_dropout=0.1, seed=ds)["latent"])
    alpha = loss.alpha(f).numpy()[:n]
    ref = aloss.aqcl_loss(z, zp, loss.codebook.codes, alpha, 0.1, 0.1, 2)
    np.testing.assert_allclose(terms["aqcl"].numpy(), 0.1 * ref.numpy(), rtol=1e-5)
    ref_code = cb.codebook_loss(loss.projector(out["latent"]), loss.codebook.codes, 0.1)
    np.testing.assert_allclose(terms["codebook"].numpy(), ref_code.numpy(), rtol=1e-5)
    g = tape.gradient(terms["aqcl"], out["latent"]).numpy()
    assert np.abs(g[:n]).sum() > 0 and np.all(g[n:] == 0)
    # a limit at or above the batch size is the paper's full-batch loss
    full, capped = _aqcl(), _aqcl(view_rows=B + 10)
    t_full = full(model, f, out, training=False)
    capped(model, f, out, training=False)  # build
    capped.set_weights(full.get_weights())
    t_cap = capped(model, f, out, training=False)
    for k in t_full:
        np.testing.assert_allclose(t_cap[k].numpy(), t_full[k].numpy(), rtol=1e-6)
    with pytest.raises(ValueError):
        _aqcl(view_rows=1)
    # ICL shares the subsample
    icl = ICLLoss(STATS, weight=1.0, z_dim=8, tau=0.2, view_rows=3)
    assert np.isfinite(icl(model, f, out, training=True)["icl"].numpy())


def test_aqcl_seeds_advance_per_training_step():
    model, f = FakeModel(), make_features()
    loss = _aqcl(mask_rate=0.5)
    s0 = [s.numpy() for s in loss.seeds()]
    loss(model, f, model.backbone(f), training=False)
    assert int(loss.step.numpy()) == 0
    loss(model, f, model.backbone(f), training=True)
    assert int(loss.step.numpy()) == 1
    s1 = [s.numpy() for s in loss.seeds()]
    assert not np.array_equal(s0[0], s1[0]) and not np.array_equal(s0[1], s1[1])
    assert not np.array_equal(s1[0], s1[1])


def test_icl_loss_plugin():
    model, f = FakeModel(), make_features()
    loss = ICLLoss(STATS, weight=0.5, z_dim=8, tau=0.2, mask_rate=0.2, emb_dropout=0.1)
    out = model.backbone(f)
    terms = loss(model, f, out, training=True)
    assert set(terms) == {"icl"} and np.isfinite(terms["icl"].numpy())
    assert not hasattr(loss, "codebook")


def test_aqcl_requires_mean_history_length():
    with pytest.raises(ValueError):
        AQCLLoss({}, z_dim=8, T=4, K=2)
    AQCLLoss({}, z_dim=8, T=4, K=2, const_alpha=0.5)  # fine without L-bar


@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_plugins_in_compiled_train_step(jit):
    model, f = FakeModel(), make_features()
    ccn, aq = CCNLoss(STATS), _aqcl()
    opt = keras.optimizers.legacy.SGD(0.1)
    # build eagerly once (variables), then an XLA-compiled step
    out = model.backbone(f, training=True)
    ccn(model, f, out, training=False)
    aq(model, f, out, training=False)
    variables = (model.backbone.trainable_variables + aq.trainable_variables)

    @tf.function(jit_compile=jit)
    def step(feats):
        with tf.GradientTape() as tape:
            o = model.backbone(feats, training=True)
            terms = dict(ccn(model, feats, o, training=True))
            terms.update(aq(model, feats, o, training=True))
            total = tf.add_n(list(terms.values()))
        grads = tape.gradient(total, variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return terms

    q0 = aq.codebook.codes.numpy().copy()
    t1 = step(f)
    t2 = step(f)
    for t in (t1, t2):
        assert all(np.isfinite(v.numpy()) for v in t.values())
    assert int(aq.step.numpy()) == 2
    assert not np.allclose(q0, aq.codebook.codes.numpy())  # the codebook learns


# ------------------------------------------------------------------ real model (smoke)
def test_with_real_ctr_model(tmp_path):
    # the real modules are in the repository: a failure to import or build them is a failure
    from ctrcore import backbones, data, schema, testing
    from ctrcore import model as model_mod

    testing.write_fake_dataset(str(tmp_path))
    spec = schema.load_spec(str(tmp_path))
    stats = schema.load_stats(str(tmp_path))
    bb = backbones.build_backbone("tan", spec, emb_dim=4, mlp_units=(16, 8), cm_dim=4)
    aux = [CCNLoss(stats, lambda_=0.1), AQCLLoss(stats, z_dim=8, T=8, K=2)]
    model = model_mod.CTRModel(spec, bb, aux_losses=aux)
    batch = next(iter(data.make_dataset(str(tmp_path), "train", 32, spec=spec, shuffle=False)))
    terms, _ = model.compute_terms(batch, training=True)
    for k in ("ce", "ccn_repulsion", "ccn_attraction", "aqcl", "codebook", "total"):
        assert k in terms and np.isfinite(terms[k].numpy()), k


# ------------------------------------------------------------------ P_S+ <= 0 is refused
@pytest.mark.parametrize("stats, shown", [
    ({"p_s_plus": 0.0, "p_s_minus": 1.0}, "p_s_plus=0.0"),
    ({"p_s_plus": -1.15}, "p_s_plus=-1.15"),  # pipelines.stats.p_s_plus(0.7, 0.6)
    ({"p_s_plus": float("nan")}, "not finite"),
    ({"p_s_plus": 0.5, "p_s_minus": float("inf")}, "not finite"),
    ({"avg_unclicked_per_page": 1.0, "avg_clicked_per_page": 1.0}, "p_s_plus=0.0"),
])
def test_unusable_attraction_weight_is_refused(stats, shown):
    """Eq. 12's weight P_S-/P_S+ from a P_S+ <= 0 (or non-finite values) used to be clipped to
    1e-6 silently (a weight of 1e6 on L_S+): it is an error naming stats.json, the values and
    what to do, both when the flags are validated and when the loss is built; without L_S+
    the weight is not used and the loss builds."""
    from ccn.ccn_plugin import CCNConfig
    from ctrcore.auxloss import AuxContext

    with pytest.raises(ValueError, match="stats.json") as e:
        CCNLoss(stats)
    assert shown in str(e.value) and ("ccn_no_attraction" in str(e.value)
                                      or "preprocess" in str(e.value))
    CCNLoss(stats, use_attraction=False)
    if "p_s_plus" in stats:
        errs = CCNConfig().validate(AuxContext("tan", stats=stats))
        assert any("stats.json" in m and shown in m for m in errs), errs
        assert not CCNConfig(use_attraction=False).validate(AuxContext("tan", stats=stats))
    assert p_from_stats({"p_s_plus": 1.0}) == (1.0, 0.0)  # every pair shares its label
    assert CCNLoss({"p_s_plus": 1.0, "p_s_minus": 0.0}).attraction_weight == 0.0
