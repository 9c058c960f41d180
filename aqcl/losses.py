"""Pure AQCL losses (Auto-Quantized Contrastive Learning), Eq. 2 (ICL) and Eq. 3 (AQCL).

TensorFlow, float32, batch-vectorised, static shapes with masks, XLA-compatible. All
similarities are cosine similarities (``sim`` in the paper), all losses are computed in log
space (log-sum-exp). Readings (see ``docs/method.md``):

* In-batch negatives Z-: by default the *other examples' augmented views*
  ``{z+_k : k != j}`` (so ``{z+} u Z-`` is the whole column of augmented views, the one-way
  InfoNCE of CPC/MoCo); ``negatives="both"`` adds the other examples' un-augmented ``z_k``
  (SimCLR's NT-Xent negatives, without the symmetric term).
* Examples outside ``mask`` are neither anchors nor negatives.
* Inside Eq. 3 the codebook is under stop-gradient (Q is learned only by Eq. 5).
"""
from __future__ import annotations

import tensorflow as tf

_NEG = -1e9
_EPS = 1e-12

__all__ = ["cosine_matrix", "icl_loss_per_example", "icl_loss", "aqcl_loss_per_example",
           "aqcl_loss", "masked_mean"]


def masked_mean(values, mask=None):
    """Mean of ``values`` [B] over ``mask`` [B] (bool or 0/1); 0 if the mask is empty."""
    values = tf.cast(values, tf.float32)
    if mask is None:
        return tf.reduce_mean(values)
    mask = tf.cast(mask, tf.bool)
    num = tf.reduce_sum(tf.where(mask, values, tf.zeros_like(values)))
    return num / tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)


def cosine_matrix(a, b):
    """[N, D] x [M, D] -> [N, M] cosine similarities."""
    a = tf.math.l2_normalize(tf.cast(a, tf.float32), -1, _EPS)
    b = tf.math.l2_normalize(tf.cast(b, tf.float32), -1, _EPS)
    return tf.matmul(a, b, transpose_b=True)


def _instance_logits(z, z_pos, tau, negatives, mask):
    """Logits sim(z_j, z')/tau over {z+_j} u Z-_j and their validity mask.

    Returns (pos_logit [B], logits [B, N], valid [B, N]) where ``logits`` contains the positive
    (diagonal of the first block) and all negatives; ``valid`` is None when every entry is valid
    (no mask, ``negatives="views"``): the callers then skip the masking (same values, fewer
    ``[B, N]`` operations).
    """
    z = tf.cast(z, tf.float32)
    z_pos = tf.cast(z_pos, tf.float32)
    tau = tf.cast(tau, tf.float32)
    sim_pp = cosine_matrix(z, z_pos) / tau  # [B, B]: row j = sim(z_j, z+_k)
    pos_logit = tf.linalg.diag_part(sim_pp)
    if mask is None and negatives == "views":
        return pos_logit, sim_pp, None
    b = tf.shape(z)[0]
    eye = tf.eye(b, dtype=tf.bool)
    if mask is None:
        row_ok = tf.ones([b], tf.bool)
    else:
        row_ok = tf.cast(mask, tf.bool)
    col_ok = tf.broadcast_to(row_ok[None, :], [b, b])
    logits = [sim_pp]
    valid = [tf.logical_or(eye, col_ok)]  # the diagonal (own positive) is always there
    if negatives == "both":
        sim_zz = cosine_matrix(z, z) / tau
        logits.append(sim_zz)
        valid.append(tf.logical_and(tf.logical_not(eye), col_ok))  # never z_j itself
    elif negatives != "views":
        raise ValueError(f"unknown negatives {negatives!r}")
    return pos_logit, tf.concat(logits, 1), tf.concat(valid, 1)


