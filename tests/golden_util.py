"""Golden invariants of the pre-redesign code (issue 13): the shared code of the fixture
generator ``tests/fixtures/golden/make_golden.py`` and of its test ``tests/test_golden.py``.

Everything that decides *what* is compared lives here, once: the fixed synthetic log and the
preprocessing command, the tiny hyper-parameters, how a registry model is built, how its serving
signature and variables are read, how the data fingerprint is computed. The generator writes
what these functions return on the frozen pre-redesign checkout; the test recomputes them on the
current code and compares.

Project modules are imported inside the functions (never at module level), so that the
generator, run with ``PYTHONPATH=<frozen checkout>``, measures the frozen code, and the test
measures the checkout it runs in. This file imports nothing from ``tests`` (the generator loads
it by path, next to a frozen checkout whose own ``tests`` package is older).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.join(HERE, "fixtures", "golden")
DATA_DIR = os.path.join(GOLDEN_DIR, "data")  # the preprocessed fixture dataset
CKPT_DIR = os.path.join(GOLDEN_DIR, "ckpt")  # ckpt/<run>/{train_config.json,best/}
DATA_JSON = os.path.join(GOLDEN_DIR, "data_fingerprint.json")
CKPT_JSON = os.path.join(GOLDEN_DIR, "checkpoints.json")
MODELS_JSON = os.path.join(GOLDEN_DIR, "models.json")
#: the fixture data dir as the checkpoints' train_config.json records it (repository-relative)
DATA_DIR_IN_RECORD = "tests/fixtures/golden/data"

SPLITS = ("train", "valid", "test")

# ---------------------------------------------------------------------------------------------
# (a, d) the fixed synthetic log and its preprocessing
# ---------------------------------------------------------------------------------------------
LOG_ROWS = 2000
LOG_SEED = 0
#: flags of ``python -m pipelines.preprocess`` besides --input / --output_dir (short sequences
#: and contexts keep the fixture small; one shard per split; 4 spill partitions instead of 64
#: make the DirectRunner job faster and do not change the outputs)
#: ``--context_sampling=clicked_first``: the context choice of 7d683ae, where the fixture was made
#: (the default became ``stratified`` later; docs/method.md 1.6)
PREPROCESS_FLAGS = ("--source=synthetic", "--short_len=5", "--long_len=10", "--max_context=4",
                    "--context_sampling=clicked_first",
                    "--seed=0", "--num_shards=1", "--user_partitions=4", "--runner=DirectRunner")


def write_log(path: str) -> str:
    """Write the fixed synthetic exposure log (``pipelines.synthetic``, CSV) to ``path``;
    returns the sha256 of the file."""
    from pipelines import synthetic

    synthetic.write(synthetic.generate(LOG_ROWS, seed=LOG_SEED), path)
    return file_sha256(path)


def preprocess_args(log_path: str, out_dir: str) -> List[str]:
    return list(PREPROCESS_FLAGS) + [f"--input={log_path}", f"--output_dir={out_dir}"]


def code_root() -> str:
    """The checkout whose project packages are imported (the frozen one in the generator)."""
    import pipelines

    return os.path.dirname(os.path.dirname(os.path.abspath(pipelines.__file__)))


def module_command(module: str, args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", module, *args]


def popen_module(module: str, args: Sequence[str], log_file: str) -> subprocess.Popen:
    """``python -m module args`` of :func:`code_root` (cwd and PYTHONPATH), output to
    ``log_file``; returns the running process."""
    root = code_root()
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    fh = open(log_file, "w")
    try:
        return subprocess.Popen(module_command(module, args), cwd=root, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    finally:
        fh.close()


def wait_ok(proc: subprocess.Popen, log_file: str, timeout: Optional[float] = None) -> None:
    rc = proc.wait(timeout=timeout)
    if rc != 0:
        with open(log_file) as fh:
            tail = fh.read()[-4000:]
        raise RuntimeError(f"{' '.join(proc.args)} failed with exit code {rc}:\n{tail}")


def run_module(module: str, args: Sequence[str], log_file: str) -> None:
    wait_ok(popen_module(module, args, log_file), log_file)


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def read_records(path: str) -> List[bytes]:
    """Records of a GZIP TFRecord file (plain Python; CRCs not checked)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        out.append(data[i + 12:i + 12 + n])
        i += 12 + n + 4
    return out


def split_records(data_dir: str, split: str) -> List[bytes]:
    names = sorted(f for f in os.listdir(data_dir)
                   if f.startswith(f"{split}-") and f.endswith(".tfrecord.gz"))
    return [r for f in names for r in read_records(os.path.join(data_dir, f))]


