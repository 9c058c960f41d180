"""Shared core of the CTR pipeline: feature schema, tf.data input, layers, backbones, metrics.

tensorflow-recommenders 0.7.7 refuses Keras 3, so Keras 2 (tf-keras) is selected before
TensorFlow is imported anywhere in this package.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
