"""Id shards (ctrcore.idshards, pipelines.id_shards, --train_input=ids): the same examples in
column blocks, every vocabulary feature looked up exactly as the in-graph IdLookup does, nothing
lost, stale or broken shards refused with errors naming the file, record and feature."""
import gzip
import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from ccn import models
from ctrcore import data as D, idshards, schema, trainer
from ctrcore.config import TrainConfig
from ctrcore.layers import IdLookup
from ctrcore.testing import write_fake_dataset
from pipelines import id_shards


@pytest.fixture(scope="module")
def ids_data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ids") / "data")
    write_fake_dataset(d, n_examples=600, seed=0)
    id_shards.run(d, ["train", "valid"], block_rows=50)  # short last blocks: 600 = 3 shards x 200
    return d


def _cfg(d, **kw):
    base = dict(data_dir=d, model_dir=os.path.join(d, "_m"), model="din", batch_size=32,
                emb_dim=4, mlp_units=[8], num_heads=1, verbose=0, epochs=1, train_steps=2,
                backup_every_steps=0, early_stopping_patience=0)
    base.update(kw)
    return TrainConfig(**base)


def test_vocab_index_matches_idlookup(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"a\nbb\r\nc\n")
    enc_index = idshards.vocab_index(path.read_bytes())
    values = tf.constant([["a", "bb", "", "zzz", "c"]])
    want = IdLookup(str(path))(values).numpy()[0].tolist()
    got = [0 if v == b"" else enc_index.get(v, 1) for v in [b"a", b"bb", b"", b"zzz", b"c"]]
    assert got == want == [2, 3, 0, 1, 4]
    assert idshards.vocab_index(b"\n\n") == {}


def _rows(ds, names):
    """Every row of ``ds`` as a tuple of its values (flattened), in order."""
    out = []
    for b in ds:
        cols = [b[n].numpy().reshape(b[n].shape[0], -1) for n in names]
        out += [tuple(v for c in cols for v in c[i].tolist()) for i in range(cols[0].shape[0])]
    return out


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_shards_hold_the_looked_up_examples_in_order(ids_data, tmp_path, compression):
    d = ids_data
    if compression != "none":
        d = str(tmp_path / "gz")
        shutil.copytree(ids_data, d)
        id_shards.run(d, ["train", "valid"], block_rows=64, compression=compression)
    spec, stats = schema.load_spec(d), schema.load_stats(d)
    m = json.load(open(idshards.manifest_path(d)))
    assert m["compression"] == compression and m["columns"] == idshards.columns(spec)
    for split in ("train", "valid"):
        assert m["splits"][split]["examples"] == stats["examples"][split]
        assert m["splits"][split]["shards"] == [
            idshards.id_shard_name(os.path.basename(p), compression) for p in D.list_shards(d, split)]
    assert idshards.check(d, spec, "train", examples=stats["examples"]["train"]) is None
    cfg = _cfg(d)
    model = models.model_factory(cfg)(spec, stats)
    lookup = model.backbone.lookup
    n = 0
    for split in ("train", "valid"):
        s = D.make_dataset(d, split, 64, spec=spec, shuffle=False, deterministic=True)
        i = D.make_dataset(d, split, 64, spec=spec, shuffle=False, deterministic=True,
                           id_shards=True)
        for bs, bi in zip(s, i):
            want = lookup(bs)
            assert set(bi) == set(bs)
            for name, fd in spec.features.items():
                if fd.vocab:
                    assert bi[name].dtype == tf.int32
                    np.testing.assert_array_equal(bi[name].numpy(), want[name].numpy(), err_msg=name)
                else:
                    assert bi[name].dtype == bs[name].dtype, name
                    np.testing.assert_array_equal(bi[name].numpy(), bs[name].numpy(), err_msg=name)
            n += int(bi["label"].shape[0])
    assert n == stats["examples"]["train"] + stats["examples"]["valid"]
    # the OOV bucket is exercised: valid holds items unseen in train
    i = D.make_dataset(d, "valid", 4096, spec=spec, shuffle=False, id_shards=True)
    assert (next(iter(i))["item_id"].numpy() == 1).any()


