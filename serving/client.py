"""Request builders and clients for a TF Serving deployment of the exported CTR model.

REST  (port 8501): ``POST /v1/models/NAME[/versions/V]:predict`` with a JSON body in the row
      (``"instances"``) or columnar (``"inputs"``) format; serialized ``tf.Example``s travel as
      ``{"b64": "..."}``.
gRPC  (port 8500): ``tensorflow.serving.PredictionService/Predict`` with a ``PredictRequest``
      whose inputs are ``tf.make_tensor_proto`` tensors.

Signatures (docs/serving.md): ``predict`` takes one named tensor per serving feature (raw string
ids; sequences ``[None, L]``), ``serving_default`` takes ``examples`` (serialized tf.Example).
Both return ``probabilities`` and ``logits``.

Instances are dicts ``{feature: value}`` of raw ids. ``normalize_instance`` (used by every
builder) checks them against the feature spec and names the offending feature: missing or
unexpected features, scalar vs. list, wrong value types. Sequences are truncated/padded with
``""`` to the spec length (most recent first), so callers may send the history they have.
The server itself is strict (every serving feature required, exact lengths).

CLI::

    python -m serving.client --features_json=req.json --model_name=ctr --spec=EXPORT/VERSION \
        [--protocol=rest|grpc] [--host=localhost] [--rest_port=8501] [--grpc_port=8500] \
        [--signature=predict|serving_default] [--format=instances|inputs] [--version=N]
        [--dry_run]                     # print the request instead of sending it
        [--local_export=EXPORT/VERSION] # run the request against a SavedModel in-process

``--features_json`` is a JSON file (or an inline JSON string) holding one instance or a list.
TensorFlow is imported lazily: the REST path needs only the standard library.
"""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ctrcore import schema
from ctrcore.schema import PAD, FeatureSpec

SIGNATURE_DEFAULT = "serving_default"
SIGNATURE_PREDICT = "predict"
EXAMPLES_INPUT = "examples"
OUTPUTS = ("probabilities", "logits")
SPEC_ASSET = os.path.join("assets.extra", schema.SPEC_FILENAME)

Instance = Mapping[str, Any]


class RequestError(ValueError):
    """A request does not match the serving signature (raised before anything is sent)."""


# ---------------------------------------------------------------------------------------------
# Feature spec
# ---------------------------------------------------------------------------------------------
def load_client_spec(path: str) -> FeatureSpec:
    """Feature spec from a ``feature_spec.json`` file, a data dir, or an export version dir
    (``assets.extra/feature_spec.json``, written by ``serving.export``)."""
    candidates = [path, os.path.join(path, schema.SPEC_FILENAME), os.path.join(path, SPEC_ASSET)]
    for c in candidates:
        if os.path.isfile(c):
            with open(c) as fh:
                return FeatureSpec.from_json(json.load(fh), root=os.path.dirname(c))
    raise FileNotFoundError(f"no feature spec at {path} (tried {candidates})")


def _python_type(dtype: str):
    return {"string": str, "int64": int, "float32": float}[dtype]


def _coerce(name: str, value, dtype: str):
    if dtype == "string":
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, (bool, float)) or value is None or isinstance(value, (list, dict)):
            raise RequestError(f"feature '{name}': expected a string id, got {type(value).__name__} "
                               f"{value!r}")
        return str(value)  # ints are ids written as their decimal string (schema contract)
    if dtype == "int64":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise RequestError(f"feature '{name}': expected an int, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise RequestError(f"feature '{name}': expected a float, got {value!r}")
    return float(value)


def normalize_instance(instance: Instance, spec: FeatureSpec, pad_sequences: bool = True) -> Dict[str, Any]:
    """Check one instance against the serving features and return it in canonical form
    (python str/int/float scalars, sequences as lists of exactly the spec length)."""
    feats = spec.serving_features
    if not isinstance(instance, Mapping):
        raise RequestError(f"an instance must be a dict of features, got {type(instance).__name__}")
    unexpected = sorted(set(instance) - set(feats))
    if unexpected:
        raise RequestError(f"unexpected features {unexpected} (serving inputs: {sorted(feats)})")
    missing = [n for n in feats if n not in instance]
    if missing:
        raise RequestError(f"missing features {missing}: every serving feature is required "
                           f"(send \"\" for an absent id, [] for an empty history)")
    out = {}
    for name, fd in feats.items():
        v = instance[name]
        if not fd.shape:
            if isinstance(v, (list, tuple, np.ndarray)):
                raise RequestError(f"feature '{name}' is a scalar id, got a list")
            out[name] = _coerce(name, v, fd.dtype)
            continue
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, np.ndarray)):
            raise RequestError(f"feature '{name}' is a sequence of {fd.shape[0]} ids, got {v!r}")
        vals = [_coerce(name, x, fd.dtype) for x in list(v)]
        n = fd.shape[0]
        if pad_sequences:
            pad = PAD if fd.dtype == "string" else (fd.default if fd.default is not None else 0)
            vals = vals[:n] + [pad] * max(0, n - len(vals))
        elif len(vals) != n:
            raise RequestError(f"feature '{name}' must have {n} values, got {len(vals)}")
        out[name] = vals
    return out


