"""aqcl.baselines: DropoutNet / DeepMCP / DMR auxiliary losses (AQCL Table 2 baselines)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from aqcl import baselines as B
from ctrcore import data, schema
from ctrcore.backbones import build_backbone
from ctrcore.model import CTRModel
from ctrcore.testing import write_fake_dataset


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fake"))
    write_fake_dataset(d, n_examples=600, seed=1)
    spec = schema.load_spec(d)
    batch = next(iter(data.make_dataset(d, "train", 64, shuffle=False)))
    return d, spec, batch


def _model(spec, aux, name="din"):
    keras.utils.set_random_seed(0)
    bb = build_backbone(name, spec, emb_dim=8, mlp_units=(16, 8), dropout=0.0)
    return CTRModel(spec, bb, aux_losses=[aux])


def _table(model, vocab):
    return model.backbone.tables[vocab].embeddings


def _grads(model, features, term):
    with tf.GradientTape() as tape:
        terms, _ = model.compute_terms(features, training=True)
        val = terms[term]
    vs = model.trainable_variables
    return val, dict(zip([v.name for v in vs], tape.gradient(val, vs))), vs


def _nonzero_rows(g):
    g = tf.convert_to_tensor(g)
    return set(np.flatnonzero(np.abs(g.numpy()).sum(-1) > 0).tolist())


# ---------------------------------------------------------------------------------------------
# DropoutNet
# ---------------------------------------------------------------------------------------------
def test_dropoutnet_view_strings_and_ids():
    f = {"user_id": tf.constant(["u1", "", "u3"]), "item_id": tf.constant(["a", "b", ""]),
         "category_id": tf.constant(["c", "c", "c"]),
         "short_item_ids": tf.constant([["x", ""], ["y", "z"], ["", ""]])}
    v = B.dropoutnet_view(f, tf.constant([True, True, False]), tf.constant([False, True, True]),
                          item_features=("item_id",))
    assert v["user_id"].numpy().tolist() == [B.OOV_STRING.encode(), b"", b"u3"]  # pad stays pad
    assert v["item_id"].numpy().tolist() == [b"a", B.OOV_STRING.encode(), b""]
    assert v["category_id"] is f["category_id"] and v["short_item_ids"] is f["short_item_ids"]
    ids = {"user_id": tf.constant([5, 0, 7], tf.int32)}  # looked-up ids (XLA path): OOV = 1
    v = B.dropoutnet_view(ids, tf.constant([True, True, False]), tf.constant([False] * 3))
    assert v["user_id"].numpy().tolist() == [1, 0, 7]


def test_dropoutnet_replace_mode_is_ce_of_perturbed_input(fake):
    _, spec, batch = fake
    loss = B.DropoutNetLoss(rate=1.0, mode="replace", seed=3)
    model = _model(spec, loss)
    terms, out = model.compute_terms(batch, training=True)
    assert set(terms) >= {"ce", "dropoutnet", "total"}
    # reproduce the view of that step (step counter = 1) and check ce + term = CE(view)
    du, di = loss.drop_masks(tf.shape(out["logits"])[0], B._seed_pair(3, 1))
    assert 0 < int(tf.reduce_sum(tf.cast(du, tf.int32))) < 64 and bool(tf.reduce_all(du ^ di))
    view = B.dropoutnet_view(batch, du, di)
    y = tf.cast(batch["label"], tf.float32)
    ce_view = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        y, model.backbone(view, training=True)["logits"]))
    np.testing.assert_allclose(float(terms["ce"] + terms["dropoutnet"]), float(ce_view), rtol=1e-5)
    assert model.compute_terms(batch, training=False)[0].keys() == {"ce", "total"}


def test_dropoutnet_gradient_reaches_oov_row_not_dropped_users(fake):
    _, spec, batch = fake
    loss = B.DropoutNetLoss(rate=1.0, mode="add", item_features=())  # every user id dropped...
    model = _model(spec, loss)
    loss.drop_masks = lambda b, seed: (tf.ones([b], tf.bool), tf.zeros([b], tf.bool))
    val, grads, vs = _grads(model, batch, "dropoutnet")
    assert np.isfinite(float(val)) and float(val) > 0
    g_user = grads[_table(model, "user_id").name]
    assert _nonzero_rows(g_user) == {1}  # ... so only the OOV row learns from this view
    assert len(_nonzero_rows(grads[_table(model, "category_id").name])) > 1  # side info does
    assert len(_nonzero_rows(grads[_table(model, "item_id").name])) > 1


# ---------------------------------------------------------------------------------------------
# pure losses: padding / invalid rows never change them
# ---------------------------------------------------------------------------------------------
def test_skipgram_loss_ignores_padding_and_masks_false_negatives():
    rng = np.random.RandomState(0)
    emb = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    ids = rng.randint(1, 1000, size=(4, 5))
    base = float(B.skipgram_loss(emb, mask, ids, window=2, num_negatives=2))
    assert np.isfinite(base) and base > 0
    emb2 = emb.copy()
    emb2[~mask] = rng.normal(size=emb2[~mask].shape) * 100
    assert float(B.skipgram_loss(emb2, mask, ids, 2, 2)) == pytest.approx(base, rel=1e-6)
    # appending padding positions changes nothing
    emb3 = np.concatenate([emb, rng.normal(size=(4, 3, 3)).astype(np.float32)], 1)
    mask3 = np.concatenate([mask, np.zeros((4, 3), bool)], 1)
    ids3 = np.concatenate([ids, np.zeros((4, 3), int)], 1)
    assert float(B.skipgram_loss(emb3, mask3, ids3, 2, 2)) == pytest.approx(base, rel=1e-6)
    # all-padding: 0, not NaN
    assert float(B.skipgram_loss(emb, np.zeros_like(mask), ids, 2, 2)) == 0.0
    # a "negative" that is the anchor's own item is masked: all ids equal -> positives only
    same = np.ones_like(ids)
    full = np.ones_like(mask)
    pos_only = -np.mean([np.log(1 / (1 + np.exp(-(emb[b, k] @ emb[b, k + j]))))
                         for j in (1, 2) for b in range(4) for k in range(5 - j)])
    assert float(B.skipgram_loss(emb, full, same, 2, 2)) == pytest.approx(pos_only, rel=1e-5)


def test_inbatch_softmax_ignores_invalid_rows_and_duplicates():
    rng = np.random.RandomState(1)
    q, c = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    valid = np.array([1, 1, 0, 1, 1], bool)
    ids = np.array([10, 11, 12, 13, 14])
    base = float(B.inbatch_softmax_loss(q, c, valid, ids))
    q2, c2 = q.copy(), c.copy()
    q2[2], c2[2] = 100.0, 100.0  # an invalid row is neither a query nor a negative
    assert float(B.inbatch_softmax_loss(q2, c2, valid, ids)) == pytest.approx(base, rel=1e-6)
    sub = valid.nonzero()[0]
    assert float(B.inbatch_softmax_loss(q[sub], c[sub], valid[sub], ids[sub])) == pytest.approx(base, rel=1e-6)
    # a duplicate of row 0's positive in row 1 is not a negative for row 0 (nor 1 for 0)
    dup = np.array([10, 10, 12, 13, 14])
    l = q @ c.T
    ref = []
    for i in sub:
        cols = [j for j in sub if j == i or dup[j] != dup[i]]
        ref.append(-(l[i, i] - np.log(np.sum(np.exp(l[i, cols])))))
    assert float(B.inbatch_softmax_loss(q, c, valid, dup)) == pytest.approx(np.mean(ref), rel=1e-5)
    assert float(B.inbatch_softmax_loss(q, c, np.zeros(5, bool), ids)) == 0.0


# ---------------------------------------------------------------------------------------------
# DeepMCP / DMR on a real (tiny) DIN
# ---------------------------------------------------------------------------------------------
def test_deepmcp_terms_and_gradients(fake):
    _, spec, batch = fake
    loss = B.DeepMCPLoss(match_weight=0.5, corr_weight=0.5)
    model = _model(spec, loss)
    for term, must_reach, must_not in (
            ("deepmcp_match", ["user_id", "item_id", "category_id", "match_user", "match_item"],
             ["corr_proj"]),
            ("deepmcp_corr", ["item_id", "category_id", "corr_proj"],
             ["user_id", "match_user", "match_item"])):
        val, grads, vs = _grads(model, batch, term)
        assert np.isfinite(float(val)) and float(val) > 0, term
        reached = {n for n, g in grads.items() if g is not None
                   and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) > 0}
        for key in must_reach:
            assert any(key in n for n in reached), (term, key, sorted(reached))
        for key in must_not:
            assert not any(key in n for n in reached), (term, key)
        g_item = grads[_table(model, "item_id").name]
        assert 0 not in _nonzero_rows(g_item), "the padding row must get no gradient"
    assert model.compute_terms(batch, training=False)[0].keys() == {"ce", "total"}


def test_dmr_terms_and_gradients(fake):
    _, spec, batch = fake
    loss = B.DMRLoss(weight=1.0)
    model = _model(spec, loss)
    val, grads, vs = _grads(model, batch, "dmr")
    assert np.isfinite(float(val)) and float(val) > 0
    reached = {n for n, g in grads.items() if g is not None
               and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) > 0}
    for key in ("item_id", "category_id", "position_embeddings", "att_hidden", "user_proj", "item_proj"):
        assert any(key in n for n in reached), (key, sorted(reached))
    assert not any("user_id" in n for n in reached)
    assert 0 not in _nonzero_rows(grads[_table(model, "item_id").name])
    # rows whose history has < 2 clicks add nothing: blank them out -> same loss on the rest
    hist = batch["short_item_ids"].numpy()
    ok = (hist[:, 0] != b"") & (hist[:, 1:] != b"").any(1)
    assert ok.sum() >= 4 and (~ok).sum() >= 1
    sub = {k: tf.gather(v, np.flatnonzero(ok)) for k, v in batch.items()}
    np.testing.assert_allclose(float(model.compute_terms(sub, training=True)[0]["dmr"]), float(val),
                               rtol=1e-5)


@pytest.mark.parametrize("name, loss_class", [("dropoutnet", B.DropoutNetLoss),
                                              ("deepmcp", B.DeepMCPLoss), ("dmr", B.DMRLoss)])
def test_fit_with_baseline(fake, name, loss_class):
    d, spec, _ = fake
    model = _model(spec, loss_class())
    # eager: the fit loop with the aux loss, not its tracing (the traced train step with the
    # three baselines together runs in test_trainer.py, din+deepmcp+dmr+dropoutnet)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    ds = data.make_dataset(d, "train", 64, shuffle=False).take(4)
    hist = model.fit(ds, epochs=1, verbose=0)
    key = {"dropoutnet": "dropoutnet", "deepmcp": "deepmcp_corr", "dmr": "dmr"}[name]
    assert np.isfinite(hist.history["total"][-1]) and key in hist.history
    out = model(next(iter(ds)))
    assert set(out) == {"logits", "probabilities"}
