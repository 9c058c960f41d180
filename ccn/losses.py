"""Pure CCN losses (Collaborative Contrastive Network, Gao et al.), Eq. 5-12.

All functions are TensorFlow, float32, vectorised over the batch (no Python loops over
examples), use static shapes and masks (no boolean_mask / ragged) and run under
``tf.function(jit_compile=True)``.

Reading of the paper (details and alternatives in ``docs/method.md``):

* The collaborative degree ``s`` (Eq. 4) is a D-dimensional vector per (user, trigger, item).
* Eq. 5-6 and Eq. 8 need one scalar per context item. We use the *collaborative similarity*
  ``r'_j = sim(s_target, s'_j)`` (cosine by default) and, for the target's own term in Eq. 5,
  ``r_i = sim(s_target, s_target)`` (= 1 for the cosine). Eq. 5 then is an InfoNCE-style term
  with a fixed anchor that pushes the target's collaborative degree away from the
  non-collaborative (mono-click) context items.
* Eq. 7 is the cosine similarity between the vectors ``exp(s_target/xi)`` and
  ``sum_j w+_j exp(s'_j/xi)`` (exp elementwise, on the unit-normalised ``s`` by default); the
  weights w+ (Eq. 8) are a softmax over S+
  of ``-r'_j/xi`` (option ``weighting="elementwise"``: per-dimension softmax of ``-s'_jd/xi``).
* Context padding has label ``LABEL_PAD`` (-1). Padded slots never change a loss (they are
  masked with ``tf.where`` before every reduction, so their gradient is exactly zero). An
  example whose S- (resp. S+) is empty contributes nothing to that term and is excluded from
  that term's mean; a batch without any such example gives 0 (finite, zero gradients).
"""
from __future__ import annotations

import tensorflow as tf

_NEG = -1e9  # "minus infinity" for masked logits (finite: no inf - inf = NaN)
_EPS = 1e-12

