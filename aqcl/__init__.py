"""aqcl package. Selects Keras 2 (tf-keras) before TensorFlow is imported anywhere."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
