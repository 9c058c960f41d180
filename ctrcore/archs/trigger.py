"""The trigger-aware network TAN (CCN paper, Eq. 3-4) and its ablations.

========= ==========================================================================================
tan_base  ``MLP(E_user, E_target, E_trigger, MHTA(target, short), MHTA(trigger, short))``
          (TAN w/o CM & TSI: no long-sequence search, no collaborative module)
tan_notsi ``MLP(E_user, E_target, E_trigger, MHTA(target, short), MHTA(target, long | target cat),
          s_target)`` (CM, but no trigger-related sequence interaction)
tan       ``MLP(E_user, E_target, E_trigger, H_tsi, s_target)`` (CCN Eq. 3) with
          ``H_tsi = MHTA(target, short) ⊕ MHTA(trigger, short) ⊕ MHTA(target, long | target cat)
          ⊕ MHTA(trigger, long | trigger cat)`` and
          ``s = MLP_cm(E_user ⊕ (E ⊙ E_trigger))`` (CCN Eq. 4, :class:`CollaborativeModule`)
========= ==========================================================================================
"""
from __future__ import annotations

import tensorflow as tf

from ctrcore import layers as L
from ctrcore.archs.base import Architecture
from ctrcore.archs.blocks import CategorySearch, CollaborativeModule


def _target_attention(arch: Architecture, who: str):
    return arch.track(f"att_{who}_short", L.TargetAttention(arch.hp.heads, name=f"mhta_{who}_short"))


def _search(arch: Architecture, who: str) -> CategorySearch:
    return arch.add(CategorySearch(f"att_{who}_long", arch.hp.heads, f"mhta_{who}_long"))


def _collaborative_module(arch: Architecture) -> CollaborativeModule:
    hp = arch.hp
    return arch.add(CollaborativeModule(hp.cm_units, hp.cm_dim, activation=hp.activation, l2=hp.l2_dense))


class TANBase(Architecture):
    kind = "tan_base"
    trigger_aware = True

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.att_target_short = _target_attention(self, "target")
        self.att_trigger_short = _target_attention(self, "trigger")
        self.head = self.add(self.prediction_head())

    def apply(self, emb, training=False):
        x = self.embed(emb)
        parts = [x.user, x.target, x.trigger,
                 self.att_target_short(x.target, x.short, x.short_mask, training=training),
                 self.att_trigger_short(x.trigger, x.short, x.short_mask, training=training)]
        latent, logit = self.head(tf.concat(parts, axis=-1), training=training)
        return dict(x.outputs(), latent=latent, logits=logit)


class TAN(Architecture):
    """TAN: target and trigger attention over the short sequence, SIM category search over the
    long one for each (trigger-related sequence interaction, TSI), the collaborative module.
    ``tsi = False`` (:class:`TANNoTSI`) keeps only the target's attention and search."""

    kind = "tan"
    trigger_aware = True
    reads_long = True
    has_collaborative_module = True
    tsi = True

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.att_target_short = _target_attention(self, "target")
        if self.tsi:
            self.att_trigger_short = _target_attention(self, "trigger")
        self.search_target = _search(self, "target")
        if self.tsi:
            self.search_trigger = _search(self, "trigger")
        self.cm = _collaborative_module(self)
        self.head = self.add(self.prediction_head())

    def collaborative_degree(self, user_emb, item_emb, trigger_emb):
        return self.cm(user_emb, item_emb, trigger_emb)

    def apply(self, emb, training=False):
        x = self.embed(emb)
        long, long_mask = emb.items("long_")
        s = self.cm(x.user, x.target, x.trigger)
        parts = [x.user, x.target, x.trigger,
                 self.att_target_short(x.target, x.short, x.short_mask, training=training)]
        if self.tsi:
            parts.append(self.att_trigger_short(x.trigger, x.short, x.short_mask,
                                                training=training))
        parts.append(self.search_target(emb, x.target, "", long, long_mask, training=training))
        if self.tsi:
            parts.append(self.search_trigger(emb, x.trigger, "trigger_", long, long_mask,
                                             training=training))
        parts.append(s)
        latent, logit = self.head(tf.concat(parts, axis=-1), training=training)
        return dict(x.outputs(), s_target=s, latent=latent, logits=logit)


class TANNoTSI(TAN):
    """CCN's ablation without trigger-related sequence interaction (TAN without the trigger's
    attention and search)."""

    kind = "tan_notsi"
    tsi = False