__all__ = [
    "collaborative_similarity",
    "context_masks",
    "repulsion_loss_per_example",
    "repulsion_loss",
    "attraction_loss_per_example",
    "attraction_loss",
    "p_s_plus",
    "p_s_minus",
    "attraction_ratio",
    "ccn_total",
    "ccn_losses",
    "masked_mean",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
#: how a per-example CCN term becomes the batch's: "valid" = mean over the examples whose set
#: (S- or S+) is non-empty; "batch" = sum over those / B, Eq. 12's 1/|D| (docs/method.md 1.2)
REDUCTIONS = ("valid", "batch")


def masked_mean(values, valid, reduction="valid"):
    """``values`` [B] summed where ``valid`` [B] is true, over the number of valid examples
    (``reduction="valid"``; 0 if none) or over B (``"batch"``, Eq. 12's mean over the data:
    examples without the set count as 0).

    The masked-out values are replaced by 0 with ``tf.where`` (both branches are finite in every
    caller), so no NaN can leak into the gradient.
    """
    values = tf.cast(values, tf.float32)
    valid = tf.cast(valid, tf.bool)
    num = tf.reduce_sum(tf.where(valid, values, tf.zeros_like(values)))
    if reduction == "batch":
        den = tf.cast(tf.size(valid), tf.float32)
    elif reduction == "valid":
        den = tf.reduce_sum(tf.cast(valid, tf.float32))
    else:
        raise ValueError(f"reduction {reduction!r}: one of {list(REDUCTIONS)}")
    return num / tf.maximum(den, 1.0)


def context_masks(context_labels, target_label):
    """Positive / negative set masks (Fig. 2 of the paper).

    Args:
      context_labels: [B, C] int (or float) labels of the in-page context items, ``-1`` = padding.
      target_label: [B] label of the target item (0/1).
    Returns:
      (pos_mask, neg_mask): [B, C] bool. ``pos`` = S+ (same label as the target: co-click or
      co-non-click), ``neg`` = S- (different label: mono-click). Padding is in neither.
    """
    ctx = tf.cast(tf.round(tf.cast(context_labels, tf.float32)), tf.int32)
    tgt = tf.cast(tf.round(tf.cast(target_label, tf.float32)), tf.int32)
    tgt = tf.reshape(tgt, [-1, 1])
    valid = ctx >= 0  # ctrcore.schema.LABEL_PAD = -1
    pos = tf.logical_and(valid, tf.equal(ctx, tgt))
    neg = tf.logical_and(valid, tf.not_equal(ctx, tgt))
    return pos, neg


def collaborative_similarity(s_target, s_context, similarity="cosine"):
    """Scalar scores used by Eq. 5, 6 and 8.

    Args:
      s_target: [B, D] collaborative degree of the target item (Eq. 4).
      s_context: [B, C, D] collaborative degrees of the context items.
      similarity: "cosine" (default) -> ``cos(s_target, s'_j)`` in [-1, 1];
        "dot" -> ``<s_target, s'_j>``; "scalar" -> D must be 1 and the score is the
        collaborative degree itself (``s_i``, ``s'_j`` read as scalars, the literal reading).
    Returns:
      (r_self [B], r_ctx [B, C]): the target's own score (``s_i`` in Eq. 5) and the context
      items' scores (``s'_i`` in Eq. 5, 6, 8).
    """
    return _Parts(s_target, s_context, None, None, similarity).scores()


class _Parts:
    """What both CCN terms compute from the same inputs, each computed once (lazily): the set
    masks, the scalar scores and the unit collaborative degrees. :func:`ccn_losses` shares one
    between L_S- and L_S+ (same values as the two functions called separately; the gradient
    then flows through one normalisation instead of three)."""

    def __init__(self, s_target, s_context, context_labels, target_label, similarity):
        self.s_target = tf.cast(s_target, tf.float32)
        self.s_context = tf.cast(s_context, tf.float32)
        self.context_labels, self.target_label = context_labels, target_label
        self.similarity = similarity
        self._masks = self._scores = self._units = None

    def masks(self):
        """``(pos, neg)`` of :func:`context_masks`."""
        if self._masks is None:
            self._masks = context_masks(self.context_labels, self.target_label)
        return self._masks

    def units(self):
        """``(t, c)``: ``s_target``, ``s_context`` l2-normalised."""
        if self._units is None:
            self._units = (tf.math.l2_normalize(self.s_target, axis=-1, epsilon=_EPS),
                           tf.math.l2_normalize(self.s_context, axis=-1, epsilon=_EPS))
        return self._units

    def scores(self):
        """``(r_self, r_ctx)`` of :func:`collaborative_similarity`."""
        if self._scores is None:
            self._scores = _similarity(self, self.similarity)
        return self._scores


def _similarity(parts, similarity):
    s_target, s_context = parts.s_target, parts.s_context
    if similarity == "cosine":
        t, c = parts.units()
        r_ctx = tf.matmul(c, t[:, :, None])[..., 0]  # [B, C, D] x [B, D, 1]
        r_self = tf.reduce_sum(t * t, axis=-1)  # 1 (0 only for an all-zero s_target)
    elif similarity == "dot":
        r_ctx = tf.matmul(s_context, s_target[:, :, None])[..., 0]
        r_self = tf.reduce_sum(s_target * s_target, axis=-1)
    elif similarity == "scalar":
        if s_target.shape[-1] is not None and s_target.shape[-1] != 1:
            raise ValueError("similarity='scalar' needs a 1-dimensional collaborative degree")
        r_ctx = s_context[..., 0]
        r_self = s_target[..., 0]
    else:
        raise ValueError(f"unknown similarity {similarity!r}")
    return r_self, r_ctx


def _masked_log_softmax(logits, mask):
    """log softmax over the last axis restricted to ``mask`` (masked entries -> _NEG)."""
    x = tf.where(mask, logits, _NEG * tf.ones_like(logits))
    return tf.where(mask, tf.nn.log_softmax(x, axis=-1), _NEG * tf.ones_like(logits))


def _masked_logsumexp(x, mask, axis):
    x = tf.where(mask, x, _NEG * tf.ones_like(x))
    return tf.reduce_logsumexp(x, axis=axis)


# ---------------------------------------------------------------------------------------------
# Eq. 5-6: repulsion loss
# ---------------------------------------------------------------------------------------------
def repulsion_loss_per_example(s_target, s_context, context_labels, target_label, tau=0.5,
                               similarity="cosine", stop_gradient_weights=False):
    """Per-example repulsion loss, CCN Eq. 5-6.

    ``l_i = -log( e^{r_i/tau} / (e^{r_i/tau} + M_i * sum_{j in S-_i} w-_j e^{r'_j/tau}) )``,
    ``w-_j = softmax_{j in S-_i}(-r'_j/tau)`` (Eq. 6), ``M_i = |S-_i|``; ``r`` are the scalar
    scores of :func:`collaborative_similarity`. Computed with log-sum-exp:
    ``l_i = softplus(log M_i + LSE_j(log w-_j + r'_j/tau) - r_i/tau)``.

    Args:
      s_target: [B, D]; s_context: [B, C, D]; context_labels: [B, C] (-1 = padding);
      target_label: [B]; tau: temperature.
      similarity: see :func:`collaborative_similarity`.
      stop_gradient_weights: treat the importance weights w- as constants (default False: the
        literal formula, differentiated through the weights).
    Returns:
      (loss [B] float32, valid [B] bool): ``valid`` = S-_i non-empty; ``loss`` is 0 where not.
    """
    return _repulsion(_Parts(s_target, s_context, context_labels, target_label, similarity), tau,
                      stop_gradient_weights)


def _repulsion(parts, tau, stop_gradient_weights):
    """:func:`repulsion_loss_per_example` from the shared :class:`_Parts`."""
    _, neg = parts.masks()
    r_self, r_ctx = parts.scores()
    tau = tf.cast(tau, tf.float32)
    log_w = _masked_log_softmax(-r_ctx / tau, neg)  # Eq. 6
    if stop_gradient_weights:
        log_w = tf.stop_gradient(log_w)
    m = tf.reduce_sum(tf.cast(neg, tf.float32), axis=-1)  # M_i
    valid = m > 0
    log_neg = tf.math.log(tf.maximum(m, 1.0)) + _masked_logsumexp(log_w + r_ctx / tau, neg, -1)
    # -log(a / (a + b)) = log(1 + b/a) = softplus(log b - log a)
    loss = tf.nn.softplus(log_neg - r_self / tau)
    return tf.where(valid, loss, tf.zeros_like(loss)), valid


def repulsion_loss(s_target, s_context, context_labels, target_label, tau=0.5,
                   similarity="cosine", stop_gradient_weights=False, reduction="valid"):
    """CCN repulsion loss L_{S-} (Eq. 5-6), mean over examples with a non-empty S-
    (``reduction="valid"``) or over the batch (``"batch"``, Eq. 12; :func:`masked_mean`).

    See :func:`repulsion_loss_per_example` for the arguments. Returns a float32 scalar
    (0 if no example of the batch has a negative context item).
    """
    loss, valid = repulsion_loss_per_example(s_target, s_context, context_labels, target_label,
                                             tau, similarity, stop_gradient_weights)
    return masked_mean(loss, valid, reduction)


# ---------------------------------------------------------------------------------------------
# Eq. 7-8: attraction loss
# ---------------------------------------------------------------------------------------------
def _log_exp_vector(log_v):
    """exp(log_v - max_d log_v): a positive vector with the same direction as exp(log_v)."""
    return tf.exp(log_v - tf.stop_gradient(tf.reduce_max(log_v, axis=-1, keepdims=True)))


def attraction_loss_per_example(s_target, s_context, context_labels, target_label, xi=0.8,
                                similarity="cosine", weighting="similarity",
                                stop_gradient_weights=False, normalize=True,
                                cos_floor=-1.0 + 1e-6, form="vector_cosine", exponent_scale="unit"):
    """Per-example attraction loss, CCN Eq. 7-8.

    ``form`` selects the reading of Eq. 7's ``cos`` (docs/method.md 1.4):

    * ``"vector_cosine"`` (default): the cosine similarity of the two D-vectors below.
    * ``"angle"``: ``cos`` is the periodic cosine *function* of an angle, as the paper's remark
      "since the cos function is periodic, we constrain the range of e^{s/xi} to [0, pi] ... to
      ensure monotonicity" describes: per dimension, ``theta_d = e^{s_d/xi}`` (on the unit-
      normalised ``s``, so ``theta_d`` lies in ``[e^{-1/xi}, e^{1/xi}]``, within ``(0, pi]`` for
      ``xi >= 1/ln(pi)``) and ``theta+_d = sum_j w+_j e^{s'_jd/xi}``;
      ``l_i = -log( mean_d cos(theta_d - theta+_d) / 2 + 1/2 )``. For a scalar ``s`` (D = 1)
      this is Eq. 7 literally. Unlike the vector cosine of two all-positive vectors (which
      stays near 1, so the loss and its gradient stay near 0), it is 0 only when the target's
      angles equal the positives' weighted angles and grows to ``log 2`` at a quarter turn.

    ``l_i = -log( cos(e^{s_i/xi}, sum_{j in S+_i} w+_j e^{s'_j/xi}) / 2 + 1/2 )`` with the
    exponentials taken elementwise on the D-dim collaborative degrees and ``cos`` the cosine
    similarity of the two D-vectors. The weights (Eq. 8):

    * ``weighting="similarity"`` (default): ``w+_j = softmax_{j in S+}(-r'_j/xi)`` with
      ``r'_j = sim(s_target, s'_j)`` (the same scalar as Eq. 5-6): the positives that are
      already close to the target get less weight (no self-reinforcement, Sec. 2.3).
    * ``weighting="elementwise"``: per dimension d, ``w+_jd = softmax_j(-s'_jd/xi)``; the
      aggregate is then the per-dimension harmonic mean of ``e^{s'_jd/xi}``.

    ``normalize=True`` (default): the exponent uses the direction ``s/||s||`` of each
    collaborative degree (as the cosine of Eq. 5-6 does), so every entry of ``e^{s/xi}`` lies in
    ``[e^{-1/xi}, e^{1/xi}]`` (within ``(0, pi]`` for ``xi >= 1/ln(pi) ~ 0.87``: the paper's
    "range [0, pi]" remark) and the loss does not vanish when ``||s||`` is small (with raw ``s``
    near 0 all ``e^{s/xi}`` are ~ the all-ones vector, cos ~ 1 and the gradient ~ 0).
    ``normalize=False``: raw ``s``. ``exponent_scale="rms"`` (with ``normalize``) multiplies the
    unit direction by ``sqrt(D)``, so its components have unit RMS instead of ``1/sqrt(D)``: the
    entries of ``e^{s/xi}`` then spread over ``~[e^{-1/xi}, e^{1/xi}]`` (the paper's ``[0, pi]``
    for xi ~ 0.8-0.9) whatever D is, instead of crowding near 1 for D = 16.

    Numerics: both vectors are formed in log space and shifted by their max before ``exp``
    (cosine is invariant to a positive rescaling of either vector), so ``e^{s/xi}`` never
    overflows; the cosine is clipped to ``[cos_floor, 1]`` so ``log`` never sees 0.

    Returns:
      (loss [B] float32, valid [B] bool): ``valid`` = S+_i non-empty; ``loss`` is 0 where not.
    """
    return _attraction(_Parts(s_target, s_context, context_labels, target_label, similarity), xi,
                       weighting, stop_gradient_weights, normalize, cos_floor, form,
                       exponent_scale)


def _attraction(parts, xi, weighting, stop_gradient_weights, normalize, cos_floor, form,
                exponent_scale):
    """:func:`attraction_loss_per_example` from the shared :class:`_Parts`."""
    pos, _ = parts.masks()
    s_target, s_context = parts.s_target, parts.s_context
    xi = tf.cast(xi, tf.float32)
    valid = tf.reduce_any(pos, axis=-1)
    pos3 = tf.broadcast_to(pos[:, :, None], tf.shape(s_context))
    _, r_ctx = parts.scores()
    if normalize:
        s_target, s_context = parts.units()
        if exponent_scale == "rms":
            root_d = tf.sqrt(tf.cast(tf.shape(s_target)[-1], tf.float32))
            s_target, s_context = s_target * root_d, s_context * root_d
        elif exponent_scale != "unit":
            raise ValueError(f"unknown exponent_scale {exponent_scale!r} (unit | rms)")
    if weighting == "similarity":
        log_w = _masked_log_softmax(-r_ctx / xi, pos)[:, :, None]  # Eq. 8, [B, C, 1]
    elif weighting == "elementwise":
        log_w = tf.where(pos3, -s_context / xi, _NEG * tf.ones_like(s_context))
        log_w = tf.where(pos3, tf.nn.log_softmax(log_w, axis=1), _NEG * tf.ones_like(s_context))
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    if stop_gradient_weights:
        log_w = tf.stop_gradient(log_w)
    # log of sum_j w_j e^{s'_j/xi}, per dimension: [B, D]
    log_agg = _masked_logsumexp(log_w + s_context / xi, pos3, axis=1)
    if form == "angle":
        # angles theta = e^{s/xi} (bounded: normalised s, or raw s clipped to |s| <= 1 via
        # the LSE of at most e^{1/xi} terms); an empty S+ gives log_agg = _NEG -> masked below
        theta = tf.exp(tf.clip_by_value(s_target / xi, -50.0, 50.0))
        theta_pos = tf.exp(tf.clip_by_value(log_agg, -50.0, 50.0))
        cos = tf.reduce_mean(tf.cos(theta - theta_pos), axis=-1)
        cos = tf.clip_by_value(cos, cos_floor, 1.0)
        loss = -tf.math.log(0.5 * cos + 0.5)
        return tf.where(valid, loss, tf.zeros_like(loss)), valid
    if form != "vector_cosine":
        raise ValueError(f"unknown attraction form {form!r} (vector_cosine | angle)")
    u = _log_exp_vector(s_target / xi)
    v = _log_exp_vector(log_agg)
    cos = tf.reduce_sum(tf.math.l2_normalize(u, -1, _EPS) * tf.math.l2_normalize(v, -1, _EPS), -1)
    cos = tf.clip_by_value(cos, cos_floor, 1.0)
    loss = -tf.math.log(0.5 * cos + 0.5)
    return tf.where(valid, loss, tf.zeros_like(loss)), valid


def attraction_loss(s_target, s_context, context_labels, target_label, xi=0.8,
                    similarity="cosine", weighting="similarity", stop_gradient_weights=False,
                    normalize=True, form="vector_cosine", exponent_scale="unit",
                    reduction="valid"):
    """CCN attraction loss L_{S+} (Eq. 7-8), mean over examples with a non-empty S+
    (``reduction="valid"``) or over the batch (``"batch"``, Eq. 12; :func:`masked_mean`).

    See :func:`attraction_loss_per_example`. Returns a float32 scalar (0 if no example of the
    batch has a positive context item).
    """
    loss, valid = attraction_loss_per_example(s_target, s_context, context_labels, target_label,
                                              xi, similarity, weighting, stop_gradient_weights,
                                              normalize, form=form, exponent_scale=exponent_scale)
    return masked_mean(loss, valid, reduction)


def ccn_losses(s_target, s_context, context_labels, target_label, tau=0.5, xi=0.8,
               use_repulsion=True, use_attraction=True, similarity="cosine",
               weighting="similarity", stop_gradient_weights=False, normalize=True,
               form="vector_cosine", exponent_scale="unit", reduction="valid"):
    """``(L_S-, L_S+)``: :func:`repulsion_loss` and :func:`attraction_loss` of the same inputs
    (None for a term switched off), with the set masks, the scores and the normalised degrees
    computed once for both (same values as the two calls)."""
    parts = _Parts(s_target, s_context, context_labels, target_label, similarity)
    l_minus = l_plus = None
    if use_repulsion:
        l_minus = masked_mean(*_repulsion(parts, tau, stop_gradient_weights), reduction)
    if use_attraction:
        l_plus = masked_mean(*_attraction(parts, xi, weighting, stop_gradient_weights, normalize,
                                          -1.0 + 1e-6, form, exponent_scale), reduction)
    return l_minus, l_plus


# ---------------------------------------------------------------------------------------------
# Eq. 9-10, 12
# ---------------------------------------------------------------------------------------------
def p_s_plus(n0, n1, floor=1e-6):
    """P_{S+} (Eq. 9): probability that two items of one page share their click label.

    ``(N0 (N0-1) + N1 (N1-1)) / ((N0+N1)(N0+N1-1))`` with N1 / N0 the average number of clicked
    / unclicked items per page (real numbers, so the binomials are extended to the reals).
    Works on Python numbers (returns float) and tensors. The result is clipped to
    ``[floor, 1]`` (with N0+N1 <= 1 the formula is undefined; we return 1).
    """
    if isinstance(n0, (int, float)) and isinstance(n1, (int, float)):
        n = float(n0) + float(n1)
        if n * (n - 1.0) <= 0.0:
            return 1.0
        p = (n0 * (n0 - 1.0) + n1 * (n1 - 1.0)) / (n * (n - 1.0))
        return float(min(max(p, floor), 1.0))
    n0 = tf.cast(n0, tf.float32)
    n1 = tf.cast(n1, tf.float32)
    n = n0 + n1
    den = n * (n - 1.0)
    ok = den > 0
    p = (n0 * (n0 - 1.0) + n1 * (n1 - 1.0)) / tf.where(ok, den, tf.ones_like(den))
    return tf.where(ok, tf.clip_by_value(p, floor, 1.0), tf.ones_like(p))


def p_s_minus(n0, n1, floor=1e-6):
    """P_{S-} = 1 - P_{S+} (Eq. 10)."""
    return 1.0 - p_s_plus(n0, n1, floor)


def attraction_ratio(p_plus):
    """The attraction weight ``P_{S-} / P_{S+}`` of Eq. 12 (``p_plus`` already floored)."""
    return (1.0 - p_plus) / p_plus


def ccn_total(ce, l_minus, l_plus, lam, p_plus):
    """CCN total loss (Eq. 12): ``L_CE + lam * (L_{S-} + P_{S-}/P_{S+} * L_{S+})``."""
    p_plus = tf.cast(p_plus, tf.float32)
    return (tf.cast(ce, tf.float32)
            + tf.cast(lam, tf.float32) * (tf.cast(l_minus, tf.float32)
                                          + attraction_ratio(p_plus) * tf.cast(l_plus, tf.float32)))