def records_sha256(records: Sequence[bytes]) -> str:
    """sha256 over the SORTED serialized records, each preceded by its length (8 bytes,
    little endian): independent of file order and sharding, sensitive to every byte."""
    h = hashlib.sha256()
    for r in sorted(records):
        h.update(struct.pack("<Q", len(r)))
        h.update(r)
    return h.hexdigest()


def stats_without_config(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "stats.json")) as fh:
        st = json.load(fh)
    st.pop("config", None)  # job flags incl. the input / output paths
    return st


def canonical_json_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def data_fingerprint(data_dir: str) -> Dict[str, Any]:
    """What must stay byte-identical through the encoder refactor: the sorted serialized
    examples of every split, stats.json without ``config``, the vocabulary files and the
    feature spec (as JSON values)."""
    vocab_dir = os.path.join(data_dir, "vocab")
    with open(os.path.join(data_dir, "feature_spec.json")) as fh:
        spec = json.load(fh)
    stats = stats_without_config(data_dir)
    out = {
        "splits": {},
        "stats_sha256": canonical_json_sha256(stats),
        "stats": stats,  # for a readable diff; the sha is what is asserted first
        "vocab_sha256": {f: file_sha256(os.path.join(vocab_dir, f)) for f in sorted(os.listdir(vocab_dir))},
        "feature_spec_sha256": canonical_json_sha256(spec),
    }
    for split in SPLITS:
        recs = split_records(data_dir, split)
        out["splits"][split] = {"records": len(recs), "sha256": records_sha256(recs)}
    return out


# ---------------------------------------------------------------------------------------------
# (b) the two trained checkpoints
# ---------------------------------------------------------------------------------------------
#: ``python -m ccn.train`` flags shared by both runs (tiny sizes, a fixed seed, 20 steps)
TRAIN_FLAGS = ("--emb_dim=8", "--mlp_units=16,8", "--num_heads=2", "--cm_dim=4", "--dropout=0.2",
               "--batch_size=64", "--eval_batch_size=256", "--epochs=1", "--train_steps=20",
               "--optimizer=adagrad", "--learning_rate=0.05", "--seed=0",
               "--backup_every_steps=0", "--early_stopping_patience=0", "--verbose=0",
               "--aqcl_codebook_size=16", "--aqcl_z_dim=8")
#: run name -> its model flags
CKPT_RUNS = {"ccn": ("--model=ccn",), "din_aqcl": ("--model=din", "--aux_losses=aqcl")}
#: what ccn.evaluate reads from a run directory (everything else of the run is dropped)
CKPT_KEEP = ("train_config.json", "best/best.json", "best/checkpoint", "best/weights.index",
             "best/weights.data-00000-of-00001")


def train_args(run: str, data_dir: str, model_dir: str) -> List[str]:
    return [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *CKPT_RUNS[run], *TRAIN_FLAGS]


def install_run_dir(src: str, dst: str, data_dir: str) -> str:
    """Copy the files of :data:`CKPT_KEEP` from run dir ``src`` to ``dst`` and point its
    train_config.json at ``data_dir`` (config.data_dir and data.data_dir)."""
    for rel in CKPT_KEEP:
        p = os.path.join(src, rel)
        if os.path.exists(p):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copyfile(p, os.path.join(dst, rel))
    path = os.path.join(dst, "train_config.json")
    with open(path) as fh:
        rec = json.load(fh)
    rec["config"]["data_dir"] = data_dir
    rec.setdefault("data", {})["data_dir"] = data_dir
    with open(path, "w") as fh:
        json.dump(rec, fh, indent=1, sort_keys=True)
    return dst


def evaluate_checkpoint(run_dir: str, data_dir: str, work_dir: str) -> dict:
    """Test metrics of a golden run directory by ``ccn.evaluate.evaluate_run`` (the model is
    rebuilt from train_config.json and its best weights): the run is copied to ``work_dir`` with
    its data_dir set to ``data_dir`` (an absolute path), nothing is written beside the fixture."""
    from ccn import evaluate

    dst = install_run_dir(run_dir, work_dir, os.path.abspath(data_dir))
    res = evaluate.evaluate_run(dst, split="test", write=False)
    return {k: res[k] for k in ("auc", "gauc", "logloss", "page_auc", "n")}


# ---------------------------------------------------------------------------------------------
# (c) every registry model: serving signature and backbone variables
# ---------------------------------------------------------------------------------------------
#: TrainConfig fields (backbone hyper-parameters) and loss parameters of every built model
TINY_CONFIG = {"emb_dim": 8, "mlp_units": [16, 8], "num_heads": 2, "cm_dim": 4, "dropout": 0.2}
TINY_LOSS_PARAMS = {"aqcl_codebook_size": 16, "aqcl_z_dim": 8}


