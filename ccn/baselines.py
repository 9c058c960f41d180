"""Training side of the CCN paper's trigger-based competitors DIHN and DIAN (CCN Table 2).

Their networks are backbones (``ctrcore.archs.intent``: the intent network is part of the
serving graph because its output gates the CTR estimate); what is training-only is the
auxiliary intent task, here:

* :func:`intent_label` - the page-level intent label, computed in the graph from the training
  features: 1 when the user clicked, on this page, an item of the trigger's category (the
  target itself or any in-page context item), else 0. Neither paper's label can be built from
  these logs (DIHN: "the user clicked the trigger item", but the trigger is not among the
  page's exposures; DIAN: the entry intention, not observed), so this proxy is used for both:
  a click on the trigger's category is the observable sign that the entry was about the
  trigger (docs/method-baselines.md).
* :func:`intent_loss` - binary cross-entropy of the intent logit against that label.
* :class:`IntentLoss` - the ``AuxLoss`` plug-in: ``{"intent": weight * intent_loss}``; the
  weight defaults to 0.8 for DIHN (its Eq. 13 weights the two tasks 1 and 0.8) and 0.1 for DIAN
  (not given in its abstract; 0.1 as in the public re-implementation).
"""
from __future__ import annotations

from typing import Dict

import tensorflow as tf

from ctrcore.model import AuxLoss
from ctrcore.schema import OOV_ID

__all__ = ["intent_label", "intent_loss", "IntentLoss", "DEFAULT_INTENT_WEIGHT"]

DEFAULT_INTENT_WEIGHT = {"dihn": 0.8, "dian": 0.1}


def intent_label(label, target_cat, trigger_cat, ctx_labels, ctx_cats):
    """Page-level intent label (float32 ``[B]``), see the module docstring.

    ``label [B]`` (0/1), ``target_cat [B]`` / ``trigger_cat [B]`` / ``ctx_cats [B, C]`` looked-up
    int category ids (0 = padding, 1 = OOV), ``ctx_labels [B, C]`` (1 clicked, 0 not, -1 padding).
    Padding context positions never count; a trigger without a known category (padding / OOV)
    gives 0, as does an OOV category on either side (unknown is not "the same category").
    """
    trig = tf.cast(trigger_cat, tf.int64)
    known = trig > OOV_ID
    hit_target = tf.logical_and(tf.cast(label, tf.int64) > 0, tf.equal(tf.cast(target_cat, tf.int64), trig))
    hit_ctx = tf.reduce_any(tf.logical_and(tf.equal(tf.cast(ctx_labels, tf.int64), 1),
                                           tf.equal(tf.cast(ctx_cats, tf.int64), trig[:, None])), axis=1)
    return tf.cast(tf.logical_and(known, tf.logical_or(hit_target, hit_ctx)), tf.float32)


def intent_loss(intent_logit, y_intent):
    """Mean binary cross-entropy of the intent logits against the intent labels (DIHN Eq. 13's
    second term; DIAN's intent task)."""
    y = tf.cast(y_intent, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=tf.cast(intent_logit, tf.float32)))


class IntentLoss(AuxLoss):
    """The intent auxiliary task of DIHN / DIAN: ``{"intent": weight * BCE}`` on the backbone's
    ``intent_logit`` output (module docstring)."""

    def __init__(self, stats=None, weight: float = 0.8, name: str = "intent", **kwargs):
        super().__init__(name=name, **kwargs)
        del stats
        self.weight = float(weight)

    def _names(self, model):
        return {p: model.backbone.category_feature(p) for p in ("", "trigger_", "context_")}

    def required_features(self, model):
        return [self._names(model)["context_"], "context_labels"]

    def labels(self, model, features):
        n = self._names(model)
        ids = model.backbone.lookup({v: features[v] for v in n.values()})  # idempotent on ints
        return intent_label(features[model.spec.label], ids[n[""]], ids[n["trigger_"]],
                            features["context_labels"], ids[n["context_"]])

    def call(self, model, features, outputs, training=False) -> Dict[str, tf.Tensor]:
        if "intent_logit" not in outputs:
            raise ValueError("IntentLoss needs a backbone with an intent network (dihn / dian)")
        return {"intent": self.weight * intent_loss(outputs["intent_logit"], self.labels(model, features))}
