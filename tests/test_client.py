"""serving.client: request builders (REST JSON, gRPC PredictRequest) checked end to end against a
loaded export (no server can run here): the payloads are decoded back to tensors the way TF
Serving does and fed to the SavedModel's signatures; outputs must equal direct calls."""
import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from ctrcore.testing import write_fake_dataset
from serving import client, warmup


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Fake data + an (untrained) TAN backbone exported once; instances from the valid split."""
    from ctrcore.backbones import build_backbone
    from serving import export

    d = str(tmp_path_factory.mktemp("data"))
    spec = write_fake_dataset(d, n_examples=800, seed=1)
    tf.random.set_seed(1)
    bb = build_backbone("tan", spec, emb_dim=4, mlp_units=[8], heads=2, cm_dim=2)
    path = export.export_model(bb, spec, str(tmp_path_factory.mktemp("exp")), "ctr", warmup_examples=None,
                               verify=False)
    ex = warmup.to_serving_examples(warmup.read_examples(d, "valid", 5), spec)
    instances = client.arrays_to_instances(warmup.parse_serving_arrays(ex, spec))
    return spec, path, tf.saved_model.load(path), instances, d


def _direct(loaded, instances, spec):
    arrays = client.instances_to_arrays(instances, spec)
    out = loaded.signatures["predict"](**{k: tf.constant(v) for k, v in arrays.items()})
    return {k: v.numpy() for k, v in out.items()}


def test_normalize_pads_truncates_and_names_bad_features(env):
    spec, *_ = env
    L = spec.features["short_item_ids"].shape[0]
    inst = {n: ([] if fd.shape else "") for n, fd in spec.serving_features.items()}
    inst.update(user_id=17, short_item_ids=["i1", b"i2"], long_item_ids=[f"i{k}" for k in range(100)])
    norm = client.normalize_instance(inst, spec)
    assert norm["user_id"] == "17"  # int ids become their decimal string (schema contract)
    assert norm["short_item_ids"] == ["i1", "i2"] + [""] * (L - 2)
    assert len(norm["long_item_ids"]) == spec.features["long_item_ids"].shape[0]
    assert norm["long_item_ids"][0] == "i0"  # most recent first: truncation keeps the head
    with pytest.raises(client.RequestError, match=r"missing features \['trigger_item_id'\]"):
        client.normalize_instance({k: v for k, v in inst.items() if k != "trigger_item_id"}, spec)
    with pytest.raises(client.RequestError, match="unexpected features.*label"):
        client.normalize_instance(dict(inst, label=1), spec)
    with pytest.raises(client.RequestError, match="'item_id' is a scalar id, got a list"):
        client.normalize_instance(dict(inst, item_id=["i1"]), spec)
    with pytest.raises(client.RequestError, match="'short_item_ids' is a sequence"):
        client.normalize_instance(dict(inst, short_item_ids="i1"), spec)
    with pytest.raises(client.RequestError, match="'seller_id': expected a string id"):
        client.normalize_instance(dict(inst, seller_id=1.5), spec)
    with pytest.raises(client.RequestError, match="empty batch"):
        client.rest_predict_body([], spec)
    assert client.rest_url("ctr", "h", 8501) == "http://h:8501/v1/models/ctr:predict"
    assert client.rest_url("ctr", version=3) == "http://localhost:8501/v1/models/ctr/versions/3:predict"


@pytest.mark.parametrize("signature", ["predict", "serving_default"])
@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_body_runs_through_the_signature(env, signature, fmt):
    spec, _, loaded, instances, _ = env
    body = json.loads(json.dumps(client.rest_predict_body(instances, spec, signature, fmt)))  # wire
    assert body["signature_name"] == signature
    if signature == "serving_default":
        first = body[fmt][0] if fmt == "instances" else body[fmt]["examples"][0]
        assert set(first) == {"b64"}
        ex = tf.train.Example.FromString(base64.b64decode(first["b64"]))
        assert set(ex.features.feature) == set(spec.serving_features)
        names = ["examples"]
    else:
        names = list(spec.serving_features)
    arrays = client.decode_rest_body(json.dumps(body), names)
    assert set(arrays) == set(names)
    got = client.run_arrays_locally(loaded, arrays, signature)
    ref = _direct(loaded, instances, spec)
    for k in ("probabilities", "logits"):
        np.testing.assert_array_equal(got[k], ref[k])
    # the response parsers accept both REST response formats
    row = {"predictions": [{"probabilities": float(p), "logits": float(l)}
                           for p, l in zip(got["probabilities"], got["logits"])]}
    col = {"outputs": {k: v.tolist() for k, v in got.items()}}
    for resp in (row, col):
        np.testing.assert_allclose(client.parse_rest_response(resp)["probabilities"], got["probabilities"])


@pytest.mark.parametrize("signature", ["predict", "serving_default"])
def test_grpc_request_runs_through_the_signature(env, signature):
    spec, _, loaded, instances, _ = env
    req = client.grpc_predict_request(instances, spec, "ctr", signature, version=2)
    req = type(req).FromString(req.SerializeToString())  # wire
    assert req.model_spec.name == "ctr" and req.model_spec.signature_name == signature
    assert req.model_spec.version.value == 2
    arrays = client.request_to_arrays(req)  # tf.make_ndarray of every input TensorProto
    if signature == "predict":
        L = spec.features["long_item_ids"].shape[0]
        assert arrays["long_item_ids"].shape == (len(instances), L)
        assert req.inputs["user_id"].dtype == tf.string.as_datatype_enum
    got = client.run_arrays_locally(loaded, arrays, signature)
    ref = _direct(loaded, instances, spec)
    for k in ("probabilities", "logits"):
        np.testing.assert_array_equal(got[k], ref[k])
    # a PredictResponse built from the outputs parses back
    from tensorflow_serving.apis import predict_pb2

    resp = predict_pb2.PredictResponse()
    for k, v in got.items():
        resp.outputs[k].CopyFrom(tf.make_tensor_proto(v))
    np.testing.assert_array_equal(client.parse_grpc_response(resp)["probabilities"], got["probabilities"])


def test_short_history_is_padded_and_scored_like_an_explicitly_padded_one(env):
    spec, _, loaded, instances, _ = env
    inst = dict(instances[0])
    trimmed = dict(inst, short_item_ids=[x for x in inst["short_item_ids"] if x])
    a = _direct(loaded, [inst], spec)["probabilities"]
    b = client.run_arrays_locally(loaded, client.request_to_arrays(
        client.grpc_predict_request([trimmed], spec, "ctr")))["probabilities"]
    np.testing.assert_array_equal(a, b)


def test_cli_dry_run_and_local_export(env, tmp_path):
    spec, path, loaded, instances, d = env
    req = tmp_path / "req.json"
    req.write_text(json.dumps(instances[:2]))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = lambda *a: subprocess.run([sys.executable, "-m", "serving.client", f"--features_json={req}",
                                     "--model_name=ctr", *a], capture_output=True, text=True, cwd=root,
                                    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=240)
    r = run(f"--local_export={path}", "--protocol=rest", "--signature=serving_default", "--format=inputs")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ref = _direct(loaded, instances[:2], spec)
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-7)
    r = run(f"--spec={path}", "--dry_run", "--version=4")  # spec read from the export's assets.extra
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "http://localhost:8501/v1/models/ctr/versions/4:predict"
    body = json.loads("\n".join(lines[1:]))
    assert body["signature_name"] == "predict" and len(body["instances"]) == 2