def registry() -> Dict[str, Dict[str, Any]]:
    """``{model name: {backbone, aux}}`` of ``ccn.models.MODELS``."""
    from ccn import models

    return {n: {"backbone": m.backbone, "aux": list(m.aux)} for n, m in models.MODELS.items()}


def backbone_kinds() -> List[str]:
    from ctrcore.backbones import BACKBONES

    return list(BACKBONES)


def build_backbone_of(model: str, data_dir: str):
    """``(backbone, spec)``: ``ccn.models.build_model`` (the trainer's factory) of ``model`` with
    :data:`TINY_CONFIG` on the fixture spec; its backbone, built (variables created) as
    ``serving.export.export_model`` builds it."""
    from ccn import models
    from ctrcore import schema
    from ctrcore.config import TrainConfig
    from serving.export import dummy_features, resolve_backbone

    spec = schema.load_spec(data_dir)
    stats = schema.load_stats(data_dir)
    cfg = TrainConfig(data_dir=data_dir, model_dir="unused", model=model, **TINY_CONFIG)
    bb = resolve_backbone(models.build_model(cfg, TINY_LOSS_PARAMS, spec, stats))
    if not bb.built or not bb.variables:
        bb(dummy_features(spec), training=False)
    return bb, spec


def _shape(shape) -> Optional[List[Optional[int]]]:
    if shape.rank is None:
        return None
    return [None if d is None else int(d) for d in shape.as_list()]


def tensor_str(dtype: str, shape: Optional[Sequence[Optional[int]]]) -> str:
    """``"float32[None, 5]"`` (``"float32[?]"`` for an unknown rank): one compact JSON string."""
    if shape is None:
        return f"{dtype}[?]"
    return f"{dtype}[{', '.join('None' if d is None else str(int(d)) for d in shape)}]"


def concrete_signature(cf) -> Dict[str, Any]:
    """``{inputs: {name: "dtype[shape]"}, outputs: {...}}`` of a concrete function."""
    import tensorflow as tf

    args, kwargs = cf.structured_input_signature
    inputs = {s.name or f"arg{i}": tensor_str(s.dtype.name, _shape(s.shape)) for i, s in enumerate(args)}
    inputs.update({k: tensor_str(s.dtype.name, _shape(s.shape)) for k, s in kwargs.items()})
    outputs = {k: tensor_str(tf.as_dtype(t.dtype).name, _shape(t.shape))
               for k, t in cf.structured_outputs.items()}
    return {"inputs": dict(sorted(inputs.items())), "outputs": dict(sorted(outputs.items()))}


def module_signatures(module) -> Dict[str, Any]:
    """``{signature: {inputs: {name: "dtype[shape]"}, outputs: {...}}}`` of a
    :class:`serving.signatures.ServingModule`, from its concrete functions (what
    ``tf.saved_model.save(module, signatures=module.signatures())`` writes; the generator checks
    this against the SavedModel's signature_def)."""
    return {name: concrete_signature(cf) for name, cf in sorted(module.signatures().items())}


def predict_signature(module, spec) -> Dict[str, Any]:
    """The ``predict`` entry of :func:`module_signatures` alone (one trace instead of two): the
    concrete function ``ServingModule.signatures()`` makes for it."""
    from serving.signatures import SIGNATURE_PREDICT, input_specs

    return {SIGNATURE_PREDICT: concrete_signature(module.serve_features.get_concrete_function(
        **input_specs(spec)))}


def savedmodel_signatures(export_dir: str) -> Dict[str, Any]:
    """The same structure read from ``saved_model.pb`` (what TF Serving sees)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as fh:
        sm.ParseFromString(fh.read())

    def info(t):
        shape = None if t.tensor_shape.unknown_rank else [
            None if d.size < 0 else int(d.size) for d in t.tensor_shape.dim]
        return tensor_str(tf.as_dtype(t.dtype).name, shape)

    out = {}
    for name, sd in sorted(sm.meta_graphs[0].signature_def.items()):
        if name.startswith("__"):
            continue
        out[name] = {"inputs": {k: info(v) for k, v in sorted(sd.inputs.items())},
                     "outputs": {k: info(v) for k, v in sorted(sd.outputs.items())}}
    return out


OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def checkpoint_variables(prefix: str) -> Dict[str, str]:
    """``{checkpoint key: "dtype[shape]"}`` of a TF2 checkpoint (the object graph left out)."""
    import tensorflow as tf

    r = tf.train.load_checkpoint(prefix)
    shapes, dtypes = r.get_variable_to_shape_map(), r.get_variable_to_dtype_map()
    return {k: tensor_str(dtypes[k].name, shapes[k]) for k in sorted(shapes) if k != OBJECT_GRAPH_KEY}


def _paths_in_object_graph(prefix: str, child: str) -> Dict[int, List[str]]:
    """node id -> every path (below the root's child ``child``) of the checkpoint's object graph."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    g = trackable_object_graph_pb2.TrackableObjectGraph()
    g.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(OBJECT_GRAPH_KEY))
    paths: Dict[int, List[str]] = {}
    start = [c.node_id for c in g.nodes[0].children if c.local_name == child]
    stack = [(start[0], child, frozenset([start[0]]))] if start else []
    while stack:
        nid, path, seen = stack.pop()
        paths.setdefault(nid, []).append(path)
        for c in g.nodes[nid].children:
            if c.node_id not in seen:
                stack.append((c.node_id, f"{path}/{c.local_name}", seen | {c.node_id}))
    return paths


