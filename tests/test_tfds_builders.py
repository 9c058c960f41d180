"""TFDS builders for MIND and Amazon Beauty: built from (a slice of) the shared data.

The fast tests build from the first lines of each file; the full builds (~40 s and ~70 s on a
2-core machine) are marked ``slow`` and run with `pytest -m slow`."""
import os
import shutil
from pathlib import Path

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from pipelines.sources import get_source, summarize  # noqa: E402
from pipelines import tfds_builders  # noqa: E402,F401  (registers the builders)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MIND = DATA / "mind_small_sample"
AMAZON = DATA / "amazon_beauty_5core"
slow = pytest.mark.slow  # run with `pytest -m slow`


def _need(path: Path):
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")


def _head(src: Path, dst: Path, n: int):
    with open(src) as fi, open(dst, "w") as fo:
        for i, line in enumerate(fi):
            if i >= n:
                break
            fo.write(line)


def _build(name, manual_dir, data_dir):
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _examples(builder):
    return list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))


def test_mind_small_sample_slice(tmp_path):
    _need(MIND / "behaviors.tsv")
    manual = tmp_path / "manual"
    manual.mkdir()
    _head(MIND / "behaviors.tsv", manual / "behaviors.tsv", 15)
    shutil.copy(MIND / "news.tsv", manual / "news.tsv")
    expected = summarize(get_source("mind", str(manual)).read())
    b = _build("mind_small_sample", manual, tmp_path / "tfds")
    n = b.info.splits["train"].num_examples
    assert n == expected["exposures"] + expected["history"]
    ex = _examples(b)
    assert sum(e["clicked"] for e in ex if not e["is_history"]) == expected["clicks"]
    assert len({e["page_id"] for e in ex if not e["is_history"]}) == 15
    assert all(e["timestamp"] > 1_573_000_000 for e in ex)  # Nov 2019, parsed to unix seconds


def test_amazon_beauty_5core_slice(tmp_path):
    _need(AMAZON / "s3rec_Beauty.txt")
    manual = tmp_path / "manual"
    manual.mkdir()
    for f in ("s3rec_Beauty.txt", "timeweaver_Beauty_time_intervals.txt"):
        _head(AMAZON / f, manual / f, 100)
    shutil.copy(AMAZON / "s3rec_Beauty_item2attributes.json", manual)
    expected = summarize(get_source("amazon_beauty", str(manual)).read())
    b = _build("amazon_beauty_5core", manual, tmp_path / "tfds")
    assert b.info.splits["train"].num_examples == expected["interactions"]
    ex = _examples(b)
    assert {e["clicked"] for e in ex} == {1} and len({e["user_id"] for e in ex}) == 100
    assert all(e["page_id"].decode() == f"{e['user_id'].decode()}@{e['timestamp']}" for e in ex)


def test_missing_manual_files_explain_what_to_do(tmp_path):
    b = tfds.builder("amazon_beauty_5core", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(AssertionError, match="s3rec_Beauty.txt"):
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(tmp_path)))


@slow
@pytest.mark.slow
def test_full_builds_match_source_md(tmp_path):
    _need(MIND / "behaviors.tsv")
    _need(AMAZON / "s3rec_Beauty.txt")
    b = _build("amazon_beauty_5core", AMAZON, tmp_path / "tfds")
    assert b.info.splits["train"].num_examples == 198_502
    b = _build("mind_small_sample", MIND, tmp_path / "tfds")
    history = summarize(get_source("mind", str(MIND)).read())["history"]
    assert b.info.splits["train"].num_examples == 189_359 + history
