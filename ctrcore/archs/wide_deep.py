"""Wide & Deep (Cheng et al. 2016).

``deep = MLP(E_user, E_target [, E_trigger], mean(E_short))``; wide = linear weights of the user,
profile and target ids + hashed cross target category x short-sequence categories (mean over
valid positions) [+ target category x trigger category, and the trigger's ids, with
``use_trigger=True``]. ``latent`` is the deep side's last hidden layer.
"""
from __future__ import annotations

import tensorflow as tf

from ctrcore import layers as L
from ctrcore.archs.base import DeepAndShallow
from ctrcore.archs.blocks import WideHead


class WideDeep(DeepAndShallow):
    kind = "wide_deep"

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.wide = self.add(WideHead(front, hp.wide_buckets, self.trigger_aware))

    def apply(self, emb, training=False):
        x = self.embed(emb)
        parts = [x.user, x.target] + ([x.trigger] if self.trigger_aware else [])
        parts.append(L.masked_mean(x.short, x.short_mask))
        latent, logit = self.head(tf.concat(parts, axis=-1), training=training)
        return dict(x.outputs(), latent=latent, logits=logit + self.wide(emb, x.short_mask))