def test_shuffled_pass_is_a_permutation_reproducible_from_the_seed(ids_data):
    spec = schema.load_spec(ids_data)
    names = sorted(spec.features)
    ordered = _rows(D.make_dataset(ids_data, "train", 64, spec=spec, shuffle=False, id_shards=True), names)
    passes = {}
    for seed in (3, 3, 4):
        ds = D.make_dataset(ids_data, "train", 64, spec=spec, shuffle=True, deterministic=True,
                            seed=seed, shuffle_buffer=150, id_shards=True)
        passes.setdefault(seed, []).append(_rows(ds, names))
    a, b = passes[3]
    assert a == b  # the same seed, the same order
    assert sorted(a) == sorted(ordered) and a != ordered  # every example once, shuffled
    assert passes[4][0] != a and sorted(passes[4][0]) == sorted(ordered)
    # windows of 150 examples: each batch mixes examples of several blocks of 50
    first = set(a[:64])
    assert len({ordered.index(r) // 50 for r in first}) >= 3
    # repeated: full batches; the first pass's whole batches hold distinct examples
    ds = D.make_dataset(ids_data, "train", 64, spec=spec, shuffle=True, repeat=True, seed=3,
                        shuffle_buffer=150, id_shards=True)
    k = len(ordered) // 64
    rows = _rows(ds.take(k + 2), names)
    assert len(rows) == (k + 2) * 64
    assert not Counter(rows[:k * 64]) - Counter(ordered)  # no example twice within the pass
    assert set(rows) <= set(ordered)


def test_check_refuses_stale_missing_and_miscounted(ids_data, tmp_path):
    d = str(tmp_path / "copy")
    shutil.copytree(ids_data, d)
    spec = schema.load_spec(d)
    assert "valid" in str(idshards.check(d, spec, "test"))
    assert "stats.json says 5" in idshards.check(d, spec, "train", examples=5)
    vocab = spec.vocab_path("item_id")
    with open(vocab, "ab") as fh:
        fh.write(b"a_new_item\n")
    p = idshards.check(d, spec, "train")
    assert "another vocabulary 'item_id'" in p and "pipelines.id_shards" in p
    with pytest.raises(ValueError, match="--train_input=ids: the id shards were made"):
        trainer.resolve_train_input(_cfg(d, train_input="ids"), spec)
    m = json.load(open(idshards.manifest_path(d)))
    m["columns"]["item_id"]["dtype"] = "int64"
    with open(idshards.manifest_path(d), "w") as fh:
        json.dump(m, fh)
    assert "columns differ" in idshards.check(d, spec, "train") and "'item_id'" in idshards.check(d, spec, "train")
    m["format_version"] = 1  # the per-record shards of earlier versions
    with open(idshards.manifest_path(d), "w") as fh:
        json.dump(m, fh)
    assert "format_version 1, expected 2" in idshards.check(d, spec, "train")
    os.remove(idshards.manifest_path(d))
    assert "not found" in idshards.check(d, spec, "train")


def test_resolve_auto_and_ids_mode(ids_data, tmp_path):
    spec, stats = schema.load_spec(ids_data), schema.load_stats(ids_data)
    cfg = _cfg(ids_data, in_memory_max_mb=0)
    model = models.model_factory(cfg)(spec, stats)
    names, lookup = model.train_feature_names(), model.backbone.lookup
    mode, why = trainer.resolve_train_input(cfg, spec, names, lookup)
    assert mode == "ids" and "valid" in why
    assert trainer.resolve_train_input(_cfg(ids_data), spec, names, lookup)[0] == "memory"
    bare = str(tmp_path / "bare")
    write_fake_dataset(bare, n_examples=600, seed=0)
    mode, why = trainer.resolve_train_input(_cfg(bare, in_memory_max_mb=0), schema.load_spec(bare),
                                            names, lookup)
    assert mode == "stream" and "pipelines.id_shards" in why
    with pytest.raises(ValueError, match="no id shards"):
        trainer.resolve_train_input(_cfg(bare, train_input="ids"), schema.load_spec(bare))


def test_ids_input_feeds_what_the_stream_feeds(ids_data):
    """The trainer's ids input gives batches of the streamed input's features, dtypes and shapes
    after the lookups, and one pass of it holds the streamed split's examples."""
    spec, stats = schema.load_spec(ids_data), schema.load_stats(ids_data)
    batches = {}
    for mode in ("stream", "ids"):
        cfg = _cfg(ids_data, train_input=mode, deterministic=True, seed=3)
        model = models.model_factory(cfg)(spec, stats)
        it = iter(trainer.make_train_input(cfg, spec, model))
        batches[mode] = [next(it) for _ in range(3)]
    for a, b in zip(batches["stream"], batches["ids"]):
        assert set(a) == set(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    names = sorted(batches["ids"][0])
    lookup = model.backbone.lookup
    stream = _rows(D.make_dataset(ids_data, "train", 64, spec=spec, shuffle=False, features=names)
                   .map(lookup), names)
    ids = _rows(D.make_dataset(ids_data, "train", 64, spec=spec, shuffle=True, seed=3,
                               features=names, id_shards=True).map(lookup), names)
    assert sorted(ids) == sorted(stream)


def _rewrite_first_shard(d, records):
    path = D.list_shards(d, "train")[0]
    with tf.io.TFRecordWriter(path, "GZIP") as w:
        for r in records:
            w.write(r)
    return path


def test_bad_record_names_file_record_and_feature(tmp_path):
    d = str(tmp_path / "data")
    write_fake_dataset(d, n_examples=300, seed=1, splits=("train",))
    recs = [r.numpy() for r in tf.data.TFRecordDataset(D.list_shards(d, "train"), "GZIP")]
    ex = tf.train.Example.FromString(recs[2])
    ex.features.feature["item_id"].Clear()
    ex.features.feature["item_id"].int64_list.value.append(7)
    path = _rewrite_first_shard(d, recs[:2] + [ex.SerializeToString()] + recs[3:])
    with pytest.raises(Exception, match=r"record 2: feature 'item_id' is a int64_list"):
        id_shards.run(d, ["train"])
    assert not [f for f in os.listdir(idshards.ids_dir(d)) if ".tmp-" in f]
    _rewrite_first_shard(d, recs[:3] + [b"\x00not a proto\xff"] + recs[4:])
    with pytest.raises(Exception, match=r"record 3: not a tf.train.Example"):
        id_shards.run(d, ["train"])
    # a truncated file: the frame after the last whole record is reported
    _rewrite_first_shard(d, recs)
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as fh:
        fh.write(raw[:-10])
    with pytest.raises(Exception, match=rf"{os.path.basename(path)}: record {len(recs) - 1}: cannot read"):
        id_shards.run(d, ["train"])
    assert not os.path.exists(idshards.manifest_path(d))


def test_in_process_input_ab_feeds_one_step_from_both_inputs(ids_data):
    """benchmarks.train's --compare_inputs --in_process worker: one model, the memory and ids
    inputs in alternating timed blocks, a result per input."""
    import argparse

    from benchmarks.train import _worker_variants, ab_worker

    a = argparse.Namespace(data_dir=ids_data, model="din", aux="", batch_size=32, optimizer="adagrad",
                           jit_compile=False, steps_per_execution=1, steps_per_epoch=3, epochs=2,
                           warmup_epochs=1, lookup_in_input=1, loss_params="", ab_inputs="ids,memory",
                           ab_keys="", train_input="auto")
    r = ab_worker(a, _worker_variants(a))
    assert sorted(r["variants"]) == ["ids", "memory"]
    for m in r["variants"].values():  # 2 timed blocks of 3 steps, the first step of each dropped
        assert m["n_steps"] == 4 and m["step_s_median"] > 0 and m["cpu_s_per_step_median"] > 0
        assert m["examples_per_second"] == pytest.approx(32 / m["step_s_median"])
        assert m["model"] == "din"
    assert r["step_s_median"] == r["variants"]["ids"]["step_s_median"]  # the first input's
    # two models in one worker (the aux-overhead pair): DIN+AQCL and DIN, each its own step
    a.ab_inputs, a.ab_keys, a.train_input = "", "din+aqcl,din", "memory"
    v = _worker_variants(a)
    assert [x[0] for x in v] == ["din+aqcl", "din"] and v[0][1:3] == ("din", "aqcl") and v[1][2] == ""
    r = ab_worker(a, v)
    assert r["variants"]["din+aqcl"]["aux"] == "aqcl" and r["variants"]["din"]["n_steps"] == 4
