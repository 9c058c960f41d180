"""AQCL input augmentations for the second view (Sec. 4.1): history masking and embedding
dropout. Both are stateless (``tf.random.stateless_uniform`` with a [2] int seed tensor), so a
given seed reproduces the same augmentation, different seeds give different ones, and they run
inside ``tf.function`` / XLA and under ``tf.distribute`` without random-op state.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Union

import tensorflow as tf

from ctrcore.schema import PAD

__all__ = ["history_groups", "mask_history", "embedding_dropout", "as_seed"]

_SEQ_RE = re.compile(r"^(short|long)_.+s$")


def history_groups(feature_names) -> List[List[str]]:
    """Group the click-history sequence features by sequence: every ``short_*s`` feature in one
    group, every ``long_*s`` feature in another (item/category/seller of one sequence are
    aligned position by position, so they must be masked at the same positions)."""
    groups: Dict[str, List[str]] = {}
    for n in sorted(feature_names):
        m = _SEQ_RE.match(n)
        if m:
            groups.setdefault(m.group(1), []).append(n)
    return [groups[k] for k in sorted(groups)]


def as_seed(seed) -> tf.Tensor:
    """A [2] int32 seed tensor from an int, a pair or a tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    return seed


def _normalise_groups(seq_feature_names) -> List[List[str]]:
    groups: List[List[str]] = []
    loose: List[str] = []
    for g in seq_feature_names:
        if isinstance(g, str):
            loose.append(g)
        else:
            groups.append(list(g))
    if loose:
        by_prefix = history_groups(loose)
        known = {n for g in by_prefix for n in g}
        groups.extend(by_prefix)
        groups.extend([[n] for n in loose if n not in known])  # anything else: on its own
    return groups


def mask_history(features: Mapping[str, tf.Tensor],
                 seq_feature_names: Sequence[Union[str, Sequence[str]]],
                 rate, seed) -> Dict[str, tf.Tensor]:
    """Randomly replace non-padding history items by the padding value ``""``.

    Args:
      features: the batch feature dict (string sequences [B, n], padded with ``""``).
      seq_feature_names: the sequences to mask, either as groups (lists of names masked at the
        same positions, e.g. ``[["short_item_ids", "short_category_ids", "short_seller_ids"],
        [...long...]]``) or as a flat list of names, grouped by their ``short_``/``long_``
        prefix (:func:`history_groups`).
      rate: probability to mask each non-padding position (float or scalar tensor).
      seed: [2] int seed (or int). Group g uses ``stateless_fold_in(seed, g)``.
    Returns:
      A new dict (the input is not modified) with the masked sequences; other features are
      passed through. A position is masked only where the item id is not padding (for every
      feature of the group, a padded entry stays padded; a non-padding entry becomes ``""``
      with probability ``rate``). Masked positions leave holes (no re-packing); backbones
      treat ``""`` as padding wherever it occurs. ``history_length`` is not changed.
    """
    out = dict(features)
    seed = as_seed(seed)
    rate = tf.cast(rate, tf.float32)
    for gi, group in enumerate(_normalise_groups(seq_feature_names)):
        group = [n for n in group if n in features]
        if not group:
            continue
        ref = tf.convert_to_tensor(features[group[0]])
        g_seed = tf.random.experimental.stateless_fold_in(seed, gi)
        u = tf.random.stateless_uniform(tf.shape(ref), seed=g_seed, dtype=tf.float32)
        drop = u < rate
        for n in group:
            x = tf.convert_to_tensor(features[n])
            pad = tf.constant(PAD, x.dtype) if x.dtype == tf.string else tf.zeros([], x.dtype)
            d = tf.logical_and(drop, tf.not_equal(x, pad))
            out[n] = tf.where(d, tf.broadcast_to(pad, tf.shape(x)), x)
    return out


def embedding_dropout(x, rate, seed, rescale=True):
    """Zero each entry of ``x`` with probability ``rate`` (stateless; same seed -> same mask).

    ``rescale=True`` (default) multiplies the kept entries by ``1/(1-rate)`` like standard
    (inverted) dropout, so the expected embedding is unchanged; ``rescale=False`` only zeroes.
    """
    x = tf.convert_to_tensor(x)
    rate = tf.cast(rate, x.dtype)
    u = tf.random.stateless_uniform(tf.shape(x), seed=as_seed(seed), dtype=x.dtype)
    keep = tf.cast(u >= rate, x.dtype)
    y = x * keep
    if rescale:
        y = y / tf.maximum(1.0 - rate, tf.constant(1e-6, x.dtype))
    return y
