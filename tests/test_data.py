"""ctrcore.data + ctrcore.testing: the fake dataset parses per the spec, deterministically."""
import os

import ctrcore  # noqa: F401  (sets TF_USE_LEGACY_KERAS)
import numpy as np
import pytest
import tensorflow as tf

from ctrcore import data, schema, testing


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fake"))
    testing.write_fake_dataset(d, n_examples=600, seed=3,
                               spec_config=schema.SpecConfig(short_len=5, long_len=12, max_context=4,
                                                             user_profile=("gender",)))
    return d


def test_files_and_stats(fake_dir):
    names = set(os.listdir(fake_dir))
    for split in ("train", "valid", "test"):
        assert f"{split}-00000-of-00001.tfrecord.gz" in names
    spec = schema.load_spec(fake_dir)
    for v in spec.vocabularies:
        assert len(spec.read_vocab(v)) > 0
    stats = schema.load_stats(fake_dir)
    for k in ("rows_read", "rows_used", "rows_dead_letter", "dead_letter_reasons", "negatives_sampled",
              "pages", "examples", "avg_clicked_per_page", "avg_unclicked_per_page", "p_s_plus",
              "p_s_minus", "mean_history_length", "activeness_thresholds", "source", "seed", "split"):
        assert k in stats, k
    assert abs(stats["p_s_plus"] + stats["p_s_minus"] - 1) < 1e-9
    t1, t2 = stats["activeness_thresholds"]
    assert t1 < t2


def test_parse_shapes_and_dtypes(fake_dir):
    spec = schema.load_spec(fake_dir)
    ds = data.make_dataset(fake_dir, "train", 16, shuffle=False, deterministic=True)
    batch = next(iter(ds))
    assert set(batch) == set(spec.features)
    dt = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
    for name, fd in spec.features.items():
        assert batch[name].dtype == dt[fd.dtype], name
        assert batch[name].shape.as_list() == [16] + fd.shape, name
    n = sum(int(b["label"].shape[0]) for b in ds)
    assert n == schema.load_stats(fake_dir)["examples"]["train"]
    # context labels consistent with padding
    ctx = batch["context_item_ids"].numpy()
    lab = batch["context_labels"].numpy()
    assert ((ctx == b"") == (lab < 0)).all()


def test_roles_and_serving_spec(fake_dir):
    spec = schema.load_spec(fake_dir)
    ds = data.make_dataset(fake_dir, "valid", 8, roles=("serving",), shuffle=False)
    assert set(next(iter(ds))) == set(spec.serving_features)
    assert set(data.serving_parse_spec(spec)) == set(spec.serving_features)


def test_deterministic_reproducible(fake_dir):
    def ids():
        ds = data.make_dataset(fake_dir, "train", 32, shuffle=True, deterministic=True, seed=7)
        return np.concatenate([b["item_id"].numpy() for b in ds])

    a, b = ids(), ids()
    assert (a == b).all()
    unshuffled = np.concatenate([b["item_id"].numpy() for b in data.make_dataset(
        fake_dir, "train", 32, shuffle=False, deterministic=True)])
    assert not (a == unshuffled).all() and sorted(a) == sorted(unshuffled)


def test_repeat_cache_static_batch(fake_dir):
    ds = data.make_dataset(fake_dir, "valid", 8, repeat=True, cache=True, shuffle=False)
    assert ds.element_spec["label"].shape.as_list() == [8]
    for _, b in zip(range(50), ds):
        assert b["label"].shape[0] == 8


def test_fake_dataset_is_deterministic(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    testing.write_fake_dataset(a, n_examples=200, seed=1)
    testing.write_fake_dataset(b, n_examples=200, seed=1)
    for f in ("stats.json", "feature_spec.json", "vocab/item_id.txt"):
        assert open(os.path.join(a, f)).read() == open(os.path.join(b, f)).read()
    ra = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(a, "train-00000-of-00001.tfrecord.gz"), "GZIP")]
    rb = [r.numpy() for r in tf.data.TFRecordDataset(os.path.join(b, "train-00000-of-00001.tfrecord.gz"), "GZIP")]
    assert ra == rb


