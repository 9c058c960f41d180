"""TFDS builder ``mind_small_sample``: MIND behaviours as canonical exposure rows."""
from __future__ import annotations

import tensorflow_datasets as tfds

from pipelines.tfds_builders.canonical_log import CanonicalLogBuilder


class MindSmallSample(CanonicalLogBuilder):
    """MIND (5,000-impression sample of MIND-small train) as canonical log rows:
    189,359 exposure rows (7,542 clicks) + per-user history rows (``is_history=1``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (pipelines.sources.mind reshaping)."}
    SOURCE = "mind"
    REQUIRED_FILES = ("behaviors.tsv",)
    DESCRIPTION = ("MIND news-click impressions as a canonical exposure log: one row per shown "
                   "news (page = impression), trigger = last history click, category / "
                   "subcategory from news.tsv, history clicks as is_history rows. See "
                   "pipelines/sources/mind.py.")
    HOMEPAGE = "https://msnews.github.io/"
    CITATION = """@inproceedings{wu2020mind, title={MIND: A Large-scale Dataset for News
Recommendation}, author={Wu, Fangzhao and others}, booktitle={ACL}, year={2020}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put MIND's `behaviors.tsv` and `news.tsv` (tab separated, no header; e.g. from
MINDsmall_train.zip at https://msnews.github.io/, or the 5,000-row sample in
shared/data/mind_small_sample) directly in the manual dir, and pass it with
`download_config=tfds.download.DownloadConfig(manual_dir=DIR)` (or `--manual_dir=DIR` on the
`tfds build` command line). `news.tsv` is optional (category/subcategory stay empty without it).
MIND is released under the Microsoft Research License Terms (non-commercial research use).
"""
