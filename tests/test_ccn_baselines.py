"""DIHN / DIAN (CCN Table 2 competitors): the intent label and loss against NumPy references on
hand-made inputs (padding never counts), the DIAN mixture against its closed form, gradients,
and properties of the two backbones (the intent network never sees the target)."""
import ctrcore  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from ccn import baselines as B
from ctrcore import backbones, data, layers, schema, testing, trigger_backbones as TB
from ctrcore.model import CTRModel

PAD = -1


def np_intent_label(label, tcat, trig, ctx_lab, ctx_cat):
    out = []
    for b in range(len(label)):
        known = trig[b] > 1
        hit = (label[b] == 1 and tcat[b] == trig[b]) or any(
            l == 1 and c == trig[b] for l, c in zip(ctx_lab[b], ctx_cat[b]))
        out.append(float(known and hit))
    return np.array(out, np.float32)


CASE = dict(  # 5 hand-made pages
    label=[1, 0, 0, 1, 0],
    tcat=[5, 5, 7, 1, 3],
    trig=[5, 5, 5, 1, 0],
    ctx_lab=[[0, 0, PAD], [0, 1, 1], [1, 0, PAD], [1, 1, 1], [1, PAD, PAD]],
    ctx_cat=[[5, 6, 0], [6, 5, 9], [7, 5, 0], [1, 1, 1], [0, 0, 0]],
)
# row 0: the clicked target has the trigger's category -> 1; row 1: a clicked context item of
# category 5 -> 1; row 2: only a non-clicked item shares it -> 0; row 3: OOV trigger -> 0 even
# though OOV "matches"; row 4: no trigger (padding) -> 0


def _label(c):
    return B.intent_label(tf.constant(c["label"]), tf.constant(c["tcat"]), tf.constant(c["trig"]),
                          tf.constant(c["ctx_lab"]), tf.constant(c["ctx_cat"])).numpy()


def test_intent_label_matches_numpy_and_hand_values():
    got = _label(CASE)
    np.testing.assert_array_equal(got, np_intent_label(**{k: np.array(v) for k, v in CASE.items()}))
    np.testing.assert_array_equal(got, [1, 1, 0, 0, 0])


def test_intent_label_padding_never_counts():
    more = dict(CASE)
    more["ctx_lab"] = [r + [PAD, PAD] for r in CASE["ctx_lab"]]
    more["ctx_cat"] = [r + [5, 0] for r in CASE["ctx_cat"]]  # padding slots even with the trigger's category
    np.testing.assert_array_equal(_label(more), _label(CASE))


def test_intent_loss_numpy_reference_and_gradient():
    logits = tf.constant([2.0, -1.0, 0.5, -3.0, 0.0])
    y = tf.constant([1.0, 1.0, 0.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-logits.numpy()))
    ref = np.mean(-(y.numpy() * np.log(p) + (1 - y.numpy()) * np.log(1 - p)))
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = B.intent_loss(logits, y)
    np.testing.assert_allclose(loss.numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), (p - y.numpy()) / 5, rtol=1e-5, atol=1e-7)


def test_dian_mixture_logit_closed_form_and_limits():
    q, a, b = (tf.constant(v) for v in ([0.3, -2.0, 4.0], [1.0, 0.5, -1.0], [-0.5, 2.0, 3.0]))
    s = lambda x: 1 / (1 + np.exp(-x))
    y = s(q.numpy()) * s(a.numpy()) + (1 - s(q.numpy())) * s(b.numpy())
    np.testing.assert_allclose(TB.mixture_logit(q, a, b).numpy(), np.log(y / (1 - y)), rtol=1e-5)
    # intent certain -> the trigger-aware (q -> 1) or trigger-free (q -> 0) estimate alone
    big = tf.constant([60.0, 60.0, 60.0])
    np.testing.assert_allclose(TB.mixture_logit(big, a, b).numpy(), a.numpy(), atol=1e-4)
    np.testing.assert_allclose(TB.mixture_logit(-big, a, b).numpy(), b.numpy(), atol=1e-4)
    # stable where a naive log(y / (1 - y)) overflows; finite gradients
    x = tf.constant([80.0, -80.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = TB.mixture_logit(tf.constant([0.0, 0.0]), x, x)
    assert np.isfinite(out.numpy()).all() and np.isfinite(tape.gradient(out, x).numpy()).all()
    np.testing.assert_allclose(out.numpy(), [80.0, -80.0], rtol=1e-5)


CFG = schema.SpecConfig(short_len=5, long_len=12, max_context=4, user_profile=("gender",))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fake_intent"))
    spec = testing.write_fake_dataset(d, n_examples=300, seed=7, spec_config=CFG)
    batch = next(iter(data.make_dataset(d, "train", 32, shuffle=False, deterministic=True)))
    return d, spec, batch


@pytest.mark.parametrize("name", ["dihn", "dian"])
def test_intent_network_never_sees_the_target(fake, name):
    _, spec, batch = fake
    bb = backbones.build_backbone(name, spec, emb_dim=8, mlp_units=(16, 8))
    out = bb(batch)
    other = dict(batch)
    for n in layers.item_feature_names(spec, ""):
        other[n] = tf.reverse(batch[n], axis=[0])  # other targets, same users / triggers / histories
    out2 = bb(other)
    np.testing.assert_allclose(out["intent_logit"].numpy(), out2["intent_logit"].numpy(), atol=1e-6)
    assert not np.allclose(out["logits"].numpy(), out2["logits"].numpy())


@pytest.mark.parametrize("name", ["dihn", "dian"])
def test_intent_loss_in_training_and_gradient_reaches_the_intent_net(fake, name):
    _, spec, batch = fake
    bb = backbones.build_backbone(name, spec, emb_dim=8, mlp_units=(16, 8))
    loss = B.IntentLoss(weight=0.5)
    model = CTRModel(spec, bb, aux_losses=[loss])
    feats = bb.lookup(batch)
    with tf.GradientTape() as tape:
        terms, outputs = model.compute_terms(feats, training=True)
        intent = terms["intent"]
    y = loss.labels(model, feats).numpy()
    p = tf.sigmoid(outputs["intent_logit"]).numpy()
    ref = 0.5 * np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    np.testing.assert_allclose(intent.numpy(), ref, rtol=1e-5)
    assert 0 < y.mean() < 1  # the fake pages have both intents
    g = tape.gradient(intent, bb.intent_mlp.trainable_variables)
    assert all(x is not None and np.abs(x.numpy()).sum() > 0 for x in g)
    # the label is the page-level reference computed from the raw columns
    names = {p_: bb.category_feature(p_) for p_ in ("", "trigger_", "context_")}
    ids = bb.lookup({v: batch[v] for v in names.values()})
    np.testing.assert_array_equal(y, np_intent_label(batch["label"].numpy(), ids["category_id"].numpy(),
                                                     ids[names["trigger_"]].numpy(),
                                                     batch["context_labels"].numpy(), ids[names["context_"]].numpy()))
