"""CTR training pipeline: CCN (Collaborative Contrastive Network) + AQCL (Auto-Quantized
Contrastive Learning) on TensorFlow 2.21 / tf-keras, preprocessing on Apache Beam, export for
TF Serving."""
from setuptools import find_packages, setup

setup(
    name="ccn-aqcl",
    version="0.1.0",
    description="CTR training pipeline: CCN + AQCL contrastive losses, Beam preprocessing, TF Serving export",
    long_description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["ctrcore*", "pipelines*", "ccn*", "aqcl*", "serving*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-recommenders==0.7.7",
        "tensorflow-datasets>=4.9.10,<5",
        "importlib_resources",  # tensorflow-datasets builders need it at import time
        "tensorflow-serving-api>=2.21,<2.22",
        "apache-beam>=2.77,<2.78",
        "google-crc32c>=1.5",  # Beam WriteToTFRecord needs a crc32c implementation
        "absl-py>=2.1",
        "numpy>=1.26",
        "pandas>=2.2",
        "pyarrow>=16",
        "optuna>=5.0,<6",
        "matplotlib>=3.8",
    ],
    extras_require={
        # hypothesis: property tests; pytest-xdist: the default run on both cores (scripts/test.sh)
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "pytest-xdist>=3.5"],
        "dask": ["apache-beam[dask]>=2.77,<2.78"],  # the preprocessing job on a Dask cluster
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        "dataflow": ["apache-beam[gcp]>=2.77,<2.78"],
        # peers of benchmarks/peer_din.py (DeepCTR) and benchmarks/peer_fuxictr.py (FuxiCTR on CPU torch)
        "bench": ["deepctr==0.9.4", "fuxictr==2.3.10", "torch==2.13.0"],
    },
)
