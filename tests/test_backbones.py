"""ctrcore.backbones / ctrcore.layers: shapes, masking, OOV, serving inputs, shared tables."""
import ctrcore  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from ctrcore import backbones, data, layers, schema, testing

CFG = schema.SpecConfig(short_len=5, long_len=12, max_context=4, user_profile=("gender",))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fake_bb"))
    spec = testing.write_fake_dataset(d, n_examples=400, seed=5, spec_config=CFG)
    batch = next(iter(data.make_dataset(d, "train", 16, shuffle=False, deterministic=True)))
    return d, spec, batch


@pytest.fixture(scope="module")
def built(fake):
    _, spec, batch = fake
    out = {}
    for name in backbones.BACKBONES:
        bb = backbones.build_backbone(name, spec, mlp_units=(32, 8), emb_dim=8)
        bb(batch)
        out[name] = bb
    return out


@pytest.mark.parametrize("name", backbones.BACKBONES)
def test_output_keys_and_shapes(fake, built, name):
    _, spec, batch = fake
    bb = built[name]
    out = bb(batch, training=False)
    di = 8 * len(spec.config.item_side)
    assert out["logits"].shape == [16] and out["logits"].dtype == tf.float32
    assert out["latent"].shape == [16, 8]
    assert out["target_emb"].shape == [16, di]
    assert out["user_emb"].shape == [16, 8 * 2]  # user_id + gender
    assert ("trigger_emb" in out) == (name.startswith("tan") or name in ("dihn", "dian")) == bb.trigger_aware
    assert ("intent_logit" in out) == (name in ("dihn", "dian"))
    if bb.trigger_aware:
        assert out["trigger_emb"].shape == [16, di]
    assert ("s_target" in out) == (name in ("tan", "tan_notsi")) == bb.has_collaborative_module
    if bb.has_collaborative_module:
        assert out["s_target"].shape == [16, 16]
    for v in out.values():
        assert np.isfinite(v.numpy()).all()


def _pad_more(batch, spec, extra=3):
    out = dict(batch)
    for p in ("short_", "long_"):
        for n in layers.item_feature_names(spec, p):
            x = batch[n]
            out[n] = tf.concat([x, tf.fill([x.shape[0], extra], "")], axis=1)
    return out


@pytest.mark.parametrize("name", backbones.BACKBONES)
def test_padding_invariance_and_all_padding(fake, built, name):
    _, spec, batch = fake
    bb = built[name]
    ref = bb(batch)["logits"].numpy()
    more = bb(_pad_more(batch, spec))["logits"].numpy()
    np.testing.assert_allclose(ref, more, rtol=1e-5, atol=1e-5)
    empty = dict(batch)
    for p in ("short_", "long_"):
        for n in layers.item_feature_names(spec, p):
            empty[n] = tf.fill(tf.shape(batch[n]), "")
    out = bb(empty)
    for v in out.values():
        assert np.isfinite(v.numpy()).all()


def test_target_attention_all_padding_is_zero():
    att = layers.TargetAttention(heads=2)
    q = tf.random.normal([3, 8])
    seq = tf.random.normal([3, 5, 8])
    mask = tf.constant([[True] * 5, [False] * 5, [True, False, False, False, False]])
    out = att(q, seq, mask).numpy()
    assert np.isfinite(out).all() and (out[1] == 0).all() and not (out[0] == 0).all()
    # padding values do not matter
    seq2 = tf.where(mask[..., None], seq, 100.0)
    np.testing.assert_allclose(att(q, seq2, mask).numpy(), out, atol=1e-5)


