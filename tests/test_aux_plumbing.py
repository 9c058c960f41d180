"""The plumbing that makes the auxiliary losses cheaper (issue 15 item 3) changes no value:

* ``ctrcore.layers.GatherMemo``: a second gather of the same ids reuses the first gather (same
  values, same table gradients);
* ``ccn.losses.ccn_losses`` (both CCN terms with their common parts computed once) equals
  ``repulsion_loss`` and ``attraction_loss`` called separately, for every reading;
* ``aqcl.losses`` without a mask skips the masking: the same values as an all-true mask;
* a real ``CTRModel`` with CCN and AQCL gives the same loss terms and gradients with and
  without the memo.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from aqcl import losses as aloss
from ccn import losses as closs
from ctrcore import backbones, layers as L, schema, testing
from ctrcore.model import CTRModel


def _table(n=12, d=4):
    t = L.IdEmbedding(n, d, name="t")
    t.build()
    t.embeddings.assign(tf.random.stateless_normal([n, d], seed=[1, 2]))
    return t


def test_gather_memo_reuses_gathers_of_the_same_ids():
    t = _table()
    ids = tf.constant([[3, 4, 0, 7], [1, 5, 5, 0]], tf.int32)
    other = tf.constant([[3, 4, 0, 7], [1, 5, 5, 0]], tf.int32)  # same values, another tensor

    def loss(memo):
        with tf.GradientTape() as tape:
            if memo:
                with L.GatherMemo():
                    a, b, c = t(ids), t(ids), t(other)
                    assert b is a and c is not a
            else:
                a, b, c = t(ids), t(ids), t(other)
            y = tf.reduce_sum(tf.sin(a) * tf.cos(b)) + tf.reduce_sum(c * c)
        return a, b, tf.convert_to_tensor(tape.gradient(y, t.embeddings))

    a0, b0, g0 = loss(False)
    a1, b1, g1 = loss(True)
    np.testing.assert_array_equal(a1.numpy(), a0.numpy())
    np.testing.assert_array_equal(b1.numpy(), b0.numpy())
    np.testing.assert_allclose(g1.numpy(), g0.numpy(), rtol=1e-6, atol=1e-7)
    assert L.GatherMemo.active() is None  # the memo ends with its block


def test_gather_memo_once_and_nesting():
    layer = keras.layers.Layer()  # any object: only its identity is a key
    x = tf.constant([[1.0, 2.0]])
    calls = []
    with L.GatherMemo() as outer:
        r1 = outer.once(layer, x, lambda: calls.append(1) or x * 2)
        r2 = outer.once(layer, x, lambda: calls.append(1) or x * 2)
        assert r1 is r2 and len(calls) == 1
        with L.GatherMemo() as inner:
            assert L.GatherMemo.active() is inner
            inner.once(layer, x, lambda: calls.append(1) or x * 2)
            assert len(calls) == 2
        assert L.GatherMemo.active() is outer


CCN_READINGS = [dict(), dict(similarity="dot"), dict(weighting="elementwise"),
                dict(normalize=False), dict(form="angle"), dict(exponent_scale="rms"),
                dict(stop_gradient_weights=True), dict(reduction="batch")]


@pytest.mark.parametrize("kw", CCN_READINGS)
def test_ccn_losses_equal_the_two_terms(kw):
    rng = np.random.default_rng(1)
    st = tf.constant(rng.normal(size=(7, 5)), tf.float32)
    sc = tf.constant(rng.normal(size=(7, 6, 5)), tf.float32)
    ctx = tf.constant(rng.integers(-1, 2, (7, 6)), tf.int64)
    y = tf.constant(rng.integers(0, 2, 7), tf.int64)
    rep_kw = {k: v for k, v in kw.items() if k in ("similarity", "stop_gradient_weights", "reduction")}
    att_kw = {k: v for k, v in kw.items() if k != "form" and k != "exponent_scale"}
    if "form" in kw:
        att_kw["form"] = kw["form"]
    if "exponent_scale" in kw:
        att_kw["exponent_scale"] = kw["exponent_scale"]

    def both(st, sc):
        return closs.ccn_losses(st, sc, ctx, y, 0.5, 0.8, **kw)

    def separate(st, sc):
        return (closs.repulsion_loss(st, sc, ctx, y, 0.5, **rep_kw),
                closs.attraction_loss(st, sc, ctx, y, 0.8, **att_kw))

    for fn in (both, separate):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([st, sc])
            out = fn(st, sc)
            total = out[0] + 0.7 * out[1]
        fn.out = [o.numpy() for o in out]
        fn.grad = [g.numpy() for g in tape.gradient(total, [st, sc])]
    np.testing.assert_array_equal(both.out, separate.out)
    for a, b in zip(both.grad, separate.grad):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # a term switched off is None; the other keeps its value
    l_minus, l_plus = closs.ccn_losses(st, sc, ctx, y, 0.5, 0.8, use_attraction=False, **kw)
    assert l_plus is None and l_minus.numpy() == separate.out[0]


@pytest.mark.parametrize("negatives", ["views", "both"])
def test_aqcl_without_mask_equals_all_true_mask(negatives):
    rng = np.random.default_rng(2)
    z, zp = (tf.constant(rng.normal(size=(9, 6)), tf.float32) for _ in range(2))
    q = tf.constant(rng.normal(size=(5, 6)), tf.float32)
    alpha = tf.constant(rng.uniform(size=9), tf.float32)
    ones = tf.ones([9], tf.bool)
    np.testing.assert_array_equal(aloss.icl_loss_per_example(z, zp, 0.2, negatives).numpy(),
                                  aloss.icl_loss_per_example(z, zp, 0.2, negatives, ones).numpy())
    np.testing.assert_array_equal(
        aloss.aqcl_loss_per_example(z, zp, q, alpha, 0.1, 0.2, 2, negatives).numpy(),
        aloss.aqcl_loss_per_example(z, zp, q, alpha, 0.1, 0.2, 2, negatives, ones).numpy())


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("aux_plumbing"))
    spec = testing.write_fake_dataset(d, n_examples=300, seed=0,
                                      spec_config=schema.SpecConfig(short_len=5, long_len=12, max_context=4))
    return d, spec


def test_ctr_model_terms_and_gradients_unchanged_by_the_memo(fake, monkeypatch):
    from aqcl.aux import AQCLLoss
    from ccn.aux import CCNLoss
    from ctrcore import data

    d, spec = fake
    stats = schema.load_stats(d)
    keras.utils.set_random_seed(0)
    model = CTRModel(spec, backbones.build_backbone("tan", spec, emb_dim=4, mlp_units=(8,), cm_dim=4,
                                                    dropout=0.0),
                     aux_losses=[CCNLoss(stats), AQCLLoss(stats, z_dim=8, T=8, K=2, mask_rate=0.5)])
    batch = next(iter(data.make_dataset(d, "train", 64, spec=spec, shuffle=False, deterministic=True)))
    ids = model.backbone.lookup(batch)

    def step():
        with tf.GradientTape() as tape:
            terms, _ = model.compute_terms(ids, training=True)
        grads = tape.gradient(terms["total"], model.trainable_variables)
        return terms, [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                       for g, v in zip(grads, model.trainable_variables)]

    def run():
        model.aux_losses[1].step.assign(0)  # the same augmentation seeds in both runs
        terms, grads = tf.function(step)()
        return {k: v.numpy() for k, v in terms.items()}, [g.numpy() for g in grads]

    model.compute_terms(ids, training=False)  # build the aux layers
    gathers = []
    orig = L.IdEmbedding.gather
    monkeypatch.setattr(L.IdEmbedding, "gather", lambda self, i: gathers.append(1) or orig(self, i))
    with_memo = run()
    n_memo, gathers[:] = len(gathers), []
    monkeypatch.setattr(L.GatherMemo, "active", classmethod(lambda cls: None))
    without = run()
    assert n_memo < len(gathers)  # the second view gathered fewer rows of its own
    assert set(with_memo[0]) >= {"ccn_repulsion", "ccn_attraction", "aqcl", "codebook"}
    for k, v in without[0].items():
        assert with_memo[0][k] == v, k
    for a, b in zip(with_memo[1], without[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
