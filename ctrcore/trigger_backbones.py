"""The CCN paper's trigger-based competitors DIHN and DIAN (CCN Table 2) as backbones.

Both estimate a user *intent* about the trigger and use it inside the CTR model; the intent is
trained by an auxiliary loss on a page-level intent label (``ccn.baselines.IntentLoss``, which
reads the ``intent_logit`` output). Everything here is serving-side: the exported graph is the
backbone, and the intent network is part of it (its output gates the CTR prediction), while the
intent *label* and loss are training-only. The readings of both papers, and what was
unavailable, are in docs/method-baselines.md ("DIHN", "DIAN").

``dihn`` - Deep Interest Highlight Network (Shen et al., WWW 2022):

* UIN: ``V_U = DIN-attention(trigger, short)``; ``p = sigmoid(MLP([E_user, E_trigger, V_U]))``,
  the probability that the user's entry is about the trigger (``intent_logit``). The target is
  not an input.
* FEM: ``E_f = p * E_trigger + (1 - p) * E_target`` (the UIN probability as a scalar gate).
* HIEM, hard part: SIM hard search of the long sequence for the *trigger's* category, pooled by
  multi-head target attention with the trigger as query; soft part: multi-head self-attention
  over the short sequence, then DIN attention with ``E_f`` as the query.
* ``logit = MLP([E_user, E_target, E_trigger, hard, soft])``.

``dian`` - Deep Intention-Aware Network (Xia et al., WWW 2023 companion):

* intent net: ``q = sigmoid(MLP([E_user, E_trigger, mean(E_short), mean(E_short) * E_trigger]))``
  (entry driven by the trigger vs by the mini-app; ``intent_logit``).
* trigger-aware net: TAN's interest extraction without the collaborative module:
  ``a = MLP([E_user, E_target, E_trigger, MHTA(target|trigger, short), MHTA(target|trigger,
  long | category)])``.
* trigger-free net: the same without any trigger input, its own weights:
  ``b = MLP_free([E_user, E_target, MHTA_free(target, short), MHTA_free(target, long | target cat)])``.
* mixture of the two CTR estimates by the intent: ``y = q sigmoid(a) + (1 - q) sigmoid(b)``,
  returned as ``logits = log y - log(1 - y)`` (computed in log space, :func:`mixture_logit`).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from ctrcore import layers as L
from ctrcore.backbones import Backbone


def mixture_logit(q_logit, a_logit, b_logit):
    """``logit(q * sigmoid(a) + (1 - q) * sigmoid(b))`` with ``q = sigmoid(q_logit)``, stable for
    large |logits| (log-sum-exp of the two log-probabilities of each outcome)."""
    ls = tf.math.log_sigmoid
    log_pos = tf.reduce_logsumexp(tf.stack([ls(q_logit) + ls(a_logit), ls(-q_logit) + ls(b_logit)]), axis=0)
    log_neg = tf.reduce_logsumexp(tf.stack([ls(q_logit) + ls(-a_logit), ls(-q_logit) + ls(-b_logit)]), axis=0)
    return log_pos - log_neg


class _IntentBackbone(Backbone):
    """Common parts: the intent MLP (-> one logit) on top of Backbone's tables and heads."""

    def __init__(self, spec, kind: str, intent_units: Sequence[int] = (64,), **hparams):
        super().__init__(spec, kind, **hparams)
        act = self.hparams["activation"]
        self.intent_mlp = L.MLP(list(intent_units) + [1], activation=act, linear_last=True,
                                l2=self.hparams["l2_dense"], name="intent_mlp")
        self.hparams["intent_units"] = list(intent_units)

    def _common(self, ids, post):
        user = self._user(ids, post)
        target, _ = self.items(ids, "", post=post)
        trigger, _ = self.items(ids, "trigger_", post=post)
        short, short_mask = self.items(ids, "short_", post=post)
        return user, target, trigger, short, short_mask

    def _long(self, ids, post, who: str, long=None, long_mask=None):
        """The long sequence and its SIM hard-search mask for the target's / trigger's category."""
        if long is None:
            long, long_mask = self.items(ids, "long_", post=post)
        long_cat = ids[L.item_feature_names(self.spec, "long_")[self._cat_index]]
        qcat = ids[L.item_feature_names(self.spec, "" if who == "target" else "trigger_")[self._cat_index]]
        return long, long_mask, L.sim_hard_search(long, long_cat, qcat, long_mask)

    def _finish(self, out, reg):
        if self.l2_emb > 0:
            out["emb_l2"] = self.l2_emb * tf.reduce_mean(tf.add_n(reg))
        return out