@pytest.mark.parametrize("output_dim", [None, 6])
def test_target_attention_single_query_equals_keras_mha(output_dim):
    """The single-query form (keys/values never projected) is the Keras MultiHeadAttention
    function with the same weights: outputs and gradients (query, sequence, every weight)."""
    fast = layers.TargetAttention(heads=4, output_dim=output_dim)
    ref = layers.TargetAttention(heads=4, output_dim=output_dim, single_query=False)
    rng = np.random.default_rng(0)
    q = tf.constant(rng.normal(size=(5, 12)), tf.float32)
    seq = tf.constant(rng.normal(size=(5, 7, 12)), tf.float32)
    mask = tf.constant(rng.random((5, 7)) < 0.6) | tf.one_hot([0, 1, 2, 3, 4], 7, on_value=True,
                                                                  off_value=False)
    mask = tf.concat([mask[:4], tf.zeros([1, 7], tf.bool)], 0)  # last row: all padding
    fast(q, seq, mask)
    ref(q, seq, mask)
    # non-zero biases, so the bias algebra is exercised
    ref.set_weights([w + rng.normal(size=w.shape).astype("float32") * 0.3 for w in fast.get_weights()])
    fast.set_weights(ref.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([q, seq])
        a, b = fast(q, seq, mask), ref(q, seq, mask)
        la, lb = tf.reduce_sum(tf.sin(a)), tf.reduce_sum(tf.sin(b))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert (a.numpy()[4] == 0).all()
    ga = tape.gradient(la, [q, seq] + fast.trainable_variables)
    gb = tape.gradient(lb, [q, seq] + ref.trainable_variables)
    assert len(fast.trainable_variables) == 8
    names = ["query", "seq"] + [v.name for v in fast.trainable_variables]
    for name, x, y in zip(names, ga, gb):
        y = tf.convert_to_tensor(y).numpy()
        # the key bias cancels in the softmax: no gradient in the single-query form, ~0 in Keras'
        x = np.zeros_like(y) if x is None and "key" in name and "bias" in name else tf.convert_to_tensor(x).numpy()
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5, err_msg=name)


def test_sim_hard_search_mask():
    cats = tf.constant([[2, 3, 2, 0], [1, 1, 4, 4]])
    mask = tf.not_equal(cats, 0)
    m = layers.sim_hard_search(None, cats, tf.constant([2, 1]), mask).numpy()
    assert m.tolist() == [[True, False, True, False], [False, False, False, False]]  # OOV query: nothing


def test_serving_only_features_and_extra_keys(fake, built):
    d, spec, _ = fake
    full = next(iter(data.make_dataset(d, "valid", 8, shuffle=False, deterministic=True)))
    serving = {k: full[k] for k in spec.serving_features}  # the same batch, serving keys only
    for name, bb in built.items():
        a = bb(serving)["logits"].numpy()
        extra = dict(full, some_unknown_key=tf.zeros([8, 3]))
        np.testing.assert_allclose(a, bb(extra)["logits"].numpy(), rtol=1e-6, atol=1e-6)
        assert set(bb.serving_inputs) <= set(spec.serving_features)


def test_unknown_ids_map_to_oov(fake, built):
    _, spec, batch = fake
    bb = built["tan"]
    weird = dict(batch)
    for n in ("item_id", "trigger_item_id", "user_id"):
        weird[n] = tf.fill(tf.shape(batch[n]), "never-seen-id")
    ids = bb.lookup(weird)
    assert (ids["item_id"].numpy() == layers.OOV_ID).all()
    assert ids["item_id"].dtype == tf.int32
    assert np.isfinite(bb(weird)["logits"].numpy()).all()
    # idempotent lookup: ids in, same output
    np.testing.assert_allclose(bb(ids)["logits"].numpy(), bb(weird)["logits"].numpy(), atol=1e-6)


