"""Benchmarks (``python -m benchmarks.<name>``). tensorflow-recommenders 0.7.7 refuses Keras 3,
so Keras 2 (tf-keras) is selected here, once, before any benchmark imports TensorFlow."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
