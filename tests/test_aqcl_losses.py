"""AQCL pure functions (Eq. 2-6, augmentations, projector) against NumPy loop references."""

import numpy as np
import pytest
import tensorflow as tf

from aqcl import alpha as A
from aqcl import augment as G
from aqcl import codebook as CB
from aqcl import losses as L
from aqcl.projector import Projector

Z = np.array([[0.9, 0.1, -0.2], [0.0, 1.0, 0.3], [-0.5, 0.4, 0.8], [0.3, -0.7, 0.1]],
             np.float32)
ZP = np.array([[0.8, 0.3, -0.1], [0.2, 0.9, 0.1], [-0.4, 0.2, 0.9], [0.5, -0.5, -0.2]],
              np.float32)
Q = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.6, 0.0],
              [-0.6, 0.0, 0.6]], np.float32)
ALPHA = np.array([0.0, 0.3, 0.7, 1.0], np.float32)
T1, T2, T3, K = 0.1, 0.2, 0.1, 2


# ------------------------------------------------------------------ NumPy references
def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _neg_set(z, zp, j, negatives, mask):
    out = []
    for k in range(len(z)):
        if k == j or (mask is not None and not mask[k]):
            continue
        out.append(zp[k])
        if negatives == "both":
            out.append(z[k])
    return out


def ref_icl(z, zp, tau, negatives="views", mask=None):
    losses = []
    for j in range(len(z)):
        if mask is not None and not mask[j]:
            continue
        num = np.exp(_cos(z[j], zp[j]) / tau)
        den = num + sum(np.exp(_cos(z[j], n) / tau) for n in _neg_set(z, zp, j, negatives, mask))
        losses.append(-np.log(num / den))
    return np.mean(losses) if losses else 0.0


def ref_aqcl(z, zp, q, alpha, t1, t2, k, negatives="views", mask=None):
    losses = []
    for j in range(len(z)):
        if mask is not None and not mask[j]:
            continue
        sims_q = [_cos(z[j], qq) for qq in q]
        top = sorted(range(len(q)), key=lambda t: -sims_q[t])[:k]
        d1_pos = np.exp(_cos(z[j], zp[j]) / t1)
        num = d1_pos ** (1 - alpha[j]) * sum(np.exp(sims_q[t] / t2) for t in top) ** alpha[j]
        den = d1_pos + sum(np.exp(_cos(z[j], n) / t1)
                           for n in _neg_set(z, zp, j, negatives, mask))
        den += sum(np.exp(s / t2) for s in sims_q)
        losses.append(-np.log(num / den))
    return np.mean(losses) if losses else 0.0


def ref_sinkhorn(scores, n_iters, eps):
    """SwAV's distributed_sinkhorn, single worker, plain (non-log) arithmetic."""
    a = np.exp(scores.T.astype(np.float64) / eps)  # [T, B]
    t, b = a.shape
    a /= a.sum()
    for _ in range(n_iters):
        for r in range(t):
            a[r] /= a[r].sum() * t
        for c in range(b):
            a[:, c] /= a[:, c].sum() * b
    return a


def ref_codebook_loss(z, q, tau3, n_iters, eps):
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = zn @ qn.T
    a = ref_sinkhorn(s, n_iters, eps)
    total = 0.0
    for b in range(len(z)):
        code = int(np.argmax(a[:, b]))
        logits = s[b] / tau3
        total -= logits[code] - np.log(np.sum(np.exp(logits)))
    return total / len(z)


# ------------------------------------------------------------------ Eq. 2
@pytest.mark.parametrize("negatives", ["views", "both"])
def test_icl_matches_reference(negatives):
    got = L.icl_loss(Z, ZP, T1, negatives=negatives).numpy()
    np.testing.assert_allclose(got, ref_icl(Z, ZP, T1, negatives), rtol=1e-5, atol=1e-6)


def test_icl_mask_excludes_anchor_and_negative():
    mask = np.array([True, False, True, True])
    got = L.icl_loss(Z, ZP, T1, mask=mask).numpy()
    np.testing.assert_allclose(got, ref_icl(Z, ZP, T1, mask=mask), rtol=1e-5)
    # same as dropping the example from the batch
    keep = mask.nonzero()[0]
    np.testing.assert_allclose(got, L.icl_loss(Z[keep], ZP[keep], T1).numpy(), rtol=1e-5)