def test_embed_items_shares_tables(fake, built):
    _, spec, batch = fake
    bb = built["tan"]
    ctx = bb.embed_items(batch, "context_")
    di = 8 * len(spec.config.item_side)
    assert ctx.shape == [16, spec.config.max_context, di]
    as_target = {n: batch["context_" + n + "s"][:, 0] for n in spec.config.item_side}
    np.testing.assert_allclose(bb.embed_items(as_target, "").numpy(), ctx[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(bb(batch)["target_emb"].numpy(), bb.embed_items(batch, "").numpy(), atol=1e-6)
    assert bb.item_mask(batch, "context_").shape == [16, spec.config.max_context]


def test_collaborative_degree_broadcast(fake, built):
    _, spec, batch = fake
    bb = built["tan"]
    out = bb(batch)
    ctx = bb.embed_items(batch, "context_")
    s = bb.collaborative_degree(out["user_emb"], ctx, out["trigger_emb"])
    assert s.shape == [16, spec.config.max_context, 16]
    s0 = bb.collaborative_degree(out["user_emb"], ctx[:, 1], out["trigger_emb"])
    np.testing.assert_allclose(s[:, 1].numpy(), s0.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        bb.collaborative_degree(out["user_emb"], out["target_emb"], out["trigger_emb"]).numpy(),
        out["s_target"].numpy(), atol=1e-5)
    with pytest.raises(ValueError):
        built["din"].collaborative_degree(out["user_emb"], ctx, out["trigger_emb"])


def test_cm_dim_scalar(fake):
    _, spec, batch = fake
    bb = backbones.build_backbone("tan", spec, cm_dim=1, mlp_units=(16, 8))
    assert bb(batch)["s_target"].shape == [16, 1]


def test_emb_dropout_stateless(fake, built):
    _, _, batch = fake
    bb = built["tan"]
    a = bb(batch, emb_dropout=0.5, seed=3)["latent"].numpy()
    b = bb(batch, emb_dropout=0.5, seed=3)["latent"].numpy()
    c = bb(batch, emb_dropout=0.5, seed=4)["latent"].numpy()
    ref = bb(batch)["latent"].numpy()
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, ref)
    te = bb(batch, emb_dropout=0.5, seed=3)["target_emb"].numpy()
    assert 0.3 < (te == 0).mean() < 0.7


def test_apply_runs_under_xla(fake, built):
    _, _, batch = fake
    bb = built["tan"]
    ids = bb.lookup(batch)
    f = tf.function(lambda x: bb.apply(x, emb_dropout=0.1, seed=tf.constant([1, 2]))["logits"], jit_compile=True)
    assert np.isfinite(f(ids).numpy()).all()


def test_mlp_call_broadcast_equals_tiled_concat():
    from ctrcore import layers as L

    rng = np.random.default_rng(0)
    shared = tf.constant(rng.normal(size=(3, 5)), tf.float32)
    per = tf.constant(rng.normal(size=(3, 4, 6)), tf.float32)
    mlp = L.MLP([7, 2], linear_last=True)
    tiled = tf.concat([tf.tile(shared[:, None, :], [1, 4, 1]), per], -1)
    ref = mlp(tiled)  # builds the layers on the concatenated width
    np.testing.assert_allclose(mlp.call_broadcast(shared, per).numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    fresh = L.MLP([7, 2], linear_last=True)  # unbuilt: call_broadcast builds the first Dense itself
    assert fresh.call_broadcast(shared, per).shape == [3, 4, 2]


def test_din_attention_split_first_layer_equals_concat():
    from ctrcore import layers as L

    rng = np.random.default_rng(1)
    q = tf.constant(rng.normal(size=(3, 6)), tf.float32)
    seq = tf.constant(rng.normal(size=(3, 5, 6)), tf.float32)
    mask = tf.constant(rng.random((3, 5)) > 0.3)
    att = L.DinAttention((7, 4))
    out = att(q, seq, mask)
    qb = tf.broadcast_to(q[:, None, :], tf.shape(seq))
    score = att.mlp(tf.concat([qb, seq, qb - seq, qb * seq], -1))[..., 0]  # the textbook form
    ref = tf.einsum("bl,bld->bd", tf.where(mask, score, tf.zeros_like(score)), seq)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_composed_structure():
    """Issue 13 item 2: one architecture class per backbone name, in ctrcore/archs/<family>.py;
    the backbone modules import each other one way and at module level only; no code reads
    another object's private attributes."""
    import ast
    import pathlib

    from ctrcore import archs

    assert tuple(archs.ARCHITECTURES) == backbones.BACKBONES
    for name, cls in archs.ARCHITECTURES.items():
        assert cls.kind == name and issubclass(cls, archs.Architecture)
        assert cls.__module__.split(".")[-1] in ("wide_deep", "deepfm", "din", "trigger", "intent"), cls
    root = pathlib.Path(backbones.__file__).resolve().parents[1]
    files = sorted((root / "ctrcore" / "archs").glob("*.py")) + [
        root / "ctrcore" / "backbones.py", root / "ctrcore" / "trigger_backbones.py", root / "ccn" / "baselines.py"]
    offenders = []
    for path in files:
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                offenders.append(f"{path.name}:{node.lineno}: function-level import")
            if isinstance(node, ast.ImportFrom) and node.module in ("ctrcore.backbones", "ctrcore.trigger_backbones") \
                    and path.name != "backbones.py":
                offenders.append(f"{path.name}:{node.lineno}: imports {node.module}")
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offenders.append(f"{path.name}:{node.lineno}: reads .{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_backbone_attributes_are_the_declared_layers(built):
    """The layers of the front-end and the architecture are tracked by the backbone under the
    names they declare (the checkpoint names), and every variable belongs to one of them."""
    for name, bb in built.items():
        declared = bb.front.named_layers() + bb.arch.named_layers()
        assert len({a for a, _ in declared}) == len(declared), name
        for attr, layer in declared:
            got = getattr(bb, attr)
            assert (dict(got) == layer) if isinstance(layer, dict) else (got is layer), (name, attr)
        own = {id(v) for _, layer in declared
               for l in (layer.values() if isinstance(layer, dict) else [layer]) for v in l.variables}
        assert {id(v) for v in bb.variables} == own, name
