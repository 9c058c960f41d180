"""TFDS builder ``amazon_beauty_5core``: Amazon Beauty 5-core reviews as canonical rows."""
from __future__ import annotations

import tensorflow_datasets as tfds

from pipelines.sources.amazon_beauty import ATTRIBUTES, INTERVALS, SEQUENCES
from pipelines.tfds_builders.canonical_log import CanonicalLogBuilder


class AmazonBeauty5core(CanonicalLogBuilder):
    """Amazon Beauty 5-core (22,363 users, 12,101 items, 198,502 reviews), positives only."""

    name = "amazon_beauty_5core"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (pipelines.sources.amazon_beauty reshaping)."}
    SOURCE = "amazon_beauty"
    REQUIRED_FILES = (SEQUENCES, INTERVALS)
    DESCRIPTION = ("Amazon Beauty 5-core reviews as a positives-only canonical log: one row "
                   "(and page) per review, relative timestamps, category = most specific "
                   "sub-category attribute, seller = brand attribute. See "
                   "pipelines/sources/amazon_beauty.py.")
    HOMEPAGE = "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon/links.html"
    CITATION = """@inproceedings{mcauley2015image, title={Image-based recommendations on styles
and substitutes}, author={McAuley, Julian and others}, booktitle={SIGIR}, year={2015}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put these files directly in the manual dir (see shared/data/amazon_beauty_5core/SOURCE.md):
  {SEQUENCES}  <- aHuiWang/CIKM2020-S3Rec data/Beauty.txt
  {INTERVALS}  <- AraVio/TimeWeaver data/Beauty.txt
  {ATTRIBUTES}  <- aHuiWang/CIKM2020-S3Rec data/Beauty_item2attributes.json (optional)
and pass it with `download_config=tfds.download.DownloadConfig(manual_dir=DIR)` (or
`--manual_dir=DIR` on the `tfds build` command line).
"""