class DIHN(_IntentBackbone):
    """See the module docstring (``dihn``)."""

    def __init__(self, spec, heads: int = 4, **hparams):
        super().__init__(spec, "dihn", heads=heads, **hparams)
        din_units = self.hparams["din_units"]
        self.uin_att = L.DinAttention(din_units, softmax=self.hparams["din_softmax"], name="uin_attention")
        d = self.item_dim
        self.self_att = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=max(1, d // heads),
                                                        name="ssm_self_attention")
        self.ssm_att = L.DinAttention(din_units, softmax=self.hparams["din_softmax"], name="ssm_attention")

    def apply(self, ids, training=False, emb_dropout: float = 0.0, seed=None):
        reg = []
        post = self._post(emb_dropout, seed, reg)
        user, target, trigger, short, short_mask = self._common(ids, post)
        # UIN: intent on the trigger from user, behaviours and trigger (not the target)
        v_u = self.uin_att(trigger, short, short_mask, training=training)
        intent_logit = self.intent_mlp(tf.concat([user, trigger, v_u], -1), training=training)[:, 0]
        p = tf.sigmoid(intent_logit)[:, None]
        # FEM
        fused = p * trigger + (1.0 - p) * target
        # HIEM: hard search by the trigger's category + soft (self-attention, then fused query)
        long, long_mask, hard_mask = self._long(ids, post, "trigger")
        hard = self.att_trigger_long(trigger, long, hard_mask, training=training)
        pair = tf.logical_and(short_mask[:, :, None], short_mask[:, None, :])
        ctx = self.self_att(short, short, short, attention_mask=pair, training=training)
        ctx = tf.where(short_mask[:, :, None], ctx, tf.zeros_like(ctx))
        soft = self.ssm_att(fused, ctx, short_mask, training=training)
        latent = self.mlp(tf.concat([user, target, trigger, hard, soft], -1), training=training)
        out = {"user_emb": user, "target_emb": target, "trigger_emb": trigger, "latent": latent,
               "logits": self.out(latent)[:, 0], "intent_logit": intent_logit}
        return self._finish(out, reg)


class DIAN(_IntentBackbone):
    """See the module docstring (``dian``)."""

    def __init__(self, spec, heads: int = 4, **hparams):
        super().__init__(spec, "dian", heads=heads, **hparams)
        hp = self.hparams
        self.free_att_short = L.TargetAttention(heads, name="free_mhta_target_short")
        self.free_att_long = L.TargetAttention(heads, name="free_mhta_target_long")
        self.free_mlp = L.MLP(hp["mlp_units"], activation=hp["activation"], dropout=hp["dropout"],
                              batch_norm=hp["batch_norm"], l2=hp["l2_dense"], name="trigger_free_mlp")
        self.free_out = keras.layers.Dense(1, name="trigger_free_logit")

    def apply(self, ids, training=False, emb_dropout: float = 0.0, seed=None):
        reg = []
        post = self._post(emb_dropout, seed, reg)
        user, target, trigger, short, short_mask = self._common(ids, post)
        mean_short = L.masked_mean(short, short_mask)
        intent_logit = self.intent_mlp(tf.concat([user, trigger, mean_short, mean_short * trigger], -1),
                                       training=training)[:, 0]
        # trigger-aware net (TAN's interest extraction, no collaborative module)
        long, long_mask, m_target = self._long(ids, post, "target")
        _, _, m_trigger = self._long(ids, post, "trigger", long, long_mask)
        aware = tf.concat([user, target, trigger,
                           self.att_target_short(target, short, short_mask, training=training),
                           self.att_trigger_short(trigger, short, short_mask, training=training),
                           self.att_target_long(target, long, m_target, training=training),
                           self.att_trigger_long(trigger, long, m_trigger, training=training)], -1)
        latent = self.mlp(aware, training=training)
        a_logit = self.out(latent)[:, 0]
        # trigger-free net: no trigger input, its own weights
        free = tf.concat([user, target, self.free_att_short(target, short, short_mask, training=training),
                          self.free_att_long(target, long, m_target, training=training)], -1)
        b_logit = self.free_out(self.free_mlp(free, training=training))[:, 0]
        out = {"user_emb": user, "target_emb": target, "trigger_emb": trigger, "latent": latent,
               "logits": mixture_logit(intent_logit, a_logit, b_logit), "intent_logit": intent_logit,
               "trigger_aware_logit": a_logit, "trigger_free_logit": b_logit}
        return self._finish(out, reg)


TRIGGER_BACKBONES = {"dihn": DIHN, "dian": DIAN}