# ------------------------------------------------------------------ Eq. 3
@pytest.mark.parametrize("negatives", ["views", "both"])
def test_aqcl_matches_reference(negatives):
    got = L.aqcl_loss(Z, ZP, Q, ALPHA, T1, T2, K, negatives=negatives).numpy()
    np.testing.assert_allclose(got, ref_aqcl(Z, ZP, Q, ALPHA, T1, T2, K, negatives), rtol=1e-5)


def test_aqcl_scalar_alpha_and_mask():
    mask = np.array([1, 1, 0, 1], np.float32)
    got = L.aqcl_loss(Z, ZP, Q, 0.4, T1, T2, 3, mask=mask).numpy()
    ref = ref_aqcl(Z, ZP, Q, [0.4] * 4, T1, T2, 3, mask=mask.astype(bool))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert float(L.aqcl_loss(Z, ZP, Q, 0.4, T1, T2, 3, mask=np.zeros(4, bool))) == 0.0


def test_aqcl_alpha_zero_is_icl_with_codewords_in_denominator():
    per = L.aqcl_loss_per_example(Z, ZP, Q, 0.0, T1, T2, K).numpy()
    icl = L.icl_loss_per_example(Z, ZP, T1).numpy()
    assert np.all(per >= icl - 1e-6)  # extra (codeword) terms only in the denominator


def test_aqcl_gradients_codebook_stopped():
    z, zp, q = tf.Variable(Z), tf.Variable(ZP), tf.Variable(Q)
    with tf.GradientTape() as tape:
        loss = L.aqcl_loss(z, zp, q, ALPHA, T1, T2, K)
    gz, gzp, gq = tape.gradient(loss, [z, zp, q])
    assert gq is None
    for g in (gz, gzp):
        assert np.all(np.isfinite(g.numpy())) and np.abs(g.numpy()).sum() > 0
    with tf.GradientTape() as tape:
        loss = L.aqcl_loss(z, zp, q, ALPHA, T1, T2, K, stop_gradient_codebook=False)
    assert np.abs(tape.gradient(loss, q).numpy()).sum() > 0


def test_aqcl_numerical_gradient():
    zp = tf.constant(ZP[:3])

    def f(z_):
        return L.aqcl_loss(z_, zp, Q, ALPHA[:3], 0.5, 0.5, 2)

    theo, num = tf.test.compute_gradient(f, [tf.constant(Z[:3])], delta=1e-3)
    np.testing.assert_allclose(theo[0], num[0], rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------------ Eq. 4
def test_sinkhorn_matches_swav_reference():
    rng = np.random.default_rng(1)
    s = rng.uniform(-1, 1, size=(6, 4)).astype(np.float32)
    got = CB.sinkhorn(s, n_iters=3, epsilon=0.5).numpy()
    np.testing.assert_allclose(got, ref_sinkhorn(s, 3, 0.5), rtol=1e-4, atol=1e-7)


def test_sinkhorn_marginals():
    rng = np.random.default_rng(2)
    b, t = 16, 8
    s = rng.uniform(-1, 1, size=(b, t)).astype(np.float32)
    a = CB.sinkhorn(s, n_iters=3, epsilon=0.05).numpy()
    assert a.shape == (t, b) and np.all(a >= 0)
    np.testing.assert_allclose(a.sum(0), 1.0 / b, rtol=1e-4)    # exact after the column step
    np.testing.assert_allclose(a.sum(1), 1.0 / t, rtol=0.5)     # roughly after 3 iterations
    a = CB.sinkhorn(s, n_iters=200, epsilon=0.05).numpy()
    np.testing.assert_allclose(a.sum(0), 1.0 / b, rtol=1e-4)
    np.testing.assert_allclose(a.sum(1), 1.0 / t, rtol=1e-3)
    assert np.all(np.isfinite(CB.sinkhorn(s * 100, n_iters=3, epsilon=0.01).numpy()))


def test_sinkhorn_mask():
    rng = np.random.default_rng(3)
    s = rng.uniform(-1, 1, size=(5, 3)).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0], bool)
    a = CB.sinkhorn(s, n_iters=50, epsilon=0.1, mask=mask).numpy()
    assert np.all(a[:, ~mask] == 0)
    np.testing.assert_allclose(a[:, mask], CB.sinkhorn(s[mask], 50, 0.1).numpy(), rtol=1e-4)


