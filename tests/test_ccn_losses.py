"""CCN losses (Eq. 5-12) against independent NumPy loop references on hand-made inputs."""

import numpy as np
import pytest
import tensorflow as tf

from ccn import losses as L

TAU, XI = 0.5, 0.8

# B=3 examples, C=4 context slots, D=3.
# ex 0: target clicked; S+ = {0}, S- = {1, 2}, slot 3 padded
# ex 1: target unclicked; S+ = {0, 1}, S- empty, slots 2-3 padded
# ex 2: target clicked; S+ empty, S- = {0, 1, 2}, slot 3 padded
Y = np.array([1, 0, 1], np.int64)
CTX = np.array([[1, 0, 0, -1],
                [0, 0, -1, -1],
                [0, 0, 0, -1]], np.int64)
S_T = np.array([[0.5, -0.2, 0.1],
                [0.3, 0.4, -0.6],
                [-0.1, 0.2, 0.7]], np.float32)
S_C = np.array([[[0.4, -0.1, 0.3], [-0.5, 0.2, 0.1], [0.1, 0.9, -0.3], [9.0, -7.0, 3.0]],
                [[0.2, 0.5, -0.4], [-0.3, 0.1, 0.8], [5.0, 5.0, 5.0], [-4.0, 2.0, 1.0]],
                [[0.6, 0.6, 0.1], [-0.2, -0.4, 0.5], [0.3, -0.7, 0.2], [1.0, 1.0, 1.0]]],
               np.float32)


# ------------------------------------------------------------------ NumPy references (loops)
def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _score(st, sc, similarity):
    if similarity == "cosine":
        return _cos(st, sc)
    if similarity == "dot":
        return float(np.dot(st, sc))
    return float(sc[0])


def ref_repulsion(s_t, s_c, ctx, y, tau, similarity="cosine", per_example=False):
    s_t, s_c = s_t.astype(np.float64), s_c.astype(np.float64)
    out, valid = [], []
    for i in range(len(y)):
        neg = [j for j in range(ctx.shape[1]) if ctx[i, j] >= 0 and ctx[i, j] != y[i]]
        if not neg:
            out.append(0.0)
            valid.append(False)
            continue
        r_self = _score(s_t[i], s_t[i], similarity)
        r = [_score(s_t[i], s_c[i, j], similarity) for j in neg]
        w = [np.exp(-rj / tau) for rj in r]
        w = [wj / sum(w) for wj in w]
        m = len(neg)
        den = np.exp(r_self / tau) + m * sum(wj * np.exp(rj / tau) for wj, rj in zip(w, r))
        out.append(-np.log(np.exp(r_self / tau) / den))
        valid.append(True)
    if per_example:
        return np.array(out), np.array(valid)
    return sum(o for o, v in zip(out, valid) if v) / max(sum(valid), 1)


def ref_attraction(s_t, s_c, ctx, y, xi, weighting="similarity", per_example=False,
                   normalize=True, form="vector_cosine"):
    s_t, s_c = s_t.astype(np.float64), s_c.astype(np.float64)
    out, valid = [], []
    for i in range(len(y)):
        pos = [j for j in range(ctx.shape[1]) if ctx[i, j] >= 0 and ctx[i, j] == y[i]]
        if not pos:
            out.append(0.0)
            valid.append(False)
            continue
        # the vectors that go through exp(./xi): unit-normalised or raw
        e_t = s_t[i] / np.linalg.norm(s_t[i]) if normalize else s_t[i]
        e_c = {j: (s_c[i, j] / np.linalg.norm(s_c[i, j]) if normalize else s_c[i, j])
               for j in pos}
        agg = np.zeros(s_t.shape[1])
        if weighting == "similarity":
            r = [_cos(s_t[i], s_c[i, j]) for j in pos]
            w = np.array([np.exp(-rj / xi) for rj in r])
            w = w / w.sum()
            for wj, j in zip(w, pos):
                agg += wj * np.exp(e_c[j] / xi)
        else:  # elementwise
            for d in range(s_t.shape[1]):
                w = np.array([np.exp(-e_c[j][d] / xi) for j in pos])
                w = w / w.sum()
                agg[d] = sum(wj * np.exp(e_c[j][d] / xi) for wj, j in zip(w, pos))
        u = np.exp(e_t / xi)
        if form == "angle":  # periodic cos of the per-dimension angle differences, averaged
            out.append(-np.log(0.5 * np.mean(np.cos(u - agg)) + 0.5))
        else:
            out.append(-np.log(0.5 * _cos(u, agg) + 0.5))
        valid.append(True)
    if per_example:
        return np.array(out), np.array(valid)
    return sum(o for o, v in zip(out, valid) if v) / max(sum(valid), 1)


