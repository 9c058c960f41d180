"""tensorflow-datasets builders for the built-in real logs (manual download).

Importing this package registers ``mind_small_sample`` and ``amazon_beauty_5core``::

    import tensorflow_datasets as tfds
    import pipelines.tfds_builders  # noqa: F401 (registers the builders)
    b = tfds.builder("mind_small_sample", data_dir=DATA_DIR)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=MIND_DIR))
    ds = b.as_dataset(split="train")

Examples are typed canonical log rows (:data:`ctrcore.schema.CANONICAL_FIELDS` + ``origin``):
the builders read through :mod:`pipelines.sources` and coerce with
:func:`pipelines.canonical.canonicalize`, so there is no parsing of their own.
"""
from pipelines.tfds_builders.amazon_beauty_5core import AmazonBeauty5core
from pipelines.tfds_builders.mind_small_sample import MindSmallSample

__all__ = ["AmazonBeauty5core", "MindSmallSample"]