# ------------------------------------------------------------------ Eq. 5
def test_codebook_loss_matches_reference():
    got = CB.codebook_loss(Z, Q, T3, n_iters=3, epsilon=0.5).numpy()
    np.testing.assert_allclose(got, ref_codebook_loss(Z, Q, T3, 3, 0.5), rtol=1e-5)
    s = CB.codebook_loss(Z, Q, T3, n_iters=3, epsilon=0.5, reduction="sum").numpy()
    np.testing.assert_allclose(s, got * len(Z), rtol=1e-5)


def test_codebook_loss_gradient_reaches_codebook_only():
    z, q = tf.Variable(Z), tf.Variable(Q)
    with tf.GradientTape() as tape:
        loss = CB.codebook_loss(z, q, T3)
    gz, gq = tape.gradient(loss, [z, q])
    assert gz is None or np.all(gz.numpy() == 0)
    assert np.all(np.isfinite(gq.numpy())) and np.abs(gq.numpy()).sum() > 0


def test_codebook_layer():
    layer = CB.Codebook(num_codes=7, dim=5)
    q = layer.normalized().numpy()
    np.testing.assert_array_equal(q, layer(tf.zeros([2, 5])).numpy())
    assert q.shape == (7, 5)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    assert len(layer.trainable_weights) == 1


# ------------------------------------------------------------------ Eq. 6
def test_alpha_of_length():
    lengths = np.array([0, 1, 2, 5, 10, 40, 100], np.float32)
    for w1, w2 in ((1.0, 1.0), (0.5, 2.0), (3.0, 0.5)):
        a = A.alpha_of_length(lengths, 10.0, w1, w2).numpy()
        np.testing.assert_allclose(a, np.exp(-w1 * (lengths / 10.0) ** w2), rtol=1e-5)
        assert np.all((a >= 0) & (a <= 1))
        assert a[0] == pytest.approx(1.0)
        assert np.all(np.diff(a) < 0)  # strictly decreasing in L
    a = A.alpha_for_batch(tf.constant([3, 7], tf.int64), 5.0, const_alpha=0.3).numpy()
    np.testing.assert_allclose(a, [0.3, 0.3])
    with pytest.raises(ValueError):
        A.alpha_of_length(lengths, 10.0, -1.0, 1.0)


# ------------------------------------------------------------------ augmentation
def _history_batch():
    items = np.array([[b"i1", b"i2", b"i3", b"i4", b"", b""],
                      [b"i5", b"", b"", b"", b"", b""],
                      [b"i6", b"i7", b"i8", b"i9", b"i10", b"i11"],
                      [b"", b"", b"", b"", b"", b""]] * 8)
    cats = np.where(items == b"", b"", b"c")
    sell = np.where(items == b"", b"", b"s")
    long_items = np.array([[b"l1", b"l2", b""]] * 32)
    return {"short_item_ids": tf.constant(items), "short_category_ids": tf.constant(cats),
            "short_seller_ids": tf.constant(sell), "long_item_ids": tf.constant(long_items),
            "item_id": tf.constant([b"x"] * 32), "history_length": tf.constant([4] * 32)}


def test_history_groups():
    groups = G.history_groups(_history_batch().keys())
    assert groups == [["long_item_ids"],
                      ["short_category_ids", "short_item_ids", "short_seller_ids"]]


def test_mask_history_properties():
    f = _history_batch()
    names = list(G.history_groups(f.keys()))
    out = G.mask_history(f, names, 0.5, tf.constant([1, 2]))
    for n in ("short_item_ids", "short_category_ids", "short_seller_ids", "long_item_ids"):
        x, y = f[n].numpy(), out[n].numpy()
        assert np.all(y[x == b""] == b"")                  # padding never touched
        assert np.all((y == x) | (y == b""))               # only replaced by padding
    # same positions across the sequences of one group
    m_item = (f["short_item_ids"].numpy() != out["short_item_ids"].numpy())
    for n in ("short_category_ids", "short_seller_ids"):
        np.testing.assert_array_equal(m_item, f[n].numpy() != out[n].numpy())
    frac = m_item.sum() / (f["short_item_ids"].numpy() != b"").sum()
    assert 0.3 < frac < 0.7
    assert out["item_id"] is f["item_id"] and "history_length" in out
    # flat names are grouped by prefix: same result
    flat = [n for g in names for n in g]
    out2 = G.mask_history(f, flat, 0.5, tf.constant([1, 2]))
    for n in flat:
        np.testing.assert_array_equal(out[n].numpy(), out2[n].numpy())