def test_feature_subset(fake_dir):
    spec = schema.load_spec(fake_dir)
    names = ["item_id", "short_item_ids", "label"]
    batch = next(iter(data.make_dataset(fake_dir, "train", 8, shuffle=False, deterministic=True,
                                        features=names)))
    assert set(batch) == set(names)
    full = next(iter(data.make_dataset(fake_dir, "train", 8, shuffle=False, deterministic=True)))
    for n in names:  # same records, same values: only the parse is narrower
        np.testing.assert_array_equal(batch[n].numpy(), full[n].numpy())
    with pytest.raises(KeyError, match="not_a_feature"):
        data.make_dataset(fake_dir, "train", 8, features=["item_id", "not_a_feature"])
    assert set(data.parse_spec(spec, names=names)) == set(names)


def test_in_memory_columns_and_epochs_are_permutations(fake_dir):
    names = ["item_id", "short_item_ids", "label"]
    cols = data.load_columns(fake_dir, "train", features=names, batch_size=64)
    n = len(cols["label"])
    assert set(cols) == set(names) and cols["short_item_ids"].shape == (n, 5)
    streamed = next(iter(data.make_dataset(fake_dir, "train", n + 10, shuffle=False, deterministic=True,
                                           features=names)))
    for k in names:  # file order, same values as the streamed input
        np.testing.assert_array_equal(cols[k], streamed[k].numpy())
    # a row key: (item, label, first history item) counted per pass
    keys = [b"|".join([a, str(l).encode(), s[0]]) for a, l, s in
            zip(cols["item_id"], cols["label"], cols["short_item_ids"])]
    bs = 25
    ds = data.in_memory_dataset(cols, bs, seed=4, repeat=False)
    got = []
    for b in ds:
        got += [b"|".join([a, str(l).encode(), s[0]]) for a, l, s in
                zip(b["item_id"].numpy(), b["label"].numpy(), b["short_item_ids"].numpy())]
    assert sorted(got) == sorted(keys)  # every row exactly once per pass
    assert got != keys  # shuffled
    # repeated: full batches, each pass a different permutation, reproducible from the seed
    def passes(seed):
        it = iter(data.in_memory_dataset(cols, n, seed=seed))
        return [next(it)["label"].numpy() for _ in range(2)], it

    (p1, p2), _ = passes(7)
    (q1, _), _ = passes(7)
    np.testing.assert_array_equal(p1, q1)
    assert sorted(p1.tolist()) == sorted(p2.tolist()) == sorted(cols["label"].tolist())
    it = iter(data.in_memory_dataset({k: v for k, v in cols.items()}, n, seed=7))
    a, b = next(it)["item_id"].numpy(), next(it)["item_id"].numpy()
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="same"):
        data.in_memory_dataset({"a": np.zeros(3), "b": np.zeros(4)}, 2)


def test_in_memory_stream_resumes_at_a_global_step():
    """start_step = k: the same batches as the full stream from its k-th on, across pass
    boundaries (a resumed run trains on what the interrupted one would have trained on next)."""
    cols = {"x": np.arange(23, dtype=np.int64), "y": np.arange(23, dtype=np.float32) * 2}
    nb = 23 // 5  # 4 full batches per pass
    full = [b["x"].numpy() for b in data.in_memory_dataset(cols, 5, seed=3).take(3 * nb)]
    for k in (0, 1, nb - 1, nb, nb + 2, 2 * nb + 3):
        got = [b["x"].numpy() for b in data.in_memory_dataset(cols, 5, seed=3, start_step=k).take(3 * nb - k)]
        assert len(got) == 3 * nb - k
        for a, b in zip(got, full[k:]):
            np.testing.assert_array_equal(a, b)
    b = next(iter(data.in_memory_dataset(cols, 5, seed=3, start_step=6)))
    np.testing.assert_array_equal(b["y"].numpy(), b["x"].numpy() * 2)  # rows stay whole
    with pytest.raises(ValueError, match="start_step needs repeat"):
        data.in_memory_dataset(cols, 5, repeat=False, start_step=2)
