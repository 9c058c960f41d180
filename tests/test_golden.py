"""Golden invariants of the pre-redesign code (issue 13): the redesign (plug-in losses, composable
backbones, thin trainer, spec-driven example encoder) must keep all of these.

The fixtures in ``tests/fixtures/golden/`` were written by ``make_golden.py`` (same directory)
from the frozen checkout of commit 7d683ae, with the functions of ``tests/golden_util.py`` that
this test calls on the current code. Do not regenerate them to make this test pass: a difference
is a behaviour change of the redesign, to be fixed or explained.

* (a, b) the two golden checkpoints (CCN; DIN+AQCL), trained by ``ccn.train`` on the fixture
  data, load and evaluate (``ccn.evaluate.evaluate_run``) to the recorded test AUC and logloss;
* (c) every model of the ``ccn.models`` registry (tiny sizes, fixture spec): its backbone kind,
  the exported SavedModel's signatures (input / output names, dtypes, shapes), the backbone's
  checkpoint keys and shapes (what old checkpoints restore by) and the SavedModel's variable
  keys and shapes;
* (d) ``python -m pipelines.preprocess`` on the fixed synthetic log writes byte-identical
  examples (sorted serialized records per split), stats.json (without ``config``),
  vocabularies and the same feature spec;
* the one flag file no other test parses (``configs/search_*.flags``, read by ``aqcl.search``)
  parses, and every flag file is covered (``tests/test_flags.py`` parses all the others with
  ``ccn.train``).

Cost: the preprocessing job runs in a subprocess started by the first test, beside the
TensorFlow tests; one model (``ccn``) is exported for real (its SavedModel's signatures serve
the four models of the ``tan`` backbone); the other backbones' ``predict`` signatures are traced
once per distinct backbone (same class, kind and variables) from the ServingModule, without a
save (``serving_default`` = in-graph parsing + the same function: from the real export).
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests import golden_util as G

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_FP = G.read_json(G.DATA_JSON)
CKPT = G.read_json(G.CKPT_JSON)
MODELS = G.read_json(G.MODELS_JSON)
#: measured: the CLI evaluation, repeated in-process evaluations, oneDNN on/off and 1 vs all
#: threads give bit-identical AUC and logloss (frozen and current code alike). On 197 test
#: examples one swapped pair moves the AUC by ~3e-4, so 1e-6 means "the same ranking"; the
#: logloss tolerance leaves room for a different float summation order only
AUC_TOL = 1e-6
LOGLOSS_TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# (d) preprocessing: started first, in a subprocess, checked last
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def preprocess_job(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_preprocess")
    log_path, out, log_file = str(d / "exposures.csv"), str(d / "data"), str(d / "preprocess.log")
    log_sha = G.write_log(log_path)
    proc = G.popen_module("pipelines.preprocess", G.preprocess_args(log_path, out), log_file)
    yield {"proc": proc, "log_sha256": log_sha, "out": out, "log_file": log_file}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_synthetic_log_is_the_golden_log(preprocess_job):
    # first test of the module: starts the preprocessing job (runs during the tests below)
    assert preprocess_job["log_sha256"] == DATA_FP["log"]["sha256"], (
        "pipelines.synthetic no longer generates the golden log: the fingerprint test below "
        "then compares the outputs of different inputs")


def test_committed_fixture_data_matches_its_fingerprint():
    assert G.data_fingerprint(G.DATA_DIR) == DATA_FP["fingerprint"]


# ---------------------------------------------------------------------------------------------
# (c) every registry model: serving signature, backbone and SavedModel variables
# ---------------------------------------------------------------------------------------------
def test_registry_matches_golden():
    assert G.registry() == MODELS["registry"]
    assert sorted(G.backbone_kinds()) == sorted(MODELS["backbone_kinds"])
    assert sorted(G.registry()) == sorted(MODELS["models"])


#: the model exported for real (serving.export.export_model): its signatures come from the
#: SavedModel's signature_def, and serve every model with the same backbone
EXPORTED_MODEL = "ccn"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """model name -> model_golden entry (without signatures), built on demand."""
    cache = {}
    base = tmp_path_factory.mktemp("golden_models")

    def get(name):
        if name not in cache:
            cache[name] = G.model_golden(name, G.DATA_DIR, str(base / name), signatures=False)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def real_export(tiny_models, tmp_path_factory):
    """:data:`EXPORTED_MODEL` exported by ``serving.export.export_model`` (no warmup file, no
    verification run): ``(signatures from saved_model.pb, variables/variables)``."""
    from serving import export

    e = tiny_models(EXPORTED_MODEL)
    path = export.export_model(e["_backbone"], e["_spec"], str(tmp_path_factory.mktemp("golden_export")),
                               EXPORTED_MODEL, warmup_examples=None, verify=False)
    return G.savedmodel_signatures(path), G.checkpoint_variables(os.path.join(path, "variables", "variables"))


def _structure_key(entry):
    return json.dumps([entry["backbone_class"], entry["backbone"], entry["backbone_checkpoint_variables"],
                       entry["savedmodel_variables"]], sort_keys=True)


@pytest.fixture(scope="module")
def signatures_of(tiny_models, real_export):
    """model -> serving signatures. :data:`EXPORTED_MODEL` and every model with the same backbone
    (class, kind and variables): the real export's (saved_model.pb). Any other backbone: its
    ``predict`` signature traced once per distinct backbone from the ServingModule (the concrete
    function ``module.signatures()`` saves); ``serving_default`` (``examples`` parsed in-graph,
    then the same function as ``predict``: no backbone-specific input or output) from the real
    export, to save a second trace per backbone."""
    real = real_export[0]
    traced = {_structure_key(tiny_models(EXPORTED_MODEL)): real}

    def get(name):
        e = tiny_models(name)
        key = _structure_key(e)
        if key not in traced:
            traced[key] = dict(G.predict_signature(e["_module"], e["_spec"]),
                               serving_default=real["serving_default"])
        return traced[key]
    return get


@pytest.mark.parametrize("model", sorted(MODELS["models"]))
def test_model_variables_and_signatures(model, tiny_models, signatures_of):
    want = MODELS["models"][model]
    got = tiny_models(model)
    assert (got["backbone"], got["backbone_class"]) == (want["backbone"], want["backbone_class"])
    assert got["backbone_checkpoint_variables"] == want["backbone_checkpoint_variables"]
    assert got["savedmodel_variables"] == want["savedmodel_variables"]
    assert signatures_of(model) == want["signatures"]


def test_real_export_variables_equal_golden(real_export):
    """The SavedModel variables compared above (a checkpoint of the ServingModule) are what
    ``serving.export.export_model`` writes: its variables/variables equal the golden ones
    (the generator checked this, and the signatures, for every model on the frozen code)."""
    want = MODELS["models"][EXPORTED_MODEL]["savedmodel_variables"]
    assert real_export[1] == {k: v.split(" = ")[0] for k, v in want.items()}


# ---------------------------------------------------------------------------------------------
# (b) the golden checkpoints evaluate to the recorded test AUC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", sorted(CKPT["runs"]))
def test_checkpoint_evaluates_to_golden_auc(run, tmp_path):
    want = CKPT["runs"][run]
    got = G.evaluate_checkpoint(os.path.join(G.CKPT_DIR, run), G.DATA_DIR, str(tmp_path / run))
    assert got["n"] == want["n"]
    assert abs(got["auc"] - want["test_auc"]) <= AUC_TOL, (got["auc"], want["test_auc"])
    assert abs(got["logloss"] - want["test_logloss"]) <= LOGLOSS_TOL, (got["logloss"], want["test_logloss"])


# ---------------------------------------------------------------------------------------------
# flag files
# ---------------------------------------------------------------------------------------------
def _included(name, seen):
    """Flag files a flag file names (--flagfile=, aqcl.search's --train_flags=), recursively."""
    with open(os.path.join(ROOT, "configs", name)) as fh:
        for line in fh:
            m = re.match(r"\s*--(?:flagfile|train_flags)=configs/(\S+)", line)
            if m and m.group(1) not in seen:
                seen.add(m.group(1))
                _included(m.group(1), seen)
    return seen


def _search_flagfiles():
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "search_*.flags")))


