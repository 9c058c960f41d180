"""The serving graph: a ``tf.Module`` around the backbone alone, with two signatures.

* ``serving_default``: ``examples`` = a batch of serialized ``tf.train.Example`` (DT_STRING
  ``[None]``), parsed in-graph with the trainer's own parse spec
  (``ctrcore.data.serving_parse_spec``) but *without default values*: every serving feature is
  required, a missing one fails with ``Feature: <name> ... is required but could not be found``.
* ``predict``: one named tensor per serving feature (raw string ids; scalars ``[None]``,
  sequences ``[None, L]``).

Both return ``probabilities`` (CTR, float32 ``[None]``) and ``logits`` (float32 ``[None]``).

Request validation (all errors are ``InvalidArgument`` naming the feature):

* wrong rank / wrong sequence length -> ``tf.ensure_shape`` (``Shape of tensor <feature> [..] is
  not compatible with expected shape [?,L]``). The declared signature shapes are *not* enforced
  by the runtime when a signature is called (TF Serving and ``loaded.signatures[...]`` feed the
  tensor as is), hence the explicit in-graph checks;
* features of different batch sizes -> ``feature '<name>' has batch size ... (batch of '<first>')``;
* empty batch -> ``empty batch: send at least one example`` (decided: an error, not empty
  outputs: an empty request is a client bug and some backbones reshape with -1);
* missing / unexpected input of ``predict`` -> rejected by the signature binding (TF Serving:
  ``Missing but required: {<name>}``; Python: ``missing a required argument: '<name>'``);
* wrong dtype of ``predict`` inputs -> rejected by the runtime before the graph runs
  (``input #k ... was expected to be a string tensor``); ``serving.client`` checks dtypes by
  feature name before sending. In ``serving_default`` a wrong-typed feature inside an Example
  fails in the parser with ``Key: <name>. Data types don't match``.

Only serving-role features are inputs; the backbone is called with ``training=False`` and no
augmentation. Training-only objects (aux losses, projector, codebook, optimizer) are never
reachable from the module, so they are not in the SavedModel.
"""
from __future__ import annotations

from typing import Dict, List

import tensorflow as tf

from ctrcore import schema
from ctrcore.schema import FeatureSpec

EXAMPLES_INPUT = "examples"
OUTPUTS = ("probabilities", "logits")
SIGNATURE_DEFAULT = "serving_default"
SIGNATURE_PREDICT = "predict"

_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


def serving_features(spec: FeatureSpec) -> Dict[str, schema.FeatureDef]:
    """The model inputs (role ``serving``), in spec order."""
    return spec.serving_features


def strict_parse_spec(spec: FeatureSpec) -> Dict[str, tf.io.FixedLenFeature]:
    """The trainer's serving parse spec with the default values removed (every feature required).

    Keys, dtypes and shapes come from ``ctrcore.data.serving_parse_spec`` (the same function the
    trainer's input pipeline uses); only the defaults are dropped.
    """
    try:
        from ctrcore.data import serving_parse_spec
        base = serving_parse_spec(spec)
    except ImportError:  # pragma: no cover - ctrcore.data always present in this repo
        base = {n: tf.io.FixedLenFeature(list(fd.shape), _DTYPES[fd.dtype])
                for n, fd in serving_features(spec).items()}
    out = {}
    for name, f in base.items():
        if isinstance(f, tf.io.FixedLenFeature):
            out[name] = tf.io.FixedLenFeature(f.shape, f.dtype)
        else:  # VarLen / Ragged features have no default to drop
            out[name] = f
    return out


def input_specs(spec: FeatureSpec) -> Dict[str, tf.TensorSpec]:
    """``{name: TensorSpec([None] + shape, dtype, name=name)}`` of the ``predict`` signature."""
    return {n: tf.TensorSpec([None] + list(fd.shape), _DTYPES[fd.dtype], name=n)
            for n, fd in serving_features(spec).items()}


