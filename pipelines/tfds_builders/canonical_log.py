"""Shared base of the canonical-log TFDS builders: features = the canonical fields."""
from __future__ import annotations

import collections
from typing import Dict

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from ctrcore.schema import CANONICAL_FIELDS, USER_PROFILE_PREFIX
from pipelines.sources import get_source
from pipelines.sources.base import DeadLetter


class CanonicalLogBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One ``train`` split holding every canonical row of a source (splitting into
    train/valid/test is the preprocessing job's business). Subclasses set ``SOURCE`` (the
    :func:`pipelines.sources.get_source` name) and ``REQUIRED_FILES`` (checked in the manual
    dir), plus the usual ``VERSION`` / ``MANUAL_DOWNLOAD_INSTRUCTIONS``."""

    SOURCE: str = ""
    REQUIRED_FILES: tuple = ()
    USER_PROFILE: tuple = ()
    DESCRIPTION: str = ""
    HOMEPAGE: str = ""
    CITATION: str = ""

    def _info(self) -> tfds.core.DatasetInfo:
        feats: Dict[str, object] = {}
        for name, (typ, _) in CANONICAL_FIELDS.items():
            feats[name] = tfds.features.Text() if typ is str else tf.int64
        for p in self.USER_PROFILE:
            feats[USER_PROFILE_PREFIX + p] = tfds.features.Text()
        feats["origin"] = tfds.features.Text()  # "<file>:<line>" of the raw log
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION, features=tfds.features.FeaturesDict(feats),
            homepage=self.HOMEPAGE, citation=self.CITATION)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual = dl_manager.manual_dir
        missing = [f for f in self.REQUIRED_FILES if not (manual / f).exists()]
        if missing:
            raise AssertionError(f"{self.name}: {missing} not found in the manual dir {manual}.\n"
                                 + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {"train": self._generate_examples(str(manual))}

    def _generate_examples(self, manual_dir: str):
        from pipelines.canonical import canonicalize

        source = get_source(self.SOURCE, manual_dir)
        kwargs = source.canonical_kwargs()
        dead = collections.Counter()
        names = list(CANONICAL_FIELDS) + [USER_PROFILE_PREFIX + p for p in self.USER_PROFILE]
        for key, raw in enumerate(source.read()):
            row = raw if isinstance(raw, DeadLetter) else canonicalize(raw, **kwargs)
            if isinstance(row, DeadLetter):
                dead[row.reason] += 1
                continue
            ex = {k: row.get(k, "") for k in names}
            ex["origin"] = row["_origin"]
            yield key, ex
        if dead:
            logging.warning("%s: %d dead-letter rows skipped: %s", self.name,
                            sum(dead.values()), dict(dead))
