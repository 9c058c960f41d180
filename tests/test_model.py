"""ctrcore.model: CTRModel (serving call, CE + aux terms, metrics in History, XLA, optimizers)."""
import ctrcore  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from ctrcore import backbones, data, schema, testing
from ctrcore.model import AuxLoss, CTRModel

CFG = schema.SpecConfig(short_len=5, long_len=12, max_context=4)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fake_model"))
    spec = testing.write_fake_dataset(d, n_examples=3000, seed=0, spec_config=CFG)
    return d, spec


class FakeAux(AuxLoss):
    """Uses the shared forward outputs, the context embeddings and a variable of its own."""

    def build(self, input_shape=None):
        self.w = self.add_weight("w", shape=[], initializer="ones")

    def call(self, model, features, outputs, training=False):
        if not hasattr(self, "w"):
            self.build()
        ctx = model.backbone.embed_items(features, "context_")
        term = 0.01 * self.w * (tf.reduce_mean(tf.square(outputs["latent"])) + tf.reduce_mean(tf.square(ctx)))
        return {"fake_aux": term}


def _ds(d, split, bs, **kw):
    return data.make_dataset(d, split, bs, shuffle=(split == "train"), deterministic=True, seed=1, **kw)


@pytest.mark.parametrize("name", backbones.BACKBONES)
def test_each_backbone_trains_a_few_steps(fake, name):
    d, spec = fake
    model = CTRModel(spec, backbones.build_backbone(name, spec, emb_dim=8, mlp_units=(32, 16)))
    model.compile(keras.optimizers.Adagrad(0.05), run_eagerly=True)  # no tracing: fast
    h = model.fit(_ds(d, "train", 64).take(2), epochs=1, verbose=0)
    for k in ("ce", "total", "loss", "auc"):
        assert np.isfinite(h.history[k][0]), k
    out = model(next(iter(_ds(d, "valid", 8, roles=("serving",)))))
    assert set(out) == {"logits", "probabilities"} and out["probabilities"].shape == [8]


def test_tan_learns_fake_data(fake):
    d, spec = fake
    keras.utils.set_random_seed(0)
    model = CTRModel(spec, backbones.build_backbone("tan", spec))
    model.compile(keras.optimizers.Adam(2e-3))
    h = model.fit(_ds(d, "train", 128), validation_data=_ds(d, "valid", 512), epochs=3, verbose=0)
    assert h.history["val_auc"][-1] > 0.65, h.history["val_auc"]


def test_aux_term_in_history_and_single_forward(fake):
    d, spec = fake
    bb = backbones.build_backbone("tan", spec, emb_dim=8, mlp_units=(16, 8), l2_emb=1e-5, l2_dense=1e-5)
    model = CTRModel(spec, bb, aux_losses=[FakeAux(name="fake")])
    model.compile(keras.optimizers.Adagrad(0.05), run_eagerly=True)
    h = model.fit(_ds(d, "train", 64).take(4), validation_data=_ds(d, "valid", 64).take(2), epochs=2, verbose=0)
    for k in ("ce", "fake_aux", "emb_l2", "regularization", "total", "loss", "auc"):
        assert k in h.history and "val_" + k in h.history, (k, sorted(h.history))
    h0 = h.history
    np.testing.assert_allclose(h0["total"][-1], h0["loss"][-1])
    assert abs(h0["ce"][-1] + h0["fake_aux"][-1] + h0["emb_l2"][-1] + h0["regularization"][-1] - h0["total"][-1]) < 1e-3
    assert any(v.name.startswith("fake") for v in model.trainable_variables)
    # one backbone forward pass per loss computation
    calls = []
    orig = bb.apply
    bb.apply = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
    try:
        model.compute_loss(next(iter(_ds(d, "train", 16))), training=True)
    finally:
        del bb.apply
    assert len(calls) == 1


def test_xla_train_step_runs(fake):
    d, spec = fake
    # din: the smallest compile (XLA on CPU costs 7-12 s of compile); the tan forward pass is
    # XLA-checked in test_backbones.py::test_apply_runs_under_xla
    model = CTRModel(spec, backbones.build_backbone("din", spec, emb_dim=8, mlp_units=(16, 8)),
                     aux_losses=[FakeAux(name="fake")])
    # CompositeOptimizer with legacy Adagrad: sparse updates (no XLA kernel) stay outside XLA
    opt = tfrs.experimental.optimizers.CompositeOptimizer([
        (keras.optimizers.legacy.Adagrad(0.05), model.embedding_variables),
        (keras.optimizers.legacy.Adam(1e-3), model.dense_variables)])
    model.compile(opt, jit_compile=True, steps_per_execution=2)
    before = [v.numpy().copy() for v in model.embedding_variables()]
    h = model.fit(_ds(d, "train", 64, repeat=True), steps_per_epoch=4, epochs=1, verbose=0)
    assert np.isfinite(h.history["total"][0]) and "fake_aux" in h.history
    assert 1 <= model._xla_grads.experimental_get_tracing_count() <= 2  # (variable-creating trace)
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.embedding_variables()))


