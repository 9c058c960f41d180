"""Every optional canonical field may be absent from a log (issue 12 section 5): preprocess,
train a few steps, export and serve, for a log without sellers, categories, triggers,
positions or user profile columns.

One tiny synthetic log (``pipelines.synthetic``, 800 rows) is written per case with the field's
column(s) dropped and read through the ``generic`` source with a mapping that maps every column
and lists the dropped one(s) as ``optional``. The feature spec (hence the serving signature)
stays the full log's; a feature whose vocabulary comes out empty gets one OOV bucket in the
model (``ctrcore.layers.IdLookup.oov_only``) and a warning naming it.

Model per case, the cheapest that reads the field: ``ccn`` (TAN backbone + CCN loss: trigger
embedding, trigger attention, collaborative module, long-sequence search by the target's and
the trigger's category, in-page context) for trigger and category; ``din`` (every item side of
the target and the short sequence, the user profile) for seller, profile and position (no model
reads position). The trained model is exported with ``serving.export.export_model`` without its
own export check and warmup file (the check below is that export check, on the export alone),
loaded with ``tf.saved_model.load`` after the data directory is deleted (so nothing but the
export's own assets is read) and both signatures are called.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ctrcore.schema import FeatureSpec, SpecConfig, load_spec
from pipelines import synthetic
from pipelines.sources import get_source

PROFILE = ("gender", "age")
# case -> (dropped columns = optional fields, vocabularies that must come out empty, --model)
CASES = {
    "seller": (["seller_id"], ["seller_id"], "din"),
    "category": (["category_id"], ["category_id"], "ccn"),
    "trigger": (["trigger_item_id"], [], "ccn"),
    "position": (["position"], [], "din"),
    "profile": (["user_gender", "user_age"], ["user_age", "user_gender"], "din"),
}
SHORT, LONG, CONTEXT = 4, 8, 5


@pytest.fixture(scope="module")
def full_log():
    return synthetic.generate(800, seed=0)


def _mapping(optional):
    """Every column of the generator's output, ``optional`` ones allowed to be missing."""
    return {"format": "csv", "columns": {c: c for c in synthetic.COLUMNS},
            "user_profile": {p: "user_" + p for p in PROFILE},
            "optional": list(optional), "timestamp_format": "unix"}


def _preprocess(source, out):
    from tests.test_preprocess import run_job  # the preprocessing tests' DirectRunner driver

    return run_job(source, out, short_len=SHORT, long_len=LONG, max_context=CONTEXT)


@pytest.mark.parametrize("case", list(CASES))
def test_absent_optional_field_preprocesses_trains_exports_serves(case, full_log, tmp_path, caplog):
    import tensorflow as tf

    from ccn import models
    from ccn import train as T
    from ctrcore.config import TrainConfig
    from serving import export as serving_export
    from serving import warmup

    dropped, empty, model_name = CASES[case]
    log_path = str(tmp_path / "log.csv")
    full_log.drop(columns=dropped).to_csv(log_path, index=False)
    source = get_source("generic", log_path, mapping=_mapping(dropped))

    # -- preprocess: every row used, the empty vocabularies are the absent field's ---------------
    data = str(tmp_path / "data")
    stats = _preprocess(source, data)
    assert stats["rows_read"] == len(full_log) and stats["rows_dead_letter"] == 0, stats
    assert stats["examples"]["train"] > 0 and stats["examples"]["valid"] > 0
    spec = load_spec(data)
    ref = FeatureSpec.create(SpecConfig(short_len=SHORT, long_len=LONG, max_context=CONTEXT,
                                        user_profile=PROFILE))
    assert spec.to_json()["features"] == ref.to_json()["features"]  # same spec as the full log
    sizes = {v: len(spec.read_vocab(v)) for v in spec.vocabularies}
    assert sorted(v for v, n in sizes.items() if n == 0) == empty, sizes

    # -- train a few steps, export ----------------------------------------------------------------
    cfg = TrainConfig(data_dir=data, model_dir=str(tmp_path / "run"), model=model_name,
                      batch_size=32, emb_dim=4, mlp_units=[8], num_heads=1, cm_dim=4, dropout=0.0,
                      verbose=0, epochs=1, train_steps=2, backup_every_steps=0,
                      early_stopping_patience=0, export_base=str(tmp_path / "export"),
                      model_name="m")
    caplog.set_level(logging.WARNING, logger="ctrcore.layers")
    s = T.run(cfg, models.default_loss_params(), argv=[], evaluate=False, export=False)
    export = serving_export.export_model(s["model"], spec, cfg.export_base, cfg.model_name,
                                         warmup_examples=None, verify=False)
    with open(os.path.join(cfg.model_dir, "history.json")) as fh:
        h = json.load(fh)
    assert h["runtime"]["steps"] == 2 and np.isfinite(h["epochs"][0]["val"]["logloss"]), h
    warned = [r.getMessage() for r in caplog.records if r.name == "ctrcore.layers"]
    for v in empty:  # the log names the vocabulary and the features reading it
        msg = [w for w in warned if w.startswith(f"vocabulary {v!r}")]
        assert msg and "OOV" in msg[0] and f" {v}" in msg[0], warned
    assert len(warned) == len(empty), warned
    assert export and os.path.exists(os.path.join(export, "saved_model.pb")), export

    # -- serve: load the export alone (data directory gone) and call both signatures --------------
    ex = warmup.to_serving_examples(warmup.read_examples(data, "valid", 8), spec)
    feats = warmup.parse_serving_arrays(ex, spec)
    shutil.rmtree(data)
    loaded = tf.saved_model.load(export)
    a = loaded.signatures["serving_default"](examples=tf.constant(ex))["probabilities"].numpy()
    predict = loaded.signatures["predict"]
    inputs = set(predict.structured_input_signature[1])
    b = predict(**{k: tf.constant(v) for k, v in feats.items() if k in inputs})["probabilities"]
    assert a.shape == (len(ex),) and np.all(np.isfinite(a)) and np.all((a > 0) & (a < 1))
    np.testing.assert_allclose(a, b.numpy(), atol=1e-6)
    ref_p = s["model"]({k: tf.constant(v) for k, v in feats.items()}, training=False)
    np.testing.assert_allclose(ref_p["probabilities"].numpy(), a, atol=1e-5)
    # the signature takes the raw ids of every serving feature of the (full log's) spec
    assert inputs == set(spec.serving_features) == set(ref.serving_features), sorted(inputs)
    assert {f for f in dropped if f in spec.features} <= inputs, sorted(inputs)