def test_mask_history_seeds_and_extreme_rates():
    f = _history_batch()
    names = G.history_groups(f.keys())
    a = G.mask_history(f, names, 0.3, [7, 1])["short_item_ids"].numpy()
    b = G.mask_history(f, names, 0.3, [7, 1])["short_item_ids"].numpy()
    c = G.mask_history(f, names, 0.3, [7, 2])["short_item_ids"].numpy()
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    np.testing.assert_array_equal(G.mask_history(f, names, 0.0, 3)["short_item_ids"].numpy(),
                                  f["short_item_ids"].numpy())
    assert np.all(G.mask_history(f, names, 1.0, 3)["short_item_ids"].numpy() == b"")


def test_embedding_dropout():
    x = tf.ones([64, 16])
    a = G.embedding_dropout(x, 0.25, [3, 4]).numpy()
    b = G.embedding_dropout(x, 0.25, [3, 4]).numpy()
    c = G.embedding_dropout(x, 0.25, [3, 5]).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.75)}
    assert 0.15 < (a == 0).mean() < 0.35
    d = G.embedding_dropout(x, 0.25, [3, 4], rescale=False).numpy()
    assert set(np.unique(d)) <= {0.0, 1.0}
    np.testing.assert_array_equal(G.embedding_dropout(x, 0.0, 1).numpy(), x.numpy())


# ------------------------------------------------------------------ projector
def test_projector():
    g = Projector(z_dim=64)
    z = g(tf.random.stateless_normal([5, 20], [0, 1]))
    assert z.shape == (5, 64)
    assert len(g.trainable_weights) == 6  # 3 Dense layers


# ------------------------------------------------------------------ XLA
def test_runs_under_xla():
    @tf.function(jit_compile=True)
    def f(z, zp, q, lengths):
        al = A.alpha_of_length(lengths, 5.0, 1.0, 1.0)
        return (L.icl_loss(z, zp, T1), L.aqcl_loss(z, zp, q, al, T1, T2, K),
                CB.codebook_loss(z, q, T3, epsilon=0.5), CB.sinkhorn(tf.matmul(z, q, transpose_b=True)),
                G.embedding_dropout(z, 0.2, tf.constant([1, 2])))

    lengths = tf.constant([0, 2, 5, 30])
    icl, aq, cb, _, _ = f(tf.constant(Z), tf.constant(ZP), tf.constant(Q), lengths)
    np.testing.assert_allclose(icl.numpy(), ref_icl(Z, ZP, T1), rtol=1e-5)
    al = np.exp(-lengths.numpy() / 5.0)
    np.testing.assert_allclose(aq.numpy(), ref_aqcl(Z, ZP, Q, al, T1, T2, K), rtol=1e-5)
    np.testing.assert_allclose(cb.numpy(), ref_codebook_loss(Z, Q, T3, 3, 0.5), rtol=1e-5)


def _numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


def test_gradients_match_numerical_gradient_of_reference():
    z, zp = Z.astype(np.float64), ZP.astype(np.float64)
    vz, vzp = tf.Variable(Z), tf.Variable(ZP)
    with tf.GradientTape(persistent=True) as tape:
        aq = L.aqcl_loss(vz, vzp, Q, ALPHA, 0.5, 0.4, 2, negatives="both")
        ic = L.icl_loss(vz, vzp, 0.5)
    np.testing.assert_allclose(
        tape.gradient(aq, vz).numpy(),
        _numeric_grad(lambda x: ref_aqcl(x, zp, Q, ALPHA, 0.5, 0.4, 2, "both"), z),
        rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(
        tape.gradient(aq, vzp).numpy(),
        _numeric_grad(lambda x: ref_aqcl(z, x, Q, ALPHA, 0.5, 0.4, 2, "both"), zp),
        rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(tape.gradient(ic, vz).numpy(),
                               _numeric_grad(lambda x: ref_icl(x, zp, 0.5), z),
                               rtol=2e-3, atol=2e-5)