def test_composite_optimizer_and_variable_split(fake):
    d, spec = fake
    model = CTRModel(spec, backbones.build_backbone("wide_deep", spec, emb_dim=8, mlp_units=(16, 8)))
    emb, dense = model.embedding_variables(), model.dense_variables()
    assert emb and dense
    assert {id(v) for v in emb} | {id(v) for v in dense} == {id(v) for v in model.trainable_variables}
    assert not {id(v) for v in emb} & {id(v) for v in dense}
    assert all(len(v.shape) == 2 and v.shape[0] >= 3 for v in emb)
    opt = tfrs.experimental.optimizers.CompositeOptimizer([
        (keras.optimizers.legacy.Adagrad(0.05), model.embedding_variables),
        (keras.optimizers.legacy.Adam(1e-3), model.dense_variables)])
    model.compile(opt, run_eagerly=True)
    h = model.fit(_ds(d, "train", 64).take(2), epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0])


def test_predict_and_evaluate(fake):
    d, spec = fake
    model = CTRModel(spec, backbones.build_backbone("din", spec, emb_dim=8, mlp_units=(16, 8)))
    model.compile(keras.optimizers.Adagrad(0.05), run_eagerly=True)
    res = model.evaluate(_ds(d, "valid", 128), return_dict=True, verbose=0)
    assert {"ce", "total", "loss", "auc"} <= set(res)
    pred = model.predict(_ds(d, "valid", 128, roles=("serving",)), verbose=0)
    assert pred["probabilities"].shape == (schema.load_stats(d)["examples"]["valid"],)


def test_train_feature_names_parse_only_what_the_step_reads(fake):
    from ccn.aux import CCNLoss
    from aqcl.aux import AQCLLoss

    d, spec = fake
    stats = schema.load_stats(d)
    din = CTRModel(spec, backbones.build_backbone("din", spec, emb_dim=4, mlp_units=(8,)))
    names = set(din.train_feature_names())
    assert "label" in names and "item_id" in names and "short_item_ids" in names
    assert not any(n.startswith(("long_", "context_", "trigger_")) for n in names), names
    tan = CTRModel(spec, backbones.build_backbone("tan", spec, emb_dim=4, mlp_units=(8,), cm_dim=4),
                   aux_losses=[CCNLoss(stats), AQCLLoss(stats, z_dim=8, T=8, K=2)])
    names = set(tan.train_feature_names())
    assert {"context_item_ids", "context_labels", "long_item_ids", "trigger_item_id",
            "history_length"} <= names
    assert "page_id" not in names
    # an aux loss that declares nothing gets every feature
    assert CTRModel(spec, backbones.build_backbone("din", spec, emb_dim=4, mlp_units=(8,)),
                    aux_losses=[FakeAux()]).train_feature_names() is None


class _DtypeProbe(AuxLoss):
    """Records the dtype of the id features the aux loss receives in a train step."""

    def call(self, model, features, outputs, training=False):
        self.seen = {n: features[n].dtype for n in ("item_id", "short_item_ids")}
        return {"probe": tf.constant(0.0)}


def test_aux_losses_receive_looked_up_ids_and_subset_trains(fake):
    from ccn.aux import CCNLoss
    from aqcl.aux import AQCLLoss

    d, spec = fake
    stats = schema.load_stats(d)
    probe = _DtypeProbe(name="probe")
    model = CTRModel(spec, backbones.build_backbone("tan", spec, emb_dim=4, mlp_units=(8,), cm_dim=4),
                     aux_losses=[CCNLoss(stats), AQCLLoss(stats, z_dim=8, T=8, K=2), probe])
    # eager: train_step (lookups, then backbone + aux losses on the ids) is the same code traced
    # or not; the traced step with CCN + AQCL runs in test_trainer.py (ccn+aqcl, subset input)
    model.compile(keras.optimizers.Adagrad(0.05), run_eagerly=True)
    names = model.train_feature_names() or list(spec.features)
    h = model.fit(_ds(d, "train", 64, features=names).take(3), epochs=1, verbose=0)
    assert probe.seen == {"item_id": tf.int32, "short_item_ids": tf.int32}
    for k in ("ccn_repulsion", "aqcl", "codebook", "total"):
        assert np.isfinite(h.history[k][0]), k