def ref_p_s_plus(n0, n1):
    def c2(n):
        return n * (n - 1) / 2.0
    return (c2(n0) + c2(n1)) / c2(n0 + n1)


# ------------------------------------------------------------------ values
def test_masks_hand_made():
    pos, neg = L.context_masks(CTX, Y)
    np.testing.assert_array_equal(pos.numpy(), [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(neg.numpy(), [[0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0]])


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_repulsion_matches_reference(similarity):
    got, valid = L.repulsion_loss_per_example(S_T, S_C, CTX, Y, TAU, similarity=similarity)
    ref, rvalid = ref_repulsion(S_T, S_C, CTX, Y, TAU, similarity, per_example=True)
    np.testing.assert_array_equal(valid.numpy(), rvalid)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    mean = L.repulsion_loss(S_T, S_C, CTX, Y, TAU, similarity=similarity)
    # ex 1 has an empty S-: the mean is over ex 0 and 2 only
    np.testing.assert_allclose(mean.numpy(), (ref[0] + ref[2]) / 2, rtol=1e-5)


def test_repulsion_scalar_reading():
    st, sc = S_T[:, :1], S_C[:, :, :1]
    got = L.repulsion_loss(st, sc, CTX, Y, TAU, similarity="scalar")
    np.testing.assert_allclose(got.numpy(), ref_repulsion(st, sc, CTX, Y, TAU, "scalar"),
                               rtol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighting", ["similarity", "elementwise"])
def test_attraction_matches_reference(weighting, normalize):
    got, valid = L.attraction_loss_per_example(S_T, S_C, CTX, Y, XI, weighting=weighting,
                                               normalize=normalize)
    ref, rvalid = ref_attraction(S_T, S_C, CTX, Y, XI, weighting, per_example=True,
                                 normalize=normalize)
    np.testing.assert_array_equal(valid.numpy(), rvalid)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    mean = L.attraction_loss(S_T, S_C, CTX, Y, XI, weighting=weighting, normalize=normalize)
    # ex 2 has an empty S+: mean over ex 0 and 1
    np.testing.assert_allclose(mean.numpy(), (ref[0] + ref[1]) / 2, rtol=1e-5)


def test_loss_ranges():
    rep, _ = L.repulsion_loss_per_example(S_T, S_C, CTX, Y, TAU)
    att, _ = L.attraction_loss_per_example(S_T, S_C, CTX, Y, XI)
    assert np.all(rep.numpy() >= 0) and np.all(att.numpy() >= 0)
    # exp(s/xi) vectors are positive: cos in (0, 1] -> attraction in [0, log 2)
    assert np.all(att.numpy() < np.log(2.0))


def test_attraction_is_scale_free_by_default_and_vanishes_for_tiny_raw_s():
    a = L.attraction_loss(S_T, S_C, CTX, Y, XI).numpy()
    b = L.attraction_loss(S_T * 1e-3, S_C * 1e-3, CTX, Y, XI).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4)
    assert a > 1e-3
    raw = L.attraction_loss(S_T * 1e-3, S_C * 1e-3, CTX, Y, XI, normalize=False).numpy()
    assert raw < 1e-5  # why normalize=True is the default (docs/method.md 1.4)


def test_identical_positive_gives_zero_attraction():
    st = np.array([[0.3, -0.2]], np.float32)
    sc = np.array([[[0.3, -0.2], [0.3, -0.2]]], np.float32)
    got = L.attraction_loss(st, sc, np.array([[1, 1]]), np.array([1]), XI)
    assert abs(float(got)) < 1e-6


# ------------------------------------------------------------------ masking / empty sets
def test_padding_never_changes_the_loss():
    rng = np.random.default_rng(0)
    extra = (rng.normal(size=(3, 5, 3)) * 50).astype(np.float32)
    s_c2 = np.concatenate([S_C, extra], axis=1)
    ctx2 = np.concatenate([CTX, -np.ones((3, 5), np.int64)], axis=1)
    for fn, t in ((L.repulsion_loss, TAU), (L.attraction_loss, XI)):
        a = fn(S_T, S_C, CTX, Y, t).numpy()
        b = fn(S_T, s_c2, ctx2, Y, t).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # and changing the s values of the already padded slot 3 changes nothing either
    s_c3 = S_C.copy()
    s_c3[:, 3] = -123.0
    for fn, t in ((L.repulsion_loss, TAU), (L.attraction_loss, XI)):
        np.testing.assert_allclose(fn(S_T, S_C, CTX, Y, t).numpy(),
                                   fn(S_T, s_c3, CTX, Y, t).numpy(), rtol=1e-6)


def test_all_empty_batch_is_zero_with_zero_gradients():
    ctx = -np.ones((3, 4), np.int64)
    s_t = tf.Variable(S_T)
    s_c = tf.Variable(S_C)
    with tf.GradientTape() as tape:
        rep = L.repulsion_loss(s_t, s_c, ctx, Y, TAU)
        att = L.attraction_loss(s_t, s_c, ctx, Y, XI)
        tot = rep + att
    assert float(rep) == 0.0 and float(att) == 0.0
    for g in tape.gradient(tot, [s_t, s_c]):
        assert g is None or (np.all(np.isfinite(g.numpy())) and np.all(g.numpy() == 0))
    # every context item has the other label (S+ empty everywhere): attraction is 0
    ctx = np.array([[0, 0, -1, -1]] * 3)
    y = np.array([1, 1, 1])
    assert float(L.attraction_loss(S_T, S_C, ctx, y, XI)) == 0.0
    assert float(L.repulsion_loss(S_T, S_C, ctx, y, TAU)) > 0.0


# ------------------------------------------------------------------ gradients
def _grads(fn, t, **kw):
    s_t = tf.Variable(S_T)
    s_c = tf.Variable(S_C)
    with tf.GradientTape() as tape:
        loss = fn(s_t, s_c, CTX, Y, t, **kw)
    return tape.gradient(loss, [s_t, s_c])


@pytest.mark.parametrize("fn,t", [(L.repulsion_loss, TAU), (L.attraction_loss, XI)])
def test_gradients_finite_nonzero_and_zero_on_padding(fn, t):
    g_t, g_c = [g.numpy() for g in _grads(fn, t)]
    assert np.all(np.isfinite(g_t)) and np.all(np.isfinite(g_c))
    members = (CTX >= 0) & ((CTX != Y[:, None]) if fn is L.repulsion_loss
                            else (CTX == Y[:, None]))
    for i in range(3):
        for j in range(4):
            norm = np.abs(g_c[i, j]).sum()
            if members[i, j]:
                assert norm > 0, (i, j)
            else:
                assert norm == 0, (i, j)  # padding and other-set slots get nothing


def _numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("which", ["repulsion", "attraction"])
def test_gradient_matches_numerical_gradient_of_reference(which):
    # tiny case: B=2, C=3, D=2
    st = np.array([[0.4, -0.3], [0.2, 0.6]], np.float64)
    sc = np.array([[[0.1, 0.5], [-0.4, 0.2], [0.3, 0.3]],
                   [[0.7, -0.1], [0.2, 0.2], [-9.0, 4.0]]], np.float64)
    ctx = np.array([[1, 0, 0], [0, 1, -1]])
    y = np.array([1, 0])
    if which == "repulsion":
        fn, ref, t = L.repulsion_loss, ref_repulsion, TAU
    else:
        fn, ref, t = L.attraction_loss, ref_attraction, XI
    num_t = _numeric_grad(lambda x: ref(x, sc, ctx, y, t), st)
    num_c = _numeric_grad(lambda x: ref(st, x, ctx, y, t), sc)
    v_t, v_c = tf.Variable(st.astype(np.float32)), tf.Variable(sc.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = fn(v_t, v_c, ctx, y, t)
    g_t, g_c = tape.gradient(loss, [v_t, v_c])
    np.testing.assert_allclose(g_t.numpy(), num_t, rtol=2e-3, atol=2e-5)
    np.testing.assert_allclose(g_c.numpy(), num_c, rtol=2e-3, atol=2e-5)


def test_large_values_are_stable():
    s_t = tf.Variable(S_T * 200.0)
    s_c = tf.Variable(S_C * 200.0)
    for weighting in ("similarity", "elementwise"):
        with tf.GradientTape() as tape:
            loss = (L.repulsion_loss(s_t, s_c, CTX, Y, TAU, similarity="dot")
                    + L.attraction_loss(s_t, s_c, CTX, Y, XI, weighting=weighting)
                    + L.attraction_loss(s_t, s_c, CTX, Y, XI, weighting=weighting,
                                        normalize=False))
        assert np.isfinite(loss.numpy())
        for g in tape.gradient(loss, [s_t, s_c]):
            assert np.all(np.isfinite(g.numpy()))
    # anti-parallel exp-vectors cannot happen (exp > 0), but cos near its floor must stay finite
    st = np.array([[40.0, -40.0]], np.float32)
    sc = np.array([[[-40.0, 40.0]]], np.float32)
    v = L.attraction_loss(st, sc, np.array([[1]]), np.array([1]), 0.01, normalize=False)
    assert np.isfinite(v.numpy())


# ------------------------------------------------------------------ Eq. 9, 10, 12
@pytest.mark.parametrize("n0,n1", [(3, 1), (8, 2), (17.5, 0.4), (5.0, 5.0)])
def test_p_s_plus(n0, n1):
    ref = ref_p_s_plus(n0, n1)
    assert L.p_s_plus(n0, n1) == pytest.approx(ref, rel=1e-9)
    assert L.p_s_minus(n0, n1) == pytest.approx(1 - ref, rel=1e-9)
    np.testing.assert_allclose(L.p_s_plus(tf.constant(n0, tf.float32),
                                          tf.constant(n1, tf.float32)).numpy(), ref, rtol=1e-5)


def test_p_s_plus_hand_values_and_degenerate():
    assert L.p_s_plus(3, 1) == pytest.approx(0.5)          # (6 + 0) / 12
    assert L.p_s_plus(8, 2) == pytest.approx(58.0 / 90.0)  # (56 + 2) / 90
    assert L.p_s_plus(0.5, 0.3) == 1.0                      # N0 + N1 <= 1: undefined -> 1
    assert L.p_s_plus(1, 1) > 0                             # 0 floored, never a division by 0


def test_ccn_total():
    got = L.ccn_total(0.7, 1.2, 0.4, 0.1, 0.8).numpy()
    np.testing.assert_allclose(got, 0.7 + 0.1 * (1.2 + (0.2 / 0.8) * 0.4), rtol=1e-6)


# ------------------------------------------------------------------ XLA
def test_runs_under_xla():
    @tf.function(jit_compile=True)
    def f(s_t, s_c, ctx, y):
        rep = L.repulsion_loss(s_t, s_c, ctx, y, TAU)
        att = L.attraction_loss(s_t, s_c, ctx, y, XI)
        att_e = L.attraction_loss(s_t, s_c, ctx, y, XI, weighting="elementwise")
        return rep, att, att_e, L.ccn_total(0.5, rep, att, 0.1, L.p_s_plus(tf.constant(8.0),
                                                                           tf.constant(2.0)))

    rep, att, att_e, _ = f(tf.constant(S_T), tf.constant(S_C), tf.constant(CTX), tf.constant(Y))
    np.testing.assert_allclose(rep.numpy(), ref_repulsion(S_T, S_C, CTX, Y, TAU), rtol=1e-5)
    np.testing.assert_allclose(att.numpy(), ref_attraction(S_T, S_C, CTX, Y, XI), rtol=1e-5)
    np.testing.assert_allclose(att_e.numpy(),
                               ref_attraction(S_T, S_C, CTX, Y, XI, "elementwise"), rtol=1e-5)


# ------------------------------------------------------------------ Eq. 7, "angle" reading
def test_attraction_angle_matches_reference_and_masks():
    got, valid = L.attraction_loss_per_example(S_T, S_C, CTX, Y, XI, form="angle")
    ref, rvalid = ref_attraction(S_T, S_C, CTX, Y, XI, per_example=True, form="angle")
    np.testing.assert_array_equal(valid.numpy(), rvalid)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    mean = L.attraction_loss(S_T, S_C, CTX, Y, XI, form="angle")
    np.testing.assert_allclose(mean.numpy(), (ref[0] + ref[1]) / 2, rtol=1e-5)
    # padding (extra padded slots with wild values, or new values in a padded slot) changes nothing
    rng = np.random.default_rng(1)
    s_c2 = np.concatenate([S_C, (rng.normal(size=(3, 4, 3)) * 50).astype(np.float32)], axis=1)
    ctx2 = np.concatenate([CTX, -np.ones((3, 4), np.int64)], axis=1)
    np.testing.assert_allclose(L.attraction_loss(S_T, s_c2, ctx2, Y, XI, form="angle").numpy(),
                               mean.numpy(), rtol=1e-6)
    # the same target as its positives -> 0; an opposite one -> clearly positive
    st = np.array([[0.3, -0.2]], np.float32)
    same = np.array([[[0.3, -0.2], [0.6, -0.4]]], np.float32)
    assert abs(float(L.attraction_loss(st, same, np.array([[1, 1]]), np.array([1]), XI,
                                       form="angle"))) < 1e-6
    opp = -same
    assert float(L.attraction_loss(st, opp, np.array([[1, 1]]), np.array([1]), XI, form="angle")) > 0.3


def test_attraction_angle_is_eq7_literally_for_scalar_s():
    """D = 1, raw s, Eq. 8 weights softmax(-s'/xi): the angle reading is Eq. 7 as printed."""
    st = np.array([[0.4], [-0.3]], np.float32)
    sc = np.array([[[0.1], [0.9], [-0.5]], [[0.2], [0.0], [0.7]]], np.float32)
    ctx = np.array([[1, 1, 0], [0, -1, 0]])
    y = np.array([1, 0])
    got, _ = L.attraction_loss_per_example(st, sc, ctx, y, XI, similarity="scalar",
                                           normalize=False, form="angle")
    ref = []
    for i in range(2):
        pos = [j for j in range(3) if ctx[i, j] >= 0 and ctx[i, j] == y[i]]
        w = np.exp([-sc[i, j, 0] / XI for j in pos])
        w = w / w.sum()
        agg = sum(wj * np.exp(sc[i, j, 0] / XI) for wj, j in zip(w, pos))
        ref.append(-np.log(0.5 * np.cos(np.exp(st[i, 0] / XI) - agg) + 0.5))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5)


def test_attraction_angle_gradients_finite_and_zero_on_padding():
    s_t, s_c = tf.Variable(S_T), tf.Variable(S_C)
    with tf.GradientTape() as tape:
        loss = L.attraction_loss(s_t, s_c, CTX, Y, XI, form="angle")
    g_t, g_c = tape.gradient(loss, [s_t, s_c])
    assert np.all(np.isfinite(g_t.numpy())) and np.all(np.isfinite(g_c.numpy()))
    assert np.abs(g_t.numpy()).sum() > 0
    np.testing.assert_array_equal(g_c.numpy()[CTX < 0], 0.0)


def test_ccn_loss_attraction_form_flag():
    from ccn.aux import CCNLoss

    with pytest.raises(ValueError, match="attraction_form"):
        CCNLoss({"p_s_plus": 0.8}, attraction_form="bogus")
    assert CCNLoss({"p_s_plus": 0.8}, attraction_form="angle").get_config()["attraction_form"] == "angle"


@pytest.mark.parametrize("form", ["vector_cosine", "angle"])
def test_attraction_rms_scale_is_the_unit_reading_on_sqrt_d_directions(form):
    """exponent_scale="rms" == the raw-s loss on sqrt(D) * s/||s|| (same weights: they only
    depend on directions)."""
    d = S_T.shape[-1]
    st = S_T / np.linalg.norm(S_T, axis=-1, keepdims=True) * np.sqrt(d)
    sc = S_C / np.maximum(np.linalg.norm(S_C, axis=-1, keepdims=True), 1e-12) * np.sqrt(d)
    got = L.attraction_loss(S_T, S_C, CTX, Y, XI, form=form, exponent_scale="rms")
    ref = L.attraction_loss(st.astype(np.float32), sc.astype(np.float32), CTX, Y, XI, form=form,
                            normalize=False)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="exponent_scale"):
        L.attraction_loss(S_T, S_C, CTX, Y, XI, exponent_scale="bogus")


# ------------------------------------------------------------------ Eq. 12's batch mean
def test_batch_reduction_is_eq12_mean_over_the_batch():
    """``reduction="batch"``: each term is summed over the examples having its set and divided
    by B (Eq. 12's 1/|D|), against the NumPy loops; "valid" divides by the examples having it.
    Ex 1 has no S- and ex 2 no S+ in the hand-made batch."""
    ref_r, valid_r = ref_repulsion(S_T, S_C, CTX, Y, TAU, per_example=True)
    ref_a, valid_a = ref_attraction(S_T, S_C, CTX, Y, XI, per_example=True)
    B = len(Y)
    for fn, ref, valid, kw in ((L.repulsion_loss, ref_r, valid_r, dict(tau=TAU)),
                               (L.attraction_loss, ref_a, valid_a, dict(xi=XI))):
        assert 0 < valid.sum() < B  # the two means differ on this batch
        batch = fn(S_T, S_C, CTX, Y, reduction="batch", **kw).numpy()
        per_valid = fn(S_T, S_C, CTX, Y, reduction="valid", **kw).numpy()
        np.testing.assert_allclose(batch, ref[valid].sum() / B, rtol=1e-5)
        np.testing.assert_allclose(per_valid, ref[valid].sum() / valid.sum(), rtol=1e-5)
        # padding: appended padded context slots change neither mean
        pad_c = np.concatenate([S_C, np.ones_like(S_C[:, :2])], axis=1)
        pad_ctx = np.concatenate([CTX, -np.ones_like(CTX[:, :2])], axis=1)
        np.testing.assert_allclose(fn(S_T, pad_c, pad_ctx, Y, reduction="batch", **kw).numpy(),
                                   batch, rtol=1e-5)
        # gradients: finite, and zero for an example without the set
        st = tf.Variable(S_T)
        with tf.GradientTape() as tape:
            loss = fn(st, S_C, CTX, Y, reduction="batch", **kw)
        g = tape.gradient(loss, st).numpy()
        assert np.isfinite(g).all() and np.abs(g[valid]).sum() > 0
        np.testing.assert_array_equal(g[~valid], 0.0)
    with pytest.raises(ValueError, match="reduction"):
        L.repulsion_loss(S_T, S_C, CTX, Y, reduction="mean")
