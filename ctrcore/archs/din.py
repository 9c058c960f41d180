"""DIN (Zhou et al. 2018) and SIM (Pi et al. 2020).

=== ======================================================================================
din ``MLP(E_user, E_target, DIN-attention(target, short), mean(E_short))``
    [+ first-order id weights (``din_wide="linear"``) / the W&D wide head (``din_wide="wide"``)]
sim ``MLP(E_user, E_target, MHTA(target, short), MHTA(target, long | cat == target cat))``
=== ======================================================================================

DIN's attention unit has ``din_units`` hidden layers with ``din_att_activation`` (default sigmoid;
``prelu`` / ``dice`` are the DIN paper's) and no softmax unless ``din_softmax``.
"""
from __future__ import annotations

import tensorflow as tf

from ctrcore import layers as L
from ctrcore.archs.base import Architecture
from ctrcore.archs.blocks import CategorySearch, LinearTerms, WideHead, wide_features


class DIN(Architecture):
    kind = "din"

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.din_att = self.track("din_att", L.DinAttention(hp.din_units, activation=hp.din_att_activation,
                                                            softmax=hp.din_softmax, name="din_attention"))
        self.head = self.add(self.prediction_head())
        # created after the default layers, only when asked for: the default's variables and
        # checkpoint keys are unchanged
        self.wide = None
        if hp.din_wide == "linear":
            self.wide = self.add(LinearTerms(front, wide_features(front, False)))
        elif hp.din_wide == "wide":
            self.wide = self.add(WideHead(front, hp.wide_buckets, False))
        elif hp.din_wide:
            raise ValueError(f"din_wide={hp.din_wide!r}: expected '', 'linear' or 'wide'")

    def apply(self, emb, training=False):
        x = self.embed(emb)
        pooled = self.din_att(x.target, x.short, x.short_mask, training=training)
        latent, logit = self.head(tf.concat([x.user, x.target, pooled, L.masked_mean(x.short, x.short_mask)],
                                            axis=-1), training=training)
        if self.hp.din_wide == "linear":
            logit += self.wide(emb.ids)
        elif self.hp.din_wide == "wide":
            logit += self.wide(emb, x.short_mask)
        return dict(x.outputs(), latent=latent, logits=logit)


class SIM(Architecture):
    kind = "sim"
    reads_long = True

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.att_target_short = self.track("att_target_short", L.TargetAttention(hp.heads, name="mhta_target_short"))
        self.search_target = self.add(CategorySearch("att_target_long", hp.heads, "mhta_target_long"))
        self.head = self.add(self.prediction_head())

    def apply(self, emb, training=False):
        x = self.embed(emb)
        long, long_mask = emb.items("long_")
        parts = [x.user, x.target, self.att_target_short(x.target, x.short, x.short_mask, training=training),
                 self.search_target(emb, x.target, "", long, long_mask, training=training)]
        latent, logit = self.head(tf.concat(parts, axis=-1), training=training)
        return dict(x.outputs(), latent=latent, logits=logit)
