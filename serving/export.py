"""Export the serving graph (backbone only) as a SavedModel for TF Serving.

Layout: ``EXPORT_BASE/MODEL_NAME/VERSION/`` (``saved_model.pb``, ``variables/``, ``assets/``
(vocabularies), ``assets.extra/tf_serving_warmup_requests``, ``assets.extra/feature_spec.json``,
``assets.extra/export_info.json``).

* The version is written to a hidden temporary sibling (``MODEL_NAME/.tmp-VERSION-<random>``,
  which TF Serving ignores: not an integer) and renamed into place once complete and verified,
  so a server watching ``MODEL_NAME/`` never sees a half-written version. (On object stores such
  as GCS a rename is a copy: export to local disk and upload, or accept the window.)
* ``version=None``: max existing integer version + 1 (1 for the first); if another exporter
  takes that number meanwhile, the next free one is used. An explicit version that already
  exists is an error (versions are immutable).
* After the rename, integer versions beyond ``keep_versions`` are deleted, oldest first
  (``keep_versions <= 0`` keeps all); the new version is never deleted.
* Before the rename the SavedModel is loaded back and checked: the warmup requests (or a batch
  of padding) go through both signatures and must match the in-memory backbone (max abs diff
  of the probabilities <= 1e-5).

What is exported: :class:`serving.signatures.ServingModule` wraps the *backbone* alone (its
variables and lookup tables), never the Keras training model: no optimizer slots, no aux-loss
layers (CCN / AQCL projector, codebook), no context / label inputs.

CLI::

    python -m serving.export --model_dir=MODEL_DIR --export_base=EXPORT_BASE --model_name=ctr \
        [--version=N] [--keep_versions=5] [--data_dir=DATA_DIR (warmup; default: the run's)]

The backbone is rebuilt from the run record of ``MODEL_DIR`` (``train_config.json``, read through
:class:`ctrcore.rundir.RunDir`; :func:`load_trained_backbone`) and its best weights
(``MODEL_DIR/best/weights``).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from typing import List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from ctrcore import schema
from ctrcore.rundir import RunDir
from ctrcore.schema import FeatureSpec
from serving import warmup as warmup_lib
from serving.signatures import (EXAMPLES_INPUT, SIGNATURE_DEFAULT, SIGNATURE_PREDICT, ServingModule,
                                strict_parse_spec)

log = logging.getLogger("serving.export")

_VERSION_RE = re.compile(r"^\d+$")
TMP_PREFIX = ".tmp-"
INFO_FILE = "export_info.json"
PARITY_TOL = 1e-5


class ExportError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# version directories
# ---------------------------------------------------------------------------------------------
def list_versions(model_base: str) -> List[int]:
    """Integer version directories under ``EXPORT_BASE/MODEL_NAME`` (sorted ascending)."""
    if not tf.io.gfile.isdir(model_base):
        return []
    out = []
    for name in tf.io.gfile.listdir(model_base):
        name = name.rstrip("/")
        if _VERSION_RE.match(name) and tf.io.gfile.isdir(os.path.join(model_base, name)):
            out.append(int(name))
    return sorted(out)


def next_version(model_base: str) -> int:
    vs = list_versions(model_base)
    return (vs[-1] + 1) if vs else 1


def prune_versions(model_base: str, keep: int, protect: Sequence[int] = ()) -> List[int]:
    """Delete integer versions beyond the newest ``keep`` (oldest first); returns the deleted."""
    if keep is None or keep <= 0:
        return []
    vs = list_versions(model_base)
    doomed = [v for v in vs[: max(0, len(vs) - keep)] if v not in set(protect)]
    for v in doomed:
        log.info("deleting old version %s/%d (keep_versions=%d)", model_base, v, keep)
        tf.io.gfile.rmtree(os.path.join(model_base, str(v)))
    return doomed


def _is_local(path: str) -> bool:
    return "://" not in path


def _rename_dir(src: str, dst: str) -> bool:
    """Rename ``src`` to ``dst``; False if ``dst`` already exists."""
    if tf.io.gfile.exists(dst):
        return False
    if _is_local(src):
        try:
            # os.rename replaces an *empty* dst directory; the exists() check above guards it.
            os.rename(src, dst)
        except OSError:
            if os.path.exists(dst):
                return False
            raise
    else:
        tf.io.gfile.rename(src, dst, overwrite=False)
    return True


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def resolve_backbone(model):
    """The backbone of a ``CTRModel`` (``.backbone``), or the argument if it is a backbone."""
    bb = getattr(model, "backbone", None)
    return bb if bb is not None else model


def dummy_features(spec: FeatureSpec, batch: int = 2):
    feats = {}
    for name, fd in spec.serving_features.items():
        shape = [batch] + list(fd.shape)
        if fd.dtype == "string":
            feats[name] = tf.fill(shape, schema.PAD)
        else:
            feats[name] = tf.zeros(shape, tf.int64 if fd.dtype == "int64" else tf.float32)
    return feats


def _serving_spec_json(spec: FeatureSpec) -> dict:
    d = spec.to_json()
    d["features"] = {k: v for k, v in d["features"].items() if v["role"] == "serving"}
    return d


def _write_json(path: str, obj) -> None:
    with tf.io.gfile.GFile(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, default=str)


def _auto_warmup_examples(spec: FeatureSpec, limit: int = 128):
    if not spec.root:
        return None
    try:
        return warmup_lib.read_examples(spec.root, "valid", limit)
    except (FileNotFoundError, tf.errors.OpError) as e:
        log.warning("no warmup examples from %s (%s): exporting without a warmup file", spec.root, e)
        return None


def _reference_outputs(backbone, spec: FeatureSpec, examples: List[bytes]):
    feats = tf.io.parse_example(tf.constant(examples), strict_parse_spec(spec))
    logits = tf.reshape(tf.cast(backbone(feats, training=False)["logits"], tf.float32), [-1])
    return feats, tf.sigmoid(logits).numpy()


def verify_export(export_dir: str, backbone, spec: FeatureSpec, examples: Optional[List[bytes]],
                  logs=None, tol: float = PARITY_TOL) -> dict:
    """Load ``export_dir`` and check both signatures against the in-memory backbone, and that
    every warmup request runs. Raises :class:`ExportError` on a mismatch."""
    loaded = tf.saved_model.load(export_dir)
    missing = {SIGNATURE_DEFAULT, SIGNATURE_PREDICT} - set(loaded.signatures)
    if missing:
        raise ExportError(f"export lacks signatures {sorted(missing)}")
    if examples:
        examples = warmup_lib.to_serving_examples(examples[:64], spec)
        feats, ref = _reference_outputs(backbone, spec, examples)
    else:  # no data: a padding batch still exercises every lookup and layer
        feats = dummy_features(spec)
        ref = tf.sigmoid(tf.reshape(backbone(feats, training=False)["logits"], [-1])).numpy()
        examples = None
    got_f = loaded.signatures[SIGNATURE_PREDICT](**feats)["probabilities"].numpy()
    diffs = {SIGNATURE_PREDICT: float(np.max(np.abs(got_f - ref)))}
    if examples is not None:
        got_e = loaded.signatures[SIGNATURE_DEFAULT](**{EXAMPLES_INPUT: tf.constant(examples)})
        diffs[SIGNATURE_DEFAULT] = float(np.max(np.abs(got_e["probabilities"].numpy() - ref)))
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise ExportError(f"exported model disagrees with the in-memory backbone: max abs diff {bad} > {tol}")
    if logs:
        warmup_lib.replay(loaded, logs)
    return {"max_abs_diff": diffs, "checked_examples": int(len(ref)), "warmup_requests": len(logs or [])}


def export_model(model, spec: FeatureSpec, export_base: str, model_name: str,
                 version: Optional[int] = None, keep_versions: int = 5,
                 warmup_examples: Union[None, str, Sequence] = "auto", *, verify: bool = True,
                 extra_info: Optional[dict] = None) -> str:
    """Export the serving graph of ``model`` (a ``CTRModel`` or its backbone) to
    ``export_base/model_name/VERSION`` and return that path.

    ``warmup_examples``: serialized ``tf.train.Example``s (bytes or protos; e.g. from the
    validation split) for ``assets.extra/tf_serving_warmup_requests`` and the export check;
    ``"auto"`` (default) reads up to 128 from the ``valid`` split next to the feature spec
    (``spec.root``, the data dir) when there is one; ``None`` writes no warmup file (the check
    then uses a padding batch).
    """
    if model is None or spec is None or not export_base:
        raise TypeError("export_model needs a model (or backbone), spec, export_base and model_name")
    if isinstance(warmup_examples, str):
        if warmup_examples != "auto":
            raise ValueError(f"warmup_examples must be 'auto', None or a list, got {warmup_examples!r}")
        warmup_examples = _auto_warmup_examples(spec)
    if not model_name or "/" in model_name:
        raise ValueError(f"invalid model_name {model_name!r}")
    if version is not None and (int(version) != version or version < 0):
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    backbone = resolve_backbone(model)
    if not backbone.built or not backbone.variables:
        backbone(dummy_features(spec), training=False)  # create the variables eagerly
    examples = None
    if warmup_examples is not None:
        examples = [e if isinstance(e, bytes) else e.SerializeToString() for e in warmup_examples]

    model_base = os.path.join(export_base, model_name)
    tf.io.gfile.makedirs(model_base)
    if version is not None and tf.io.gfile.exists(os.path.join(model_base, str(int(version)))):
        raise FileExistsError(f"{os.path.join(model_base, str(int(version)))} already exists (versions "
                              f"are immutable; omit --version to take the next one)")
    tmp = os.path.join(model_base, f"{TMP_PREFIX}{version if version is not None else 'next'}-{uuid.uuid4().hex[:8]}")
    t0 = time.time()
    try:
        module = ServingModule(backbone, spec)
        sigs = module.signatures()
        try:
            tf.saved_model.save(module, tmp, signatures=sigs)
        except (AssertionError, ValueError) as e:
            if "untracked" not in str(e):
                raise
            # a resource the scan did not find: track the layer itself (Keras serializes it too)
            log.warning("export: %s; retrying with the backbone layer tracked", e)
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.rmtree(tmp)
            module = ServingModule(backbone, spec, track_backbone=True)
            sigs = module.signatures()
            tf.saved_model.save(module, tmp, signatures=sigs)
        extra = os.path.join(tmp, warmup_lib.ASSETS_EXTRA)
        tf.io.gfile.makedirs(extra)
        _write_json(os.path.join(extra, schema.SPEC_FILENAME), _serving_spec_json(spec))
        logs = None
        if examples:
            logs = warmup_lib.warmup_logs(examples, spec, model_name)
            warmup_lib.write_warmup_file(tmp, logs)
        check = verify_export(tmp, backbone, spec, examples, logs) if verify else None
        info = {
            "model_name": model_name,
            "backbone": getattr(backbone, "kind", type(backbone).__name__),
            "backbone_class": f"{type(backbone).__module__}.{type(backbone).__name__}",
            "backbone_variables": len(backbone.variables),
            "backbone_parameters": int(sum(int(np.prod(v.shape)) for v in backbone.variables)),
            "signatures": {
                SIGNATURE_DEFAULT: {"inputs": {EXAMPLES_INPUT: "string [None] serialized tf.Example"},
                                    "outputs": ["probabilities", "logits"]},
                SIGNATURE_PREDICT: {"inputs": {n: f"{fd.dtype} {[None] + list(fd.shape)}"
                                               for n, fd in spec.serving_features.items()},
                                    "outputs": ["probabilities", "logits"]},
            },
            "warmup_requests": len(logs or []),
            "verification": check,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tensorflow": tf.__version__,
            **(extra_info or {}),
        }
        # rename into place (the only step a watching server can observe)
        v = int(version) if version is not None else next_version(model_base)
        for _ in range(100):
            info["version"] = v
            _write_json(os.path.join(extra, INFO_FILE), info)
            final = os.path.join(model_base, str(v))
            if _rename_dir(tmp, final):
                break
            if version is not None:
                raise FileExistsError(f"{final} already exists (versions are immutable; "
                                      f"omit --version to take the next one)")
            v = max(v + 1, next_version(model_base))
        else:  # pragma: no cover
            raise ExportError(f"could not find a free version under {model_base}")
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    log.info("exported %s (%d backbone variables) in %.1fs", final, len(backbone.variables), time.time() - t0)
    prune_versions(model_base, keep_versions, protect=[v])
    return final


# ---------------------------------------------------------------------------------------------
# rebuild from a training run
# ---------------------------------------------------------------------------------------------
def backbone_name(record: dict) -> str:
    """The backbone name the run record holds (``run_info.backbone``, written by the trainer's
    caller: ``ccn.models``, which maps ``--model`` names to backbones, is training-side code
    serving must not import)."""
    name = (record.get("run_info") or {}).get("backbone")
    if not name:
        raise ExportError(f"the run record holds no backbone name (run_info.backbone) for model "
                          f"{record.get('config', {}).get('model')!r}; cannot rebuild the serving graph")
    return name


def load_trained_backbone(model_dir: str, data_dir: Optional[str] = None):
    """``(backbone, spec, record)`` rebuilt from the run record of ``model_dir`` with the best
    weights; ``data_dir`` (default: the run's) holds the feature spec and vocabularies."""
    from ctrcore.backbones import build_backbone
    from ctrcore.config import TrainConfig

    run = RunDir(model_dir)
    record = run.read_config()
    cfg = TrainConfig.from_dict(record["config"])
    spec = schema.load_spec(data_dir or cfg.data_dir)
    backbone = build_backbone(backbone_name(record), spec, **cfg.backbone_hparams())
    backbone(dummy_features(spec), training=False)
    if not run.has_best_weights():
        raise FileNotFoundError(f"no best weights under {run.best_weights}")
    # the weights were saved from the CTRModel (attribute `backbone`): restore that subtree only
    ckpt = tf.train.Checkpoint(backbone=backbone)
    status = ckpt.read(run.best_weights)
    status.expect_partial()
    status.assert_existing_objects_matched()
    return backbone, spec, record


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"unexpected arguments {argv[1:]}")
    backbone, spec, record = load_trained_backbone(F.model_dir, F.spec_dir)
    data_dir = F.data_dir if F.data_dir is not None else record["config"].get("data_dir")
    examples = None
    if data_dir and F.warmup_examples > 0:
        examples = warmup_lib.read_examples(data_dir, F.warmup_split, F.warmup_examples)
    path = export_model(backbone, spec, F.export_base, F.model_name, version=F.version,
                        keep_versions=F.keep_versions, warmup_examples=examples,
                        extra_info={"model_dir": F.model_dir})
    print(path)


def _define_flags():
    from absl import flags

    flags.DEFINE_string("model_dir", None, "training run directory (train_config.json, best/)")
    flags.DEFINE_string("export_base", None, "EXPORT_BASE (the model goes to EXPORT_BASE/MODEL_NAME/VERSION)")
    flags.DEFINE_string("model_name", None, "TF Serving model name")
    flags.DEFINE_integer("version", None, "version number (default: latest + 1)")
    flags.DEFINE_integer("keep_versions", 5, "keep this many newest versions (<= 0: keep all)")
    flags.DEFINE_string("data_dir", None, "data dir whose valid split feeds the warmup requests "
                                          "(default: the run's data_dir; '' for none)")
    flags.DEFINE_string("spec_dir", None, "directory of feature_spec.json + vocab/ (default: the run's data_dir)")
    flags.DEFINE_string("warmup_split", "valid", "split for warmup requests")
    flags.DEFINE_integer("warmup_examples", 128, "examples for warmup requests (0: no warmup file)")
    for f in ("model_dir", "export_base", "model_name"):
        flags.mark_flag_as_required(f)


if __name__ == "__main__":
    from absl import app

    logging.basicConfig(level=logging.INFO)
    _define_flags()
    app.run(main)