def validate_features(features: Dict[str, tf.Tensor], spec: FeatureSpec) -> Dict[str, tf.Tensor]:
    """In-graph checks of a feature batch; returns the features gated on the checks."""
    specs = input_specs(spec)
    missing = sorted(set(specs) - set(features))
    if missing:  # trace-time: a programming error, not a request error
        raise ValueError(f"missing serving features {missing}")
    names = list(specs)
    checked = {}
    for n in names:
        # runtime shape check (rank and sequence length); names the tensor in the error
        checked[n] = tf.ensure_shape(features[n], specs[n].shape, name=f"check_shape_{n}")
    first = names[0]
    batch = tf.shape(checked[first], name="batch_size")[0]
    asserts = [tf.debugging.assert_positive(
        batch, message=f"empty batch: send at least one example (batch size of '{first}' is 0)")]
    for n in names[1:]:
        asserts.append(tf.debugging.assert_equal(
            tf.shape(checked[n])[0], batch,
            message=f"feature '{n}' has a different batch size than '{first}'"))
    with tf.control_dependencies(asserts):
        return {n: tf.identity(checked[n], name=f"checked_{n}") for n in names}


def _collect_resources(layer) -> List[tf.saved_model.experimental.TrackableResource]:
    """Lookup tables (and any other resources) held by the layer or its sublayers."""
    found, seen = [], set()

    def visit(v, depth=0):
        if depth > 4 or id(v) in seen:
            return
        seen.add(id(v))
        if isinstance(v, tf.saved_model.experimental.TrackableResource):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x, depth + 1)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x, depth + 1)

    layers = layer._flatten_layers(include_self=True, recursive=True)  # noqa: SLF001
    for sub in layers:
        for v in vars(sub).values():
            visit(v)
    return found


class ServingModule(tf.Module):
    """The exported object: the backbone's variables and lookup tables plus two signatures.

    The backbone layer itself is not tracked (only reached through a closure), so Keras does not
    serialize its Python-level call functions and no training object can leak in. Its variables
    are tracked under the name ``variables`` (``loaded.variables`` after ``tf.saved_model.load``)
    and its resources (``StringLookup`` tables, vocabulary files as assets) under ``resources``.
    ``track_backbone=True`` tracks the layer as well (fallback for backbones holding resources
    the scan does not find).
    """

    def __init__(self, backbone, spec: FeatureSpec, track_backbone: bool = False):
        super().__init__(name="ctr_serving")
        from tensorflow.python.trackable import data_structures

        self._spec = spec
        self._parse = strict_parse_spec(spec)
        self._call_backbone = lambda f: backbone(f, training=False)
        self._num_backbone_variables = len(backbone.variables)
        # tf.Module.variables is a read-only property: register the list under that name so the
        # loaded object exposes it as `loaded.variables`.
        self._track_trackable(data_structures.wrap_or_unwrap(list(backbone.variables)),
                              name="variables", overwrite=True)
        self.resources = list(_collect_resources(backbone))
        if track_backbone:
            self.backbone = backbone
        self.serve_features = tf.function(self._serve_features)
        self.serve_examples = tf.function(self._serve_examples)

    def _run(self, features):
        features = validate_features(features, self._spec)
        out = self._call_backbone(features)
        batch = tf.shape(features[next(iter(features))])[0]
        logits = tf.reshape(tf.cast(out["logits"], tf.float32), [batch], name="logits")
        return {"probabilities": tf.math.sigmoid(logits, name="probabilities"), "logits": logits}

    def _serve_features(self, **features):
        return self._run(features)

    def _serve_examples(self, examples):
        examples = tf.ensure_shape(examples, [None], name=f"check_shape_{EXAMPLES_INPUT}")
        features = tf.io.parse_example(examples, self._parse)
        return self._run(features)

    def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
        return {
            SIGNATURE_DEFAULT: self.serve_examples.get_concrete_function(
                tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)),
            SIGNATURE_PREDICT: self.serve_features.get_concrete_function(**input_specs(self._spec)),
        }