def normalize_instances(instances: Union[Instance, Sequence[Instance]], spec: FeatureSpec,
                        pad_sequences: bool = True) -> List[Dict[str, Any]]:
    if isinstance(instances, Mapping):
        instances = [instances]
    instances = list(instances)
    if not instances:
        raise RequestError("empty batch: send at least one instance")
    return [normalize_instance(i, spec, pad_sequences) for i in instances]


def instances_to_arrays(instances, spec: FeatureSpec) -> Dict[str, np.ndarray]:
    """Columnar numpy arrays ``{name: [B] or [B, L]}`` (strings as ``bytes`` objects)."""
    rows = normalize_instances(instances, spec)
    out = {}
    for name, fd in spec.serving_features.items():
        col = [r[name] for r in rows]
        if fd.dtype == "string":
            enc = (lambda x: x.encode("utf-8"))
            col = [[enc(x) for x in c] for c in col] if fd.shape else [enc(x) for x in col]
            out[name] = np.array(col, dtype=object)
        else:
            out[name] = np.array(col, dtype=np.int64 if fd.dtype == "int64" else np.float32)
    return out


def arrays_to_instances(arrays: Mapping[str, np.ndarray]) -> List[Dict[str, Any]]:
    """Inverse of :func:`instances_to_arrays` (bytes decoded to str)."""
    def py(v):
        if isinstance(v, np.ndarray):
            return [py(x) for x in v]
        if isinstance(v, bytes):
            return v.decode("utf-8")
        return v.item() if isinstance(v, np.generic) else v
    n = len(next(iter(arrays.values())))
    return [{k: py(np.asarray(v)[i]) for k, v in arrays.items()} for i in range(n)]


def make_example(instance: Instance, spec: FeatureSpec):
    """A ``tf.train.Example`` with exactly the serving features of one instance."""
    import tensorflow as tf

    inst = normalize_instance(instance, spec)
    feature = {}
    for name, fd in spec.serving_features.items():
        vals = inst[name] if fd.shape else [inst[name]]
        if fd.dtype == "string":
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in vals]))
        elif fd.dtype == "int64":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=vals))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=vals))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def serialize_examples(instances, spec: FeatureSpec) -> List[bytes]:
    return [make_example(i, spec).SerializeToString() for i in normalize_instances(instances, spec)]


# ---------------------------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------------------------
def rest_url(model_name: str, host: str = "localhost", port: int = 8501,
             version: Optional[int] = None, verb: str = "predict") -> str:
    v = f"/versions/{int(version)}" if version is not None else ""
    return f"http://{host}:{port}/v1/models/{model_name}{v}:{verb}"


def rest_predict_body(instances, spec: FeatureSpec, signature: str = SIGNATURE_PREDICT,
                      fmt: str = "instances") -> Dict[str, Any]:
    """JSON body of a REST predict call.

    * ``predict`` + ``instances``: ``{"signature_name": "predict", "instances": [{feature: value}]}``
    * ``predict`` + ``inputs``:    ``{"signature_name": "predict", "inputs": {feature: [values]}}``
    * ``serving_default``: serialized Examples as ``{"b64": ...}``, in ``"instances"`` (a list)
      or ``"inputs"`` (``{"examples": [...]}``) form.
    """
    if fmt not in ("instances", "inputs"):
        raise ValueError(f"fmt must be 'instances' or 'inputs', got {fmt!r}")
    if signature == SIGNATURE_DEFAULT:
        b64 = [{"b64": base64.b64encode(s).decode("ascii")} for s in serialize_examples(instances, spec)]
        payload = b64 if fmt == "instances" else {EXAMPLES_INPUT: b64}
    elif signature == SIGNATURE_PREDICT:
        rows = normalize_instances(instances, spec)
        if fmt == "instances":
            payload = rows
        else:
            payload = {n: [r[n] for r in rows] for n in spec.serving_features}
    else:
        raise ValueError(f"unknown signature {signature!r}")
    return {"signature_name": signature, fmt: payload}


