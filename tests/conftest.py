"""pytest configuration: Keras 2 (tf-keras) is selected once here, before any test module
imports TensorFlow (tensorflow-recommenders 0.7.7 refuses Keras 3; the packages' own
``__init__`` select it too)."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
