"""The synthetic generator: determinism, planted structure, CLI."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines import synthetic
from pipelines.sources import get_source, summarize


@pytest.fixture(scope="module")
def frame():
    return synthetic.generate(100_000, seed=0, with_truth=True)


def test_deterministic_for_a_seed():
    a = synthetic.generate(5_000, seed=3)
    pd.testing.assert_frame_equal(a, synthetic.generate(5_000, seed=3))
    b = synthetic.generate(5_000, seed=4)
    assert not a.equals(b)


def test_shape_and_columns(frame):
    assert len(frame) == 100_000
    public = [c for c in frame.columns if not c.startswith("_")]
    assert public == list(synthetic.COLUMNS + synthetic.PROFILE_COLUMNS)
    assert len(synthetic.generate(777, seed=1)) == 777  # exact row count, small sizes too
    sizes = frame.groupby("page_id").size()
    assert sizes.min() >= 5 and sizes.max() <= 30
    assert not frame.duplicated(["page_id", "item_id"]).any()
    assert not (frame.item_id == frame.trigger_item_id).any()  # trigger never shown
    # pages numbered in time order, timestamps increase over a ~30-day window
    page_num = frame.page_id.str[1:].astype(int)
    assert page_num.is_monotonic_increasing and frame.timestamp.is_monotonic_increasing
    assert 25 * 86400 < frame.timestamp.max() - frame.timestamp.min() <= 30 * 86400
    assert (frame.groupby("page_id").position.min() == 0).all()


def test_activeness_60_30_10(frame):
    pages = frame.groupby("user_id").page_id.nunique()
    shares = [(pages <= 2).mean(), ((pages >= 3) & (pages <= 10)).mean(), (pages > 10).mean()]
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=0.05)


def test_click_rate(frame):
    assert 0.05 <= frame.clicked.mean() <= 0.15
    assert 0.05 <= synthetic.generate(3_000, seed=9).clicked.mean() <= 0.15


def test_zipf_popularity(frame):
    counts = frame.item_id.value_counts()
    top = counts.iloc[: max(1, len(counts) // 100)].sum() / counts.sum()
    assert top > 0.08  # top 1 % of items get > 8 % of exposures (uniform would be 1 %)


def test_clicks_follow_latent_affinity(frame):
    assert np.corrcoef(frame._affinity, frame.clicked)[0, 1] > 0.2
    # position bias: top slots are clicked more
    assert frame[frame.position < 3].clicked.mean() > frame[frame.position >= 10].clicked.mean()
    # the trigger matters for trigger-driven entries: same-category-as-trigger items clicked more
    trig_cat = frame.set_index("item_id").category_id.groupby(level=0).first()
    same = frame.category_id.to_numpy() == trig_cat.reindex(frame.trigger_item_id).to_numpy()
    assert frame[same].clicked.mean() > frame[~same].clicked.mean()


def test_co_click_structure(frame):
    """Two clicked items of a page share a category more often than a clicked/unclicked pair."""
    c = frame.groupby(["page_id", "category_id"]).clicked.agg(["sum", "count"])
    c1, c0 = c["sum"], c["count"] - c["sum"]
    p = frame.groupby("page_id").clicked.agg(["sum", "count"])
    p1, p0 = p["sum"], p["count"] - p["sum"]
    same_coclick = (c1 * (c1 - 1) / 2).sum() / (p1 * (p1 - 1) / 2).sum()
    same_mono = (c1 * c0).sum() / (p1 * p0).sum()
    assert same_coclick > 1.2 * same_mono


def test_user_profile_carries_cluster_signal(frame):
    users = frame.drop_duplicates("user_id")
    assert set(users.user_gender) <= set(synthetic.GENDERS)
    assert set(users.user_age) <= set(synthetic.AGES)
    assert (users.groupby("user_id")._cluster.nunique() == 1).all()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_write_and_read_back(tmp_path, fmt):
    df = synthetic.generate(2_000, seed=5)
    path = synthetic.write(df, str(tmp_path / f"log.{fmt}"))
    src = get_source("synthetic", path)
    assert src.user_profile == ("gender", "age") and src.timestamp_format == "unix"
    rows = list(src.read())
    s = summarize(rows)
    assert s["exposures"] == 2_000 and s["dead_letters"] == 0
    assert s["clicks"] == df.clicked.sum() and s["pages"] == df.page_id.nunique()
    assert str(rows[0]["item_id"]) == df.item_id[0] and rows[0]["_origin"].startswith(path)


def test_cli(tmp_path):
    out = tmp_path / "s.csv"
    cmd = [sys.executable, "-m", "pipelines.synthetic", f"--output={out}", "--rows=1500",
           "--seed=2"]
    subprocess.run(cmd, check=True, capture_output=True)
    df = pd.read_csv(out, dtype=str)
    assert len(df) == 1500
    expected = synthetic.generate(1500, seed=2)
    assert (df.item_id.to_numpy() == expected.item_id.to_numpy()).all()
