"""The CCN paper's trigger-based competitors DIHN and DIAN (CCN Table 2).

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

import tensorflow as tf
import tf_keras as keras

from ctrcore import layers as L
from ctrcore.archs.base import Architecture
from ctrcore.archs.blocks import CategorySearch


def mixture_logit(q_logit, a_logit, b_logit):
    """``logit(q * sigmoid(a) + (1 - q) * sigmoid(b))`` with ``q = sigmoid(q_logit)``, stable for
    large |logits| (log-sum-exp of the two log-probabilities of each outcome)."""
    ls = tf.math.log_sigmoid
    log_pos = tf.reduce_logsumexp(tf.stack([ls(q_logit) + ls(a_logit), ls(-q_logit) + ls(b_logit)]), axis=0)
    log_neg = tf.reduce_logsumexp(tf.stack([ls(q_logit) + ls(-a_logit), ls(-q_logit) + ls(-b_logit)]), axis=0)
    return log_pos - log_neg


def _intent_mlp(arch: Architecture) -> L.MLP:
    hp = arch.hp
    return arch.track("intent_mlp", L.MLP(list(hp.intent_units) + [1], activation=hp.activation,
                                          linear_last=True, l2=hp.l2_dense, name="intent_mlp"))


def _gather(emb):
    """E_user, E_target, E_trigger, the short sequence and its mask (in this gather order)."""
    user = emb.user()
    target, _ = emb.items("")
    trigger, _ = emb.items("trigger_")
    short, short_mask = emb.items("short_")
    return user, target, trigger, short, short_mask


class IntentArchitecture(Architecture):
    """What DIHN and DIAN share: trigger-aware, reading the long sequence, an intent network
    (``intent_mlp``, :func:`_intent_mlp`) whose ``intent_logit`` the intent loss trains."""
    trigger_aware = True
    reads_long = True


class DIHN(IntentArchitecture):
    """See the module docstring (``dihn``)."""
    kind = "dihn"

    def __init__(self, front, hp):
        super().__init__(front, hp)
        self.search_trigger = self.add(CategorySearch("att_trigger_long", hp.heads, "mhta_trigger_long"))
        self.head = self.add(self.prediction_head())
        self.intent_mlp = _intent_mlp(self)
        self.uin_att = self.track("uin_att", L.DinAttention(hp.din_units, softmax=hp.din_softmax,
                                                            name="uin_attention"))
        d = front.item_dim
        self.self_att = self.track("self_att", keras.layers.MultiHeadAttention(
            num_heads=hp.heads, key_dim=max(1, d // hp.heads), name="ssm_self_attention"))
        self.ssm_att = self.track("ssm_att", L.DinAttention(hp.din_units, softmax=hp.din_softmax,
                                                            name="ssm_attention"))

    def apply(self, emb, training=False):
        user, target, trigger, short, short_mask = _gather(emb)
        # UIN: intent on the trigger from user, behaviours and trigger (not the target)
        v_u = self.uin_att(trigger, short, short_mask, training=training)
        intent_logit = self.intent_mlp(tf.concat([user, trigger, v_u], -1), training=training)[:, 0]
        p = tf.sigmoid(intent_logit)[:, None]
        # FEM
        fused = p * trigger + (1.0 - p) * target
        # HIEM: hard search by the trigger's category + soft (self-attention, then fused query)
        long, long_mask = emb.items("long_")
        hard = self.search_trigger(emb, trigger, "trigger_", long, long_mask, training=training)
        pair = tf.logical_and(short_mask[:, :, None], short_mask[:, None, :])
        ctx = self.self_att(short, short, short, attention_mask=pair, training=training)
        ctx = tf.where(short_mask[:, :, None], ctx, tf.zeros_like(ctx))
        soft = self.ssm_att(fused, ctx, short_mask, training=training)
        latent, logit = self.head(tf.concat([user, target, trigger, hard, soft], -1), training=training)
        return {"user_emb": user, "target_emb": target, "trigger_emb": trigger, "latent": latent,
                "logits": logit, "intent_logit": intent_logit}


class DIAN(IntentArchitecture):
    """See the module docstring (``dian``)."""
    kind = "dian"

    def __init__(self, front, hp):
        super().__init__(front, hp)
        heads = hp.heads
        self.att_target_short = self.track("att_target_short", L.TargetAttention(heads, name="mhta_target_short"))
        self.att_trigger_short = self.track("att_trigger_short", L.TargetAttention(heads, name="mhta_trigger_short"))
        self.search_target = self.add(CategorySearch("att_target_long", heads, "mhta_target_long"))
        self.search_trigger = self.add(CategorySearch("att_trigger_long", heads, "mhta_trigger_long"))
        self.head = self.add(self.prediction_head())
        self.intent_mlp = _intent_mlp(self)
        # the trigger-free net: its own weights
        self.free_att_short = self.track("free_att_short", L.TargetAttention(heads, name="free_mhta_target_short"))
        self.free_att_long = self.track("free_att_long", L.TargetAttention(heads, name="free_mhta_target_long"))
        self.free_head = self.add(self.prediction_head(mlp_attr="free_mlp", out_attr="free_out",
                                                       mlp_name="trigger_free_mlp", out_name="trigger_free_logit"))

    def apply(self, emb, training=False):
        user, target, trigger, short, short_mask = _gather(emb)
        mean_short = L.masked_mean(short, short_mask)
        intent_logit = self.intent_mlp(tf.concat([user, trigger, mean_short, mean_short * trigger], -1),
                                       training=training)[:, 0]
        # trigger-aware net (TAN's interest extraction, no collaborative module)
        long, long_mask = emb.items("long_")
        m_target = self.search_target.mask(emb, "", long_mask)
        m_trigger = self.search_trigger.mask(emb, "trigger_", long_mask)
        aware = tf.concat([user, target, trigger,
                           self.att_target_short(target, short, short_mask, training=training),
                           self.att_trigger_short(trigger, short, short_mask, training=training),
                           self.search_target.attention(target, long, m_target, training=training),
                           self.search_trigger.attention(trigger, long, m_trigger, training=training)], -1)
        latent, a_logit = self.head(aware, training=training)
        # trigger-free net: no trigger input, its own weights
        free = tf.concat([user, target, self.free_att_short(target, short, short_mask, training=training),
                          self.free_att_long(target, long, m_target, training=training)], -1)
        _, b_logit = self.free_head(free, training=training)
        return {"user_emb": user, "target_emb": target, "trigger_emb": trigger, "latent": latent,
                "logits": mixture_logit(intent_logit, a_logit, b_logit), "intent_logit": intent_logit,
                "trigger_aware_logit": a_logit, "trigger_free_logit": b_logit}