def icl_loss_per_example(z, z_pos, tau, negatives="views", mask=None):
    """Per-example ICL loss (Eq. 2):
    ``-log exp(sim(z,z+)/tau) / sum_{z' in {z+} u Z-} exp(sim(z,z')/tau)``. Returns [B]."""
    pos_logit, logits, valid = _instance_logits(z, z_pos, tau, negatives, mask)
    lse = tf.reduce_logsumexp(_masked(logits, valid), axis=-1)
    return lse - pos_logit


def _masked(logits, valid):
    """``logits`` with the entries outside ``valid`` set to -1e9 (``valid`` None: all valid)."""
    if valid is None:
        return logits
    return tf.where(valid, logits, _NEG * tf.ones_like(logits))


def icl_loss(z, z_pos, tau, negatives="views", mask=None):
    """Instance-level contrastive loss L_ICL (Eq. 2), averaged over ``mask``.

    Args:
      z: [B, Dz] projections of the original inputs; z_pos: [B, Dz] of the augmented inputs.
      tau: temperature.
      negatives: "views" (default): Z-_j = {z+_k : k != j, mask_k};
        "both": Z-_j = {z+_k, z_k : k != j, mask_k}.
      mask: optional [B] bool; masked-out examples are neither anchors nor negatives.
    Returns: float32 scalar.
    """
    return masked_mean(icl_loss_per_example(z, z_pos, tau, negatives, mask), mask)


def aqcl_loss_per_example(z, z_pos, codebook, alpha, tau1, tau2, top_k, negatives="views",
                          mask=None, stop_gradient_codebook=True):
    """Per-example AQCL loss (Eq. 3), in log space:

    ``log num = (1-alpha) sim(z,z+)/tau1 + alpha * LSE_{q in Q+} sim(z,q)/tau2``
    ``log den = LSE( {sim(z,z')/tau1 : z' in {z+} u Z-} u {sim(z,q)/tau2 : q in Q} )``
    ``loss = log den - log num``, Q+ = the ``top_k`` codewords with the highest cosine to z.

    Args:
      z, z_pos: [B, Dz]. codebook: [T, Dz] (normalised here; under stop-gradient by default).
      alpha: scalar or [B] in [0, 1] (Eq. 6, per example).
      tau1, tau2: temperatures for instances / codewords. top_k: K (static int).
      negatives, mask: as in :func:`icl_loss`.
    Returns: [B] float32.
    """
    pos_logit, logits, valid = _instance_logits(z, z_pos, tau1, negatives, mask)
    q = tf.cast(codebook, tf.float32)
    if stop_gradient_codebook:
        q = tf.stop_gradient(q)
    code_logits = cosine_matrix(z, q) / tf.cast(tau2, tf.float32)  # [B, T]
    top = tf.math.top_k(code_logits, k=int(top_k), sorted=False).values  # Q+
    alpha = tf.cast(alpha, tf.float32)
    alpha = tf.broadcast_to(alpha, tf.shape(pos_logit))
    log_num = (1.0 - alpha) * pos_logit + alpha * tf.reduce_logsumexp(top, axis=-1)
    all_logits = tf.concat([_masked(logits, valid), code_logits], 1)
    log_den = tf.reduce_logsumexp(all_logits, axis=-1)
    return log_den - log_num


def aqcl_loss(z, z_pos, codebook, alpha, tau1, tau2, top_k, mask=None, negatives="views",
              stop_gradient_codebook=True):
    """Auto-Quantized Contrastive loss L_AQCL (Eq. 3), averaged over ``mask``.

    See :func:`aqcl_loss_per_example`. With alpha = 0 it is Eq. 2 with the T codewords added
    to the denominator ("approximately ICL"); with alpha = 1 it is the quantized CL.
    Returns a float32 scalar (0 if the mask is empty).
    """
    per = aqcl_loss_per_example(z, z_pos, codebook, alpha, tau1, tau2, top_k, negatives, mask,
                                stop_gradient_codebook)
    return masked_mean(per, mask)
