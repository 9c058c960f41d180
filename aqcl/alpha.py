"""AQCL alpha-adaptation (Eq. 6): alpha_j = R(L_j) = exp(-w1 (L_j / L_bar)^w2).

alpha is 1 for an empty history (pure quantized CL, support from the interest clusters) and
decreases towards 0 (pure instance CL) as the click history grows; w1, w2 > 0 are searched on
validation logloss (Eq. 7). A constant alpha (the paper's Fig. 5 ablation) is also available.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["alpha_of_length", "constant_alpha", "alpha_for_batch"]


def alpha_of_length(L, l_bar, w1=1.0, w2=1.0):
    """Eq. 6: ``exp(-w1 * (L / l_bar)^w2)``, elementwise, float32 in [0, 1].

    Args:
      L: history lengths (any shape, int or float; negative values are treated as 0).
      l_bar: mean history length over the training examples (> 0; clipped to >= 1e-6).
      w1, w2: positive shape parameters.
    """
    for w in (w1, w2):
        if isinstance(w, (int, float)) and not w > 0:
            raise ValueError("alpha_of_length needs w1 > 0 and w2 > 0")
    x = tf.maximum(tf.cast(L, tf.float32), 0.0) / tf.maximum(tf.cast(l_bar, tf.float32), 1e-6)
    a = tf.exp(-tf.cast(w1, tf.float32) * tf.pow(x, tf.cast(w2, tf.float32)))
    return tf.clip_by_value(a, 0.0, 1.0)


def constant_alpha(value, like):
    """A constant alpha in [0, 1] with the shape of ``like`` (e.g. the history lengths)."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError("constant alpha must be in [0, 1]")
    return tf.fill(tf.shape(like), tf.constant(v, tf.float32))


def alpha_for_batch(L, l_bar, w1=1.0, w2=1.0, const_alpha=None):
    """Per-example alpha: ``constant_alpha(const_alpha)`` if given, else Eq. 6."""
    if const_alpha is not None:
        return constant_alpha(const_alpha, L)
    return alpha_of_length(L, l_bar, w1, w2)