# ---------------------------------------------------------------------------------------------
# vocabularies: an empty one is one OOV bucket, a broken one is an error naming feature and file
# ---------------------------------------------------------------------------------------------
def test_empty_vocabulary_is_one_oov_bucket_and_logged(tmp_path, caplog):
    import tensorflow as tf

    from ctrcore.layers import IdLookup

    for content in ("", "\n"):
        path = tmp_path / "seller_id.txt"
        path.write_text(content)
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="ctrcore.layers")
        lk = IdLookup(str(path), vocab_name="seller_id", features=["seller_id", "short_seller_ids"])
        assert lk.oov_only and lk.input_dim == 2 and lk.lookup is None
        ids = lk(tf.constant([["", "s1"], ["x", ""]])).numpy()
        assert ids.tolist() == [[0, 1], [1, 0]] and ids.dtype == np.int32
        assert lk(tf.constant([3, 0])).numpy().tolist() == [3, 0]  # idempotent on ids
        msg = " ".join(r.getMessage() for r in caplog.records)
        assert "vocabulary 'seller_id'" in msg and "seller_id, short_seller_ids" in msg
        assert str(path) in msg and "OOV" in msg
    lk = IdLookup([], vocab_name="v")  # an empty list too
    assert lk.oov_only and lk(tf.constant(["a", ""])).numpy().tolist() == [1, 0]


def test_vocabulary_problems_name_the_vocabulary_features_and_file(tmp_path):
    from ctrcore.layers import IdLookup, VocabularyError

    kw = dict(vocab_name="seller_id", features=["seller_id", "trigger_seller_id"])
    missing = str(tmp_path / "nope" / "seller_id.txt")
    with pytest.raises(FileNotFoundError, match="seller_id.*trigger_seller_id.*nope/seller_id.txt"):
        IdLookup(missing, **kw)
    for content, what in (("a\n\nb\n", "blank line at line 2"),
                          ("a\nb\na\n", "lists id b'a' twice \\(lines 1 and 3\\)")):
        path = tmp_path / "seller_id.txt"
        path.write_text(content)
        with pytest.raises(VocabularyError, match=f"'seller_id'.*trigger_seller_id.*{what}") as e:
            IdLookup(str(path), **kw)
        assert str(path) in str(e.value)
    with pytest.raises(VocabularyError, match="'v'.*listed twice"):
        IdLookup(["a", "a"], vocab_name="v")
    # what the TF initializer accepts is accepted: no trailing newline, CRLF line ends
    for content in ("a\nb", "a\r\nb\r\n"):
        path.write_text(content)
        lk = IdLookup(str(path), **kw)
        assert not lk.oov_only and lk.input_dim == 4


def test_backbone_with_a_missing_vocabulary_file_names_it(tmp_path):
    from ctrcore.backbones import build_backbone
    from ctrcore.testing import write_fake_dataset

    spec = write_fake_dataset(str(tmp_path), n_examples=50, seed=0, splits=("train",))
    os.remove(spec.vocab_path("category_id"))
    with pytest.raises(FileNotFoundError, match="vocabulary 'category_id' \\(features "
                                                ".*trigger_category_id.*category_id.txt"):
        build_backbone("din", spec, emb_dim=4, mlp_units=[8])
