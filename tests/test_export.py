"""serving.export: layout / versions / atomic rename, serving-graph-only content, signatures,
bad-request errors, warmup file, saved_model_cli, CLI rebuild, parity in a fresh process.

Four models are trained a few steps on the fake dataset (CCN = tan backbone + CCN loss, TAN,
DIN + AQCL, DIAN) with the trainer's model factory and optimizer (eagerly: what is checked here is
the export of a trained model with optimizer and aux-loss state, not the traced train step, which
test_trainer.py runs for every model), then exported once each: TAN with the default warmup file
and export check (test_warmup_requests), the others without (their served outputs are checked
against the model in a fresh process by test_parity_in_fresh_process).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from ctrcore import schema
from ctrcore.testing import write_fake_dataset
from serving import export, warmup
from serving.signatures import EXAMPLES_INPUT

PY = sys.executable
# name -> (--model, extra aux losses, modules the case needs)
CASES = {
    "ccn": ("ccn", [], ["ccn.aux"]),
    "tan": ("tan", [], []),
    "din_aqcl": ("din", ["aqcl"], ["aqcl.aux"]),
    "dian": ("dian", [], ["ccn.baselines"]),  # intent net in the serving graph, intent loss not
}
FORBIDDEN = ("context_", "label", "codebook", "projector", "codes", "aqcl", "ccn", "adagrad",
             "accumulator", "optimizer", "iteration", "true_positives", "ranking")


def _missing_module(mods):
    import importlib

    for m in ["ctrcore.backbones", "ctrcore.model", "ctrcore.trainer", "ccn.models"] + list(mods):
        try:
            importlib.import_module(m)
        except ImportError as e:
            return f"{m} not importable yet ({e})"
    return None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("data"))
    spec = write_fake_dataset(d, n_examples=2000, seed=0)
    return d, spec


@pytest.fixture(scope="module")
def valid_examples(data):
    d, _ = data
    return warmup.read_examples(d, "valid", 128)


def _train(data, name, model_dir):
    """Build (trainer model factory), fit 10 steps; returns the Keras CTRModel."""
    from ccn import models
    from ctrcore import trainer
    from ctrcore.config import TrainConfig
    from ctrcore.data import make_dataset

    d, spec = data
    model, aux, _ = CASES[name]
    cfg = TrainConfig(data_dir=d, model_dir=model_dir, model=model, aux_losses=aux, emb_dim=8,
                      mlp_units=[16, 8], num_heads=2, cm_dim=4, batch_size=64, learning_rate=0.05,
                      dropout=0.2)
    lp = {"aqcl_codebook_size": 16, "aqcl_z_dim": 8}
    stats = schema.load_stats(d)
    tf.random.set_seed(0)
    m = trainer.build_compiled(cfg, models.model_factory(cfg, lp), spec, stats)
    m.run_eagerly = True  # 10 steps: no tracing of the train step (see the module docstring)
    ds = make_dataset(d, "train", 64, spec=spec, repeat=True, seed=0)
    m.fit(ds, steps_per_epoch=10, epochs=1, verbose=0)
    return m, cfg, lp


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """name -> (model, export_path) or a skip reason (str)."""
    base = str(tmp_path_factory.mktemp("export"))
    out = {}
    for name, (_, _, mods) in CASES.items():
        reason = _missing_module(mods)
        if reason:
            out[name] = reason
            continue
        m, cfg, lp = _train(data, name, str(tmp_path_factory.mktemp(f"model_{name}")))
        if name == "tan":  # warmup "auto": spec.root valid split; the export check
            path = export.export_model(m, data[1], base, name)
        else:
            path = export.export_model(m, data[1], base, name, warmup_examples=None, verify=False)
        out[name] = (m, path, cfg, lp)
    return out


def _get(trained, name):
    v = trained[name]
    if isinstance(v, str):
        pytest.skip(v)
    return v


# ---------------------------------------------------------------------------------------------
# versions / layout (no model)
# ---------------------------------------------------------------------------------------------
def test_version_helpers(tmp_path):
    base = tmp_path / "m"
    assert export.list_versions(str(base)) == [] and export.next_version(str(base)) == 1
    for n in ("1", "3", "10", ".tmp-4-abc", "notes", "7x"):
        (base / n).mkdir(parents=True)
    (base / "12").write_text("a file, not a version")
    assert export.list_versions(str(base)) == [1, 3, 10]
    assert export.next_version(str(base)) == 11  # numeric, not lexicographic
    assert export.prune_versions(str(base), 2) == [1]
    assert export.list_versions(str(base)) == [3, 10]
    assert export.prune_versions(str(base), 0) == []  # keep all
    assert export.prune_versions(str(base), 1, protect=[3]) == []


def test_export_versions_keep_and_atomic(data, tmp_path, monkeypatch):
    from ctrcore.backbones import build_backbone

    d, spec = data
    bb = build_backbone("din", spec, emb_dim=4, mlp_units=[8])
    base = str(tmp_path)
    paths = [export.export_model(bb, spec, base, "ctr", keep_versions=2, warmup_examples=None,
                                 verify=False) for _ in range(3)]
    assert [os.path.basename(p) for p in paths] == ["1", "2", "3"]
    assert export.list_versions(os.path.join(base, "ctr")) == [2, 3]  # oldest deleted
    assert sorted(os.listdir(os.path.join(base, "ctr"))) == ["2", "3"]  # no temporary left
    p = paths[-1]
    assert os.path.isfile(os.path.join(p, "saved_model.pb"))
    assert sorted(os.listdir(os.path.join(p, "assets"))) == sorted(f"{v}.txt" for v in spec.vocabularies)
    info = json.load(open(os.path.join(p, "assets.extra", "export_info.json")))
    assert info["version"] == 3 and info["backbone"] == "din"
    # explicit versions: a new one works, an existing one is refused (immutable)
    assert export.export_model(bb, spec, base, "ctr", version=7, keep_versions=0, warmup_examples=None,
                               verify=False).endswith(os.path.join("ctr", "7"))
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_model(bb, spec, base, "ctr", version=7, warmup_examples=None, verify=False)

    # a failure after the SavedModel was written leaves no version and no temporary behind
    seen = {}

    def boom(tmp, *a, **k):
        seen["tmp"] = tmp
        assert os.path.isfile(os.path.join(tmp, "saved_model.pb"))
        assert os.path.basename(tmp).startswith(".tmp-")  # not an integer: TF Serving ignores it
        assert export.list_versions(os.path.join(base, "ctr")) == [2, 3, 7]  # not visible yet
        raise export.ExportError("injected")

    monkeypatch.setattr(export, "verify_export", boom)
    with pytest.raises(export.ExportError, match="injected"):
        export.export_model(bb, spec, base, "ctr", warmup_examples=None)
    assert not os.path.exists(seen["tmp"])
    assert sorted(os.listdir(os.path.join(base, "ctr"))) == ["2", "3", "7"]


# ---------------------------------------------------------------------------------------------
# content: serving graph only
# ---------------------------------------------------------------------------------------------
def _all_graph_names(concrete_fn):
    gd = concrete_fn.graph.as_graph_def()
    names = []
    for node in gd.node:
        names.append(node.name)
        names.extend(node.input)
    for f in gd.library.function:
        names.extend(a.name for a in f.signature.input_arg)
        for node in f.node_def:
            names.append(node.name)
            names.extend(node.input)
    return names


@pytest.mark.parametrize("name", list(CASES))
def test_export_contains_only_the_serving_graph(trained, name, data):
    m, path, _, _ = _get(trained, name)
    _, spec = data
    loaded = tf.saved_model.load(path)
    bb_vars = sorted((v.name, tuple(v.shape)) for v in m.backbone.variables)
    got = sorted((v.name, tuple(v.shape)) for v in loaded.variables)
    assert len(loaded.variables) == len(m.backbone.variables)
    assert got == bb_vars
    for vname, _ in got:
        assert vname.startswith(m.backbone.name + "/"), vname
        assert not any(f in vname.lower() for f in FORBIDDEN), vname
    # the training model really had the training-only state we claim is gone
    extra = {v.name for v in m.variables} - {v.name for v in m.backbone.variables}
    assert extra  # metrics (and aux-loss layers for CCN / AQCL)
    assert len(m.optimizer.variables()) > 1  # iterations + Adagrad slots
    # nothing but the backbone's variables in the checkpoint (no optimizer slots, no aux)
    ckpt = [k for k, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))
            if "VARIABLE_VALUE" in k]
    assert len(ckpt) == len(bb_vars) and not any("OPTIMIZER_SLOT" in k for k in ckpt)
    # signature graphs: no training-only op / input names
    for sig_name, sig in loaded.signatures.items():
        names = _all_graph_names(sig)
        bad = [n for n in names if any(f in n.lower() for f in ("context_", "label", "codebook", "projector"))]
        assert not bad, (sig_name, bad[:10])
    # inputs are exactly the serving features; outputs probabilities + logits
    pred = loaded.signatures["predict"]
    specs = pred.structured_input_signature[1]
    assert set(specs) == set(spec.serving_features)
    for n, fd in spec.serving_features.items():
        assert specs[n].dtype == tf.string and specs[n].shape.as_list() == [None] + list(fd.shape)
    assert set(pred.structured_outputs) == {"probabilities", "logits"}
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == [EXAMPLES_INPUT]
    assert default.structured_input_signature[1][EXAMPLES_INPUT].shape.as_list() == [None]
    assert set(default.structured_outputs) == {"probabilities", "logits"}
    assert set(loaded.signatures) == {"serving_default", "predict"}


def test_saved_model_cli_lists_documented_io(trained, data):
    _, path, _, _ = _get(trained, "ccn")
    _, spec = data
    cli = os.path.join(os.path.dirname(PY), "saved_model_cli")
    cmd = [cli] if os.path.exists(cli) else [PY, "-m", "tensorflow.python.tools.saved_model_cli"]
    out = subprocess.run(cmd + ["show", "--all", "--dir", path], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    blocks = {}
    for chunk in text.split("signature_def['")[1:]:
        blocks[chunk.split("']")[0]] = chunk
    assert set(blocks) == {"__saved_model_init_op", "serving_default", "predict"}

    def io(block):
        ins = block.split("The given SavedModel SignatureDef contains the following input(s):")[1]
        ins, outs = ins.split("The given SavedModel SignatureDef contains the following output(s):")
        parse = lambda s: {l.split("['")[1].split("']")[0]: l for l in s.splitlines() if "tensor_info:" in l}
        shapes = lambda s: [l.strip() for l in s.splitlines() if l.strip().startswith("shape:")]
        return parse(ins), parse(outs), shapes(ins)

    ins, outs, _ = io(blocks["serving_default"])
    assert set(ins) == {EXAMPLES_INPUT} and set(outs) == {"probabilities", "logits"}
    ins, outs, shapes = io(blocks["predict"])
    assert set(ins) == set(spec.serving_features) and set(outs) == {"probabilities", "logits"}
    assert sorted(shapes) == sorted(f"shape: (-1{''.join(', %d' % s for s in fd.shape)})"
                                    for fd in spec.serving_features.values())
    assert "DT_STRING" in blocks["predict"] and "DT_FLOAT" in blocks["predict"]


# ---------------------------------------------------------------------------------------------
# parity: fresh process importing only tensorflow
# ---------------------------------------------------------------------------------------------
_FRESH = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf
    args = json.loads(sys.argv[1])
    ex = [r.numpy() for r in tf.data.TFRecordDataset(args["examples"])]
    feats = dict(np.load(args["features"], allow_pickle=True))
    out = {}
    for name, path in args["exports"].items():
        m = tf.saved_model.load(path)
        out[name + "/serving_default"] = m.signatures["serving_default"](examples=tf.constant(ex))["probabilities"].numpy()
        r = m.signatures["predict"](**{k: tf.constant(v) for k, v in feats.items()})
        out[name + "/predict"] = r["probabilities"].numpy()
        out[name + "/predict_logits"] = r["logits"].numpy()
    project = sorted(m for m in sys.modules if m.split(".")[0] in ("ctrcore", "serving", "ccn", "aqcl", "tensorflow_recommenders"))
    np.savez(args["out"], project_modules=np.array(project, dtype=object), **out)
""")


