"""AQCL interest codebook: Sinkhorn assignment (Eq. 4) and the codebook loss (Eq. 5).

Q = [q_1..q_T] (T x Dz), used L2-normalised. The codebook is learned *only* by Eq. 5 (the
projections z are under stop-gradient there, and Q is under stop-gradient inside Eq. 3).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

_NEG = -1e9
_EPS = 1e-12

__all__ = ["sinkhorn", "codebook_loss_per_example", "codebook_loss", "Codebook"]


def sinkhorn(scores, n_iters=3, epsilon=0.05, mask=None):
    """Sinkhorn-Knopp solution of the entropic optimal transport of Eq. 4 (SwAV-style).

    ``max_A Tr(A^T Q^T Z) + eps H(A)`` s.t. ``A 1_B = 1/T 1_T`` (each codeword gets an equal
    share) and ``A^T 1_T = 1/B 1_B`` (each example has mass 1/B). The solution is
    ``A = diag(u) exp(S^T/eps) diag(v)``; we alternate the row and column normalisations in log
    space (log-sum-exp, so small eps never overflows), ending with the column step, so the column
    marginal is exact and the row marginal approximate after few iterations (exact in the limit).

    Args:
      scores: [B, T] similarities sim(z_b, q_t) (the function stops gradients through them).
      n_iters: Sinkhorn iterations (SwAV: 3). epsilon: entropy weight (SwAV: 0.05).
      mask: optional [B] bool; masked-out examples get zero mass and the column marginal is
        1/B_valid over the valid ones.
    Returns:
      A: [T, B] float32, non-negative.
    """
    s = tf.stop_gradient(tf.cast(scores, tf.float32))
    log_a = tf.transpose(s) / tf.cast(epsilon, tf.float32)  # [T, B]
    t = tf.cast(tf.shape(log_a)[0], tf.float32)
    if mask is None:
        col_ok = tf.ones_like(log_a, tf.bool)
        b = tf.cast(tf.shape(log_a)[1], tf.float32)
    else:
        m = tf.cast(mask, tf.bool)
        col_ok = tf.broadcast_to(m[None, :], tf.shape(log_a))
        b = tf.maximum(tf.reduce_sum(tf.cast(m, tf.float32)), 1.0)
    neg = _NEG * tf.ones_like(log_a)
    log_a = tf.where(col_ok, log_a, neg)
    for _ in range(int(n_iters)):  # static, small: unrolled (XLA-friendly)
        # rows (codewords) sum to 1/T
        log_a = log_a - tf.reduce_logsumexp(log_a, axis=1, keepdims=True) - tf.math.log(t)
        # columns (examples) sum to 1/B
        log_a = log_a - tf.reduce_logsumexp(log_a, axis=0, keepdims=True) - tf.math.log(b)
        log_a = tf.where(col_ok, log_a, neg)
    return tf.where(col_ok, tf.exp(log_a), tf.zeros_like(log_a))


def codebook_loss_per_example(z, codebook, tau3, n_iters=3, epsilon=0.05, mask=None):
    """Per-example codebook loss (Eq. 5): ``-sum_t a_b^(t) log p_b^(t)`` with a_b the one-hot
    argmax of the Sinkhorn assignment of z_b, ``p_b = softmax_t(sim(sg(z_b), q_t)/tau3)``.
    Gradients reach the codebook only. Returns [B]."""
    zn = tf.stop_gradient(tf.math.l2_normalize(tf.cast(z, tf.float32), -1, _EPS))
    qn = tf.math.l2_normalize(tf.cast(codebook, tf.float32), -1, _EPS)
    scores = tf.matmul(zn, qn, transpose_b=True)  # [B, T]
    a = sinkhorn(scores, n_iters, epsilon, mask)  # [T, B]
    codes = tf.argmax(a, axis=0, output_type=tf.int32)  # [B]
    logp = tf.nn.log_softmax(scores / tf.cast(tau3, tf.float32), axis=-1)
    return -tf.gather(logp, codes, axis=1, batch_dims=1)


def codebook_loss(z, codebook, tau3, n_iters=3, epsilon=0.05, mask=None, reduction="mean"):
    """Codebook loss L_codebook (Eq. 5).

    Args:
      z: [B, Dz] projections (stop-gradient inside). codebook: [T, Dz].
      tau3: temperature. n_iters, epsilon: Sinkhorn settings (Eq. 4).
      mask: optional [B] bool (masked examples take no part in Sinkhorn nor the loss).
      reduction: "mean" (default; batch-size independent) or "sum" (the paper's formula).
    Returns: float32 scalar.
    """
    per = codebook_loss_per_example(z, codebook, tau3, n_iters, epsilon, mask)
    if mask is not None:
        m = tf.cast(mask, tf.bool)
        per = tf.where(m, per, tf.zeros_like(per))
        n = tf.maximum(tf.reduce_sum(tf.cast(m, tf.float32)), 1.0)
    else:
        n = tf.cast(tf.shape(per)[0], tf.float32)
    total = tf.reduce_sum(per)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / n
    raise ValueError(f"unknown reduction {reduction!r}")


class Codebook(keras.layers.Layer):
    """The T x Dz interest codebook Q. ``call()`` returns the L2-normalised codewords."""

    def __init__(self, num_codes=128, dim=64, initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.num_codes = int(num_codes)
        self.dim = int(dim)
        self.initializer = keras.initializers.get(initializer)
        self.codes = self.add_weight(name="codes", shape=(self.num_codes, self.dim),
                                     initializer=self.initializer, trainable=True,
                                     dtype=tf.float32)

    def normalized(self):
        """The L2-normalised codewords [T, Dz] (what the losses use)."""
        return tf.math.l2_normalize(self.codes, axis=-1, epsilon=_EPS)

    def call(self, inputs):
        """Ignores ``inputs`` (Keras needs one) and returns :meth:`normalized`."""
        del inputs
        return self.normalized()

    def get_config(self):
        cfg = super().get_config()
        cfg.update(num_codes=self.num_codes, dim=self.dim,
                   initializer=keras.initializers.serialize(self.initializer))
        return cfg
