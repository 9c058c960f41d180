"""DeepFM (Guo et al. 2017).

Fields: the user features, the target's sides [+ the trigger's, ``use_trigger=True``], the
masked means of the short-sequence sides (each ``[B, k]``); ``logit = Dense(MLP(fields)) +
first order (linear id weights) + FM second order``. ``latent`` is the deep side's last hidden
layer.
"""
from __future__ import annotations

import tensorflow as tf

from ctrcore.archs.base import DeepAndShallow
from ctrcore.archs.blocks import FMHead


class DeepFM(DeepAndShallow):
    kind = "deepfm"

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.fm = self.add(FMHead(front, self.trigger_aware))

    def apply(self, emb, training=False):
        # the embedding outputs are gathered first and the fields again (as in 7d683ae: both
        # gathers count in emb_l2 and in the embedding-dropout draws)
        x = self.embed(emb)
        fields = self.fm.fields(emb)  # [B, F, k]
        latent, deep = self.head(tf.reshape(fields, [-1, fields.shape[1] * fields.shape[2]]), training=training)
        return dict(x.outputs(), latent=latent, logits=self.fm(emb, fields, deep))