def test_parity_in_fresh_process(trained, data, valid_examples, tmp_path):
    from ctrcore.data import serving_parse_spec

    _, spec = data
    ready = {n: v for n, v in trained.items() if not isinstance(v, str)}
    assert ready, "no model could be trained"
    ex = warmup.to_serving_examples(valid_examples, spec)
    ex_path = str(tmp_path / "ex.tfrecord")
    with tf.io.TFRecordWriter(ex_path) as w:
        for e in ex:
            w.write(e)
    feats = tf.io.parse_example(tf.constant(ex), serving_parse_spec(spec))
    np.savez(str(tmp_path / "feats.npz"), **{k: v.numpy() for k, v in feats.items()})
    args = {"examples": ex_path, "features": str(tmp_path / "feats.npz"), "out": str(tmp_path / "out.npz"),
            "exports": {n: v[1] for n, v in ready.items()}}
    script = tmp_path / "fresh.py"
    script.write_text(_FRESH)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    r = subprocess.run([PY, "-I", str(script), json.dumps(args)], capture_output=True, text=True,
                       cwd=str(tmp_path), env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = np.load(str(tmp_path / "out.npz"), allow_pickle=True)
    assert list(res["project_modules"]) == []  # the fresh process needs nothing from this project
    for name, (m, _, _, _) in ready.items():
        ref = m(feats, training=False)
        p_ref, l_ref = ref["probabilities"].numpy(), ref["logits"].numpy()
        assert p_ref.shape == (len(ex),) and np.ptp(p_ref) > 0
        for k in ("serving_default", "predict"):
            assert np.max(np.abs(res[f"{name}/{k}"] - p_ref)) <= 1e-5, (name, k)
        assert np.max(np.abs(res[f"{name}/predict_logits"] - l_ref)) <= 1e-5
    missing = sorted(set(CASES) - set(ready))
    if missing:
        pytest.skip(f"parity not checked for {missing}: {[trained[n] for n in missing]}")


# ---------------------------------------------------------------------------------------------
# bad requests
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tan_loaded(trained, data, valid_examples):
    m, path, _, _ = _get(trained, "tan")
    _, spec = data
    ex = warmup.to_serving_examples(valid_examples[:4], spec)
    feats = {k: tf.constant(v) for k, v in warmup.parse_serving_arrays(ex, spec).items()}
    return tf.saved_model.load(path), spec, ex, feats, m


def _example(spec, ex, drop=None, replace=None):
    e = tf.train.Example.FromString(ex)
    if drop:
        del e.features.feature[drop]
    for k, f in (replace or {}).items():
        e.features.feature[k].CopyFrom(f)
    return e.SerializeToString()


def test_good_requests_and_unknown_ids(tan_loaded):
    loaded, spec, ex, feats, m = tan_loaded
    a = loaded.signatures["predict"](**feats)
    b = loaded.signatures["serving_default"](examples=tf.constant(ex))
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)
    assert a["probabilities"].shape == (4,) and a["logits"].dtype == tf.float32
    # unknown ids map to OOV in-graph: finite outputs, no error
    odd = dict(feats, item_id=tf.constant(["never-seen-1", "x", "", "\u00e9"]),
               short_item_ids=tf.fill(feats["short_item_ids"].shape, "nope"))
    p = loaded.signatures["predict"](**odd)["probabilities"].numpy()
    assert np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))


