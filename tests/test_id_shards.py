"""Id shards (ctrcore.idshards, pipelines.id_shards, --train_input=ids): the same records with
every vocabulary feature looked up exactly as the in-graph IdLookup does, nothing lost, stale
or broken shards refused with errors naming the file, record and feature."""
import gzip
import json
import os
import shutil

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
    id_shards.run(d, ["train", "valid"])
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


def test_shards_hold_the_looked_up_records_in_order(ids_data):
    spec, stats = schema.load_spec(ids_data), schema.load_stats(ids_data)
    m = json.load(open(idshards.manifest_path(ids_data)))
    for split in ("train", "valid"):
        assert m["splits"][split]["examples"] == stats["examples"][split]
        assert [os.path.basename(p) for p in D.list_shards(ids_data, split)] == m["splits"][split]["shards"]
    assert idshards.check(ids_data, spec, "train", examples=stats["examples"]["train"]) is None
    cfg = _cfg(ids_data)
    model = models.model_factory(cfg)(spec, stats)
    lookup = model.backbone.lookup
    n = 0
    for split in ("train", "valid"):
        s = D.make_dataset(ids_data, split, 64, spec=spec, shuffle=False, deterministic=True)
        i = D.make_dataset(ids_data, split, 64, spec=spec, shuffle=False, deterministic=True,
                           id_shards=True)
        for bs, bi in zip(s, i):
            want = lookup(bs)
            for name, fd in spec.features.items():
                if fd.vocab:
                    assert bi[name].dtype == tf.int64
                    np.testing.assert_array_equal(bi[name].numpy(), want[name].numpy(), err_msg=name)
                else:
                    np.testing.assert_array_equal(bi[name].numpy(), bs[name].numpy(), err_msg=name)
            n += int(bi["label"].shape[0])
    assert n == stats["examples"]["train"] + stats["examples"]["valid"]
    # the OOV bucket is exercised: valid holds items unseen in train
    i = D.make_dataset(ids_data, "valid", 4096, spec=spec, shuffle=False, id_shards=True)
    assert (next(iter(i))["item_id"].numpy() == 1).any()


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


def test_ids_input_feeds_the_same_batches_as_the_stream(ids_data):
    """Fixed seed, deterministic order: the ids input gives the streamed input's batches after
    the lookups, so training on it is the same computation."""
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
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)


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