def _b64_decode(v):
    if isinstance(v, dict) and set(v) == {"b64"}:
        return base64.b64decode(v["b64"])
    if isinstance(v, list):
        return [_b64_decode(x) for x in v]
    if isinstance(v, str):
        return v.encode("utf-8")
    return v


def decode_rest_body(body: Union[str, bytes, Mapping], input_names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Decode a REST predict body into named numpy arrays the way TF Serving does (for offline
    checks of a request against a SavedModel: ``--local_export`` and the tests).

    Row format: a list of ``{input: value}`` objects, or of bare values when the signature has a
    single input; columnar format: ``{input: values}`` or bare values for a single input.
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    input_names = list(input_names)
    if "instances" in body:
        rows = body["instances"]
        if not rows:
            raise RequestError("empty batch: 'instances' is empty")
        if len(input_names) == 1 and not (isinstance(rows[0], dict) and set(rows[0]) == set(input_names)):
            cols = {input_names[0]: rows}
        else:
            cols = {n: [r[n] for r in rows] for n in input_names if all(n in r for r in rows)}
            extra = set().union(*[set(r) for r in rows]) - set(input_names)
            if extra:
                raise RequestError(f"unexpected inputs {sorted(extra)}")
    elif "inputs" in body:
        inputs = body["inputs"]
        cols = dict(inputs) if isinstance(inputs, dict) and not set(inputs) == {"b64"} else {input_names[0]: inputs}
    else:
        raise RequestError("body must have 'instances' or 'inputs'")
    out = {}
    for n, v in cols.items():
        v = _b64_decode(v)
        out[n] = np.array(v, dtype=object) if _is_bytes_nested(v) else np.array(v)
    return out


def _is_bytes_nested(v) -> bool:
    while isinstance(v, list) and v:
        v = v[0]
    return isinstance(v, bytes)


def parse_rest_response(resp: Mapping) -> Dict[str, np.ndarray]:
    """``{"predictions": [...]}`` (row) or ``{"outputs": {...}}`` (columnar) -> arrays."""
    if "error" in resp:
        raise RuntimeError(f"TF Serving error: {resp['error']}")
    if "outputs" in resp:
        outs = resp["outputs"]
        if not isinstance(outs, dict):
            outs = {OUTPUTS[0]: outs}
        return {k: np.asarray(v, dtype=np.float32) for k, v in outs.items()}
    preds = resp["predictions"]
    if preds and isinstance(preds[0], dict):
        return {k: np.asarray([p[k] for p in preds], dtype=np.float32) for k in preds[0]}
    return {OUTPUTS[0]: np.asarray(preds, dtype=np.float32)}


class RestClient:
    """Minimal REST client (standard library only)."""

    def __init__(self, model_name: str, spec: FeatureSpec, host: str = "localhost", port: int = 8501,
                 version: Optional[int] = None, timeout: float = 10.0):
        self.model_name, self.spec, self.host, self.port = model_name, spec, host, port
        self.version, self.timeout = version, timeout

    def predict(self, instances, signature: str = SIGNATURE_PREDICT, fmt: str = "instances") -> Dict[str, np.ndarray]:
        body = json.dumps(rest_predict_body(instances, self.spec, signature, fmt)).encode()
        req = urllib.request.Request(rest_url(self.model_name, self.host, self.port, self.version),
                                     data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return parse_rest_response(json.loads(r.read()))
        except urllib.error.HTTPError as e:  # TF Serving answers 400 with {"error": "..."}
            detail = e.read().decode("utf-8", "replace")
            raise RuntimeError(f"HTTP {e.code} from {req.full_url}: {detail}") from None

    def status(self) -> Dict[str, Any]:
        url = rest_url(self.model_name, self.host, self.port, self.version, verb="").rstrip(":")
        with urllib.request.urlopen(url, timeout=self.timeout) as r:
            return json.loads(r.read())


# ---------------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------------
def predict_request_from_arrays(arrays: Mapping[str, Any], model_name: str,
                                signature: str = SIGNATURE_PREDICT, version: Optional[int] = None):
    """``PredictRequest`` with one ``tf.make_tensor_proto`` per named input array."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = int(version)
    for name, arr in arrays.items():
        req.inputs[name].CopyFrom(tf.make_tensor_proto(arr))
    return req


def grpc_predict_request(instances, spec: FeatureSpec, model_name: str,
                         signature: str = SIGNATURE_PREDICT, version: Optional[int] = None):
    """``PredictRequest`` for ``predict`` (named tensors) or ``serving_default`` (examples)."""
    if signature == SIGNATURE_DEFAULT:
        arrays = {EXAMPLES_INPUT: np.array(serialize_examples(instances, spec), dtype=object)}
    elif signature == SIGNATURE_PREDICT:
        arrays = instances_to_arrays(instances, spec)
    else:
        raise ValueError(f"unknown signature {signature!r}")
    return predict_request_from_arrays(arrays, model_name, signature, version)


def request_to_arrays(request) -> Dict[str, np.ndarray]:
    """The input tensors of a ``PredictRequest`` as numpy arrays (``tf.make_ndarray``)."""
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in request.inputs.items()}


def parse_grpc_response(response) -> Dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


class GrpcClient:
    """``PredictionService.Predict`` over an insecure channel (add TLS credentials as needed)."""

    def __init__(self, model_name: str, spec: FeatureSpec, target: str = "localhost:8500",
                 version: Optional[int] = None, timeout: float = 10.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model_name, self.spec, self.version, self.timeout = model_name, spec, version, timeout
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(self, instances, signature: str = SIGNATURE_PREDICT) -> Dict[str, np.ndarray]:
        req = grpc_predict_request(instances, self.spec, self.model_name, signature, self.version)
        return parse_grpc_response(self.stub.Predict(req, timeout=self.timeout))

    def close(self):
        self.channel.close()


# ---------------------------------------------------------------------------------------------
# Local execution of a request (no server): same tensors a server would feed
# ---------------------------------------------------------------------------------------------
def run_arrays_locally(export_dir_or_loaded, arrays: Mapping[str, np.ndarray],
                       signature: str = SIGNATURE_PREDICT) -> Dict[str, np.ndarray]:
    import tensorflow as tf

    loaded = export_dir_or_loaded
    if isinstance(loaded, str):
        loaded = tf.saved_model.load(loaded)
    fn = loaded.signatures[signature]
    out = fn(**{k: tf.constant(v) for k, v in arrays.items()})
    return {k: v.numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _read_features_json(value: str):
    if os.path.isfile(value):
        with open(value) as fh:
            return json.load(fh)
    return json.loads(value)


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments {argv[1:]}")
    instances = _read_features_json(F.features_json)
    spec_path = F.spec or F.local_export
    if not spec_path:
        raise SystemExit("--spec (feature_spec.json, data dir or export version dir) is required")
    spec = load_client_spec(spec_path)
    if F.protocol == "rest":
        body = rest_predict_body(instances, spec, F.signature, F.format)
        if F.dry_run:
            print(rest_url(F.model_name, F.host, F.rest_port, F.version))
            print(json.dumps(body, indent=1))
            return
        if F.local_export:
            names = [EXAMPLES_INPUT] if F.signature == SIGNATURE_DEFAULT else list(spec.serving_features)
            out = run_arrays_locally(F.local_export, decode_rest_body(body, names), F.signature)
        else:
            out = RestClient(F.model_name, spec, F.host, F.rest_port, F.version, F.timeout).predict(
                instances, F.signature, F.format)
    else:
        req = grpc_predict_request(instances, spec, F.model_name, F.signature, F.version)
        if F.dry_run:
            print(req)
            return
        if F.local_export:
            out = run_arrays_locally(F.local_export, request_to_arrays(req), F.signature)
        else:
            client = GrpcClient(F.model_name, spec, f"{F.host}:{F.grpc_port}", F.version, F.timeout)
            out = client.predict(instances, F.signature)
            client.close()
    print(json.dumps({k: np.asarray(v).tolist() for k, v in out.items()}))


def _define_flags():
    from absl import flags

    flags.DEFINE_string("features_json", None, "JSON file or inline JSON: one instance or a list")
    flags.DEFINE_string("model_name", "ctr", "TF Serving model name")
    flags.DEFINE_string("spec", None, "feature_spec.json, data dir, or export version dir")
    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "transport")
    flags.DEFINE_string("host", "localhost", "server host")
    flags.DEFINE_integer("rest_port", 8501, "REST port")
    flags.DEFINE_integer("grpc_port", 8500, "gRPC port")
    flags.DEFINE_integer("version", None, "pin a model version (default: the server's latest)")
    flags.DEFINE_enum("signature", SIGNATURE_PREDICT, [SIGNATURE_PREDICT, SIGNATURE_DEFAULT], "signature")
    flags.DEFINE_enum("format", "instances", ["instances", "inputs"], "REST body format")
    flags.DEFINE_float("timeout", 10.0, "request timeout (s)")
    flags.DEFINE_bool("dry_run", False, "print the request instead of sending it")
    flags.DEFINE_string("local_export", None, "run the request in-process against this SavedModel dir")
    flags.mark_flag_as_required("features_json")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