def test_bad_request_missing_feature(tan_loaded):
    loaded, spec, ex, feats, _ = tan_loaded
    f = dict(feats)
    f.pop("trigger_item_id")
    with pytest.raises(TypeError, match="trigger_item_id"):
        loaded.signatures["predict"](**f)
    bad = [_example(spec, e, drop="short_item_ids") for e in ex]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"short_item_ids.*required"):
        loaded.signatures["serving_default"](examples=tf.constant(bad))


def test_bad_request_wrong_dtype(tan_loaded):
    loaded, spec, ex, feats, _ = tan_loaded
    f = dict(feats, user_id=tf.constant([1, 2, 3, 4], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a string tensor but is a int64"):
        loaded.signatures["predict"](**f)
    intf = tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))
    bad = [_example(spec, e, replace={"user_id": intf}) for e in ex]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"user_id.*[Dd]ata types don't match"):
        loaded.signatures["serving_default"](examples=tf.constant(bad))


def test_bad_request_wrong_rank(tan_loaded):
    loaded, spec, ex, feats, _ = tan_loaded
    f = dict(feats, item_id=tf.reshape(feats["item_id"], [4, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"item_id \[4,1\] is not compatible with expected shape \[\?\]"):
        loaded.signatures["predict"](**f)
    f = dict(feats, long_item_ids=feats["long_item_ids"][:, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="long_item_ids"):
        loaded.signatures["predict"](**f)
    with pytest.raises(tf.errors.InvalidArgumentError, match="examples"):
        loaded.signatures["serving_default"](examples=tf.constant([ex]))


def test_bad_request_wrong_sequence_length(tan_loaded):
    loaded, spec, ex, feats, _ = tan_loaded
    L = spec.features["short_item_ids"].shape[0]
    f = dict(feats, short_item_ids=feats["short_item_ids"][:, : L - 1])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"short_item_ids \[4,{L - 1}\] is not compatible with expected shape \[\?,{L}\]"):
        loaded.signatures["predict"](**f)
    short = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i1"] * (L + 2)))
    bad = [_example(spec, e, replace={"short_item_ids": short}) for e in ex]
    with pytest.raises(tf.errors.InvalidArgumentError, match="short_item_ids"):
        loaded.signatures["serving_default"](examples=tf.constant(bad))


def test_bad_request_empty_and_ragged_batch(tan_loaded):
    loaded, spec, ex, feats, _ = tan_loaded
    empty = {k: v[:0] for k, v in feats.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        loaded.signatures["predict"](**empty)
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        loaded.signatures["serving_default"](examples=tf.zeros([0], tf.string))
    f = dict(feats, seller_id=feats["seller_id"][:3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"seller_id\W{0,3} has a different batch size"):
        loaded.signatures["predict"](**f)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Could not parse example input"):
        loaded.signatures["serving_default"](examples=tf.constant([b"not a proto"]))
    # the model still works after the errors
    assert loaded.signatures["predict"](**feats)["probabilities"].shape == (4,)


# ---------------------------------------------------------------------------------------------
# warmup file
# ---------------------------------------------------------------------------------------------
def test_warmup_requests(trained, data, valid_examples):
    m, path, _, _ = _get(trained, "tan")
    _, spec = data
    logs = warmup.read_warmup_file(path)
    assert os.path.isfile(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    got = []
    for log in logs:
        req = log.predict_log.request
        assert req.model_spec.name == "tan"
        sig = req.model_spec.signature_name
        if sig == "serving_default":
            assert set(req.inputs) == {EXAMPLES_INPUT}
            n = req.inputs[EXAMPLES_INPUT].tensor_shape.dim[0].size
            first = tf.train.Example.FromString(req.inputs[EXAMPLES_INPUT].string_val[0])
            assert set(first.features.feature) == set(spec.serving_features)  # no label / context
        else:
            assert sig == "predict" and set(req.inputs) == set(spec.serving_features)
            n = req.inputs["user_id"].tensor_shape.dim[0].size
        got.append((sig, n))
    n_valid = len(valid_examples)
    sizes = sorted({1, min(16, n_valid), min(128, n_valid)})
    assert sorted(got) == sorted((s, b) for s in ("predict", "serving_default") for b in sizes)
    # the recorded requests are the real validation examples and replay to the model's outputs
    loaded = tf.saved_model.load(path)
    outs = warmup.replay(loaded, logs)
    ex = warmup.to_serving_examples(valid_examples, spec)
    from ctrcore.data import serving_parse_spec

    ref = m(tf.io.parse_example(tf.constant(ex), serving_parse_spec(spec)))["probabilities"].numpy()
    for (sig, n), o in zip(got, outs):
        np.testing.assert_allclose(o["probabilities"], ref[:n], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# CLI: rebuild from MODEL_DIR (train_config.json + best weights)
# ---------------------------------------------------------------------------------------------
def test_cli_rebuilds_from_model_dir(trained, data, tmp_path):
    key = "ccn" if not isinstance(trained["ccn"], str) else "tan"
    m, _, cfg, lp = _get(trained, key)
    d, spec = data
    backbone = {"ccn": "tan", "tan": "tan"}[key]
    md = tmp_path / "run"
    (md / "best").mkdir(parents=True)
    # the trainer's layout: train_config.json {"config": TrainConfig, "run_info": {..."backbone"}}
    # and CTRModel.save_weights(MODEL_DIR/best/weights)
    rec = {"config": dict(cfg.to_dict(), model_dir=str(md)),
           "run_info": {"run_key": key, "backbone": backbone, "loss_params": lp}}
    (md / "train_config.json").write_text(json.dumps(rec))
    m.save_weights(str(md / "best" / "weights"))
    base = tmp_path / "exp"
    r = subprocess.run([PY, "-m", "serving.export", f"--model_dir={md}", f"--export_base={base}",
                        "--model_name=ctr", "--version=5", "--keep_versions=3", "--warmup_examples=8"],
                       capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                       timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-3000:]
    path = r.stdout.strip().splitlines()[-1]
    assert path == str(base / "ctr" / "5")
    info = json.load(open(os.path.join(path, "assets.extra", "export_info.json")))
    assert info["backbone"] == "tan" and info["verification"]["max_abs_diff"]["predict"] <= 1e-5
    assert info["warmup_requests"] == 4  # batch 1 and 8, two signatures
    loaded = tf.saved_model.load(path)
    ex = warmup.to_serving_examples(warmup.read_examples(d, "valid", 32), spec)
    from ctrcore.data import serving_parse_spec

    ref = m(tf.io.parse_example(tf.constant(ex), serving_parse_spec(spec)))["probabilities"].numpy()
    got = loaded.signatures["serving_default"](examples=tf.constant(ex))["probabilities"].numpy()
    assert np.max(np.abs(got - ref)) <= 1e-5  # the trained weights, not a fresh init