def list_node_ids(prefix: str, child: str) -> List[int]:
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    g = trackable_object_graph_pb2.TrackableObjectGraph()
    g.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor(OBJECT_GRAPH_KEY))
    lst = [c.node_id for c in g.nodes[0].children if c.local_name == child][0]
    return [c.node_id for c in sorted(g.nodes[lst].children, key=lambda c: int(c.local_name))]


def backbone_variables(backbone, spec, work_dir: str) -> Dict[str, Any]:
    """The backbone's variables two ways:

    * ``checkpoint``: ``{key: "dtype[shape]"}`` of ``tf.train.Checkpoint(backbone=bb)``: the
      object-graph paths that ``CTRModel.save_weights`` / ``load_weights`` and
      ``serving.export.load_trained_backbone`` restore by (stable, unlike Keras auto names);
    * ``savedmodel``: ``{key: "dtype[shape] = <backbone key>"}`` of the exported SavedModel's
      ``variables/variables`` (the :class:`serving.signatures.ServingModule` tracks the
      backbone's variables as a list: ``variables/<i>/...``), each with the backbone checkpoint
      key of the same variable object. Written here as ``tf.train.Checkpoint(root=ServingModule)``
      (what ``tf.saved_model.save`` writes, without tracing or saving a graph); the generator
      checks it equals a real export's ``variables/variables``.

    Also returns the ``module`` (the :class:`ServingModule`).
    """
    import tensorflow as tf
    from serving.signatures import ServingModule

    os.makedirs(work_dir, exist_ok=True)
    bb_prefix = tf.train.Checkpoint(backbone=backbone).write(os.path.join(work_dir, "backbone"))
    ckpt = checkpoint_variables(bb_prefix)
    module = ServingModule(backbone, spec)
    sm_prefix = tf.train.Checkpoint(root=module).write(os.path.join(work_dir, "module"))
    sm = checkpoint_variables(sm_prefix)
    # position in the module's variable list -> the backbone path of the same object
    both = tf.train.Checkpoint(listed=list(backbone.variables), backbone=backbone).write(
        os.path.join(work_dir, "both"))
    paths = _paths_in_object_graph(both, "backbone")
    ids = list_node_ids(both, "listed")
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    savedmodel = {}
    for key, var in sm.items():
        parts = key.split("/")
        bkey = "?"
        if len(parts) > 2 and parts[0] == "variables" and parts[1].isdigit() and int(parts[1]) < len(ids):
            cands = sorted(p + suffix for p in paths.get(ids[int(parts[1])], []) if p + suffix in ckpt)
            bkey = " | ".join(cands) or "?"
        savedmodel[key] = f"{var} = {bkey}"
    return {"checkpoint": ckpt, "savedmodel": savedmodel, "module": module}


def model_golden(model: str, data_dir: str, work_dir: str, signatures: bool = True) -> Dict[str, Any]:
    """Everything (c) records about one registry model. Private entries (``_module``: the
    ServingModule, ``_backbone``, ``_spec``) are for an export; :func:`public` drops them."""
    bb, spec = build_backbone_of(model, data_dir)
    v = backbone_variables(bb, spec, work_dir)
    module = v.pop("module")
    out = {"backbone": getattr(bb, "kind", type(bb).__name__),
           "backbone_class": f"{type(bb).__module__}.{type(bb).__name__}",
           "backbone_checkpoint_variables": v["checkpoint"],
           "savedmodel_variables": v["savedmodel"],
           "_module": module, "_backbone": bb, "_spec": spec}
    if signatures:
        out["signatures"] = module_signatures(module)
    return out


def public(entry: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def jsonable(obj):
    """Tuples -> lists (how the JSON reads back)."""
    return json.loads(json.dumps(obj))


def write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")


def read_json(path: str):
    with open(path) as fh:
        return json.load(fh)