def test_every_flagfile_is_parsed_by_a_test():
    from tests.test_flags import _train_configs

    every = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.flags"))}
    top = set(_train_configs()) | set(_search_flagfiles())  # parsed by test_flags / below
    covered = set(top)
    for name in top:
        covered |= _included(name, set())
    assert every <= covered, f"flag files no test parses: {sorted(every - covered)}"


_SEARCH_PARSE = textwrap.dedent("""
    import json, sys
    from absl import flags
    from aqcl import search
    search._define_flags()
    F = flags.FLAGS
    F(["aqcl.search", "--flagfile=configs/" + sys.argv[1]])
    # the trainer command line of a trial, as the search builds it
    obj = search.SubprocessObjective(module=F.trainer_module, flagfile=F.train_flags,
                                     extra_flags=list(F.train_flag))
    cmd = obj.command({"w1": 1.0, "w2": 2.0}, "/tmp/unused_trial_dir")
    assert cmd[1:3] == ["-m", "ccn.train"], cmd
    from ccn import train as T
    fv = flags.FlagValues()
    T.define_flags(fv)
    fv(["ccn.train"] + cmd[3:])
    cfg, lp = T.config_from_flags(fv)
    T.validate_all(cfg, lp, check_data=False)
    print(json.dumps({"model": cfg.model, "aux": cfg.aux_losses, "n_trials": F.n_trials,
                      "w1": lp["aqcl_w1"], "w2": lp["aqcl_w2"]}))
""")


@pytest.mark.parametrize("name", _search_flagfiles())
def test_search_flagfile_parses_with_aqcl_search(name):
    # a subprocess: aqcl.search defines its flags (model_dir, seed, ...) on absl's global
    # FLAGS, which ccn.train's import already holds in this process
    r = subprocess.run([sys.executable, "-c", _SEARCH_PARSE, name], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["w1"] == 1.0 and out["w2"] == 2.0 and out["n_trials"] > 0


# ---------------------------------------------------------------------------------------------
# (d) the preprocessing job's outputs (last: it ran during the tests above)
# ---------------------------------------------------------------------------------------------
def test_preprocessing_reproduces_the_fingerprint(preprocess_job):
    G.wait_ok(preprocess_job["proc"], preprocess_job["log_file"], timeout=600)
    got = G.data_fingerprint(preprocess_job["out"])
    want = DATA_FP["fingerprint"]
    for split in G.SPLITS:
        assert got["splits"][split] == want["splits"][split], f"{split}: examples differ"
    assert got["stats"] == want["stats"]
    assert got["stats_sha256"] == want["stats_sha256"]
    assert got["vocab_sha256"] == want["vocab_sha256"]
    assert got["feature_spec_sha256"] == want["feature_spec_sha256"]
