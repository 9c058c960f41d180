"""AQCL / ICL auxiliary loss plug-ins (``AuxLoss`` protocol, docs/architecture.md section 4).

``AQCLLoss(...)(model, features, outputs, training)`` ->
``{"aqcl": w * L_AQCL (Eq. 3, 8), "codebook": L_codebook (Eq. 5)}``;
``ICLLoss(...)(...)`` -> ``{"icl": w * L_ICL (Eq. 2)}`` (the ICL baseline of Table 2).

One train step (Algorithm 1, lines 3-7, in one gradient computation):

1. ``outputs`` = the shared forward pass of the CTR model (CE uses its logits);
   ``z = g(outputs["latent"])``.
2. Second view: ``mask_history`` on the feature dict (stateless seed) and the backbone again
   with embedding dropout (``emb_dropout``, stateless seed) -> ``latent+``; ``z+ = g(latent+)``.
   Inside ``CTRModel.compute_terms`` (a ``ctrcore.layers.GatherMemo``) the second view reuses
   the first view's gathers of the ids it does not mask (user, target). Both views go through
   the projector as one batch.
3. alpha per example from ``history_length`` and ``mean_history_length`` (Eq. 6).

``view_rows`` (default None: the whole batch, as in the paper) limits steps 2-4 to the first
``view_rows`` examples of the (shuffled) batch: a random subsample, so the contrastive term is
the same loss with a smaller contrastive batch, and the second view costs ``view_rows / B`` of a
backbone pass instead of a whole one. The codebook loss (step 5) keeps the whole batch: its
input ``sg(z)`` comes from the shared forward pass at no extra cost (docs/method.md 2.8).
4. L_AQCL with the top-K codewords of the *current* codebook, codebook under stop-gradient.
5. L_codebook: Sinkhorn assignment of ``sg(z)`` -> one-hot -> cross-entropy; only Q moves.

The stateless seeds are ``fold_in([seed, step], replica)``, with ``step`` a non-trainable int64
variable of the layer advanced by one per training call (checkpointed, so a restored run
continues the same augmentation sequence); evaluation calls do not advance it.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import tensorflow as tf

from aqcl import alpha as aqcl_alpha
from aqcl import augment
from aqcl import codebook as cb
from aqcl import losses as aloss
from aqcl.aqcl_plugin import codebook_problem, view_rows_problem
from aqcl.projector import Projector

from ctrcore.model import AuxLoss

__all__ = ["AQCLLoss", "ICLLoss", "history_feature_groups"]

HISTORY_PREFIXES = ("short_", "long_")
_SEQ_RE = re.compile(r"^(short|long)_.+s$")


def history_feature_groups(model, features) -> List[List[str]]:
    """The click-history sequence features present in ``features``, one group per sequence
    (item/category/seller of the short sequence, of the long sequence), resolved from
    ``model.spec`` when the model has one, else by name (``short_*s`` / ``long_*s``)."""
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "config", None) is not None:
        from ctrcore.layers import item_feature_names

        groups = [[n for n in item_feature_names(spec, p) if n in features]
                  for p in HISTORY_PREFIXES]
        return [g for g in groups if g]
    return augment.history_groups([n for n in features if _SEQ_RE.match(n)])


class _TwoViewLoss(AuxLoss):
    """Shared part of AQCL and ICL: projector g, step counter, the augmented second view."""

    def __init__(self, stats=None, weight=0.05, z_dim=64, mask_rate=0.2, emb_dropout=0.1,
                 projector_units=(128, 128), negatives="views", seed=0,
                 history_groups: Optional[Sequence[Sequence[str]]] = None,
                 view_rows: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.stats = dict(stats or {})
        self.weight = float(weight)
        self.z_dim = int(z_dim)
        self.mask_rate = float(mask_rate)
        self.emb_dropout = float(emb_dropout)
        self.negatives = negatives
        self.base_seed = int(seed)
        self.history_groups = [list(g) for g in history_groups] if history_groups else None
        problem = view_rows_problem(view_rows)
        if problem:
            raise ValueError(f"view_rows {problem}")
        self.view_rows = None if view_rows is None else int(view_rows)
        self.projector = Projector(z_dim=self.z_dim, hidden_units=projector_units,
                                   name="projector")
        self.step = self.add_weight(name="step", shape=(), dtype=tf.int64, trainable=False,
                                    initializer="zeros",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def seeds(self):
        """(mask seed, dropout seed): [2] int32 tensors for the current step and replica."""
        step = tf.cast(tf.math.floormod(self.step.read_value(), 2 ** 31 - 1), tf.int32)
        seed = tf.stack([tf.constant(self.base_seed, tf.int32), step])
        ctx = tf.distribute.get_replica_context()
        if ctx is not None:
            replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
            seed = tf.random.experimental.stateless_fold_in(seed, replica)
        return (tf.random.experimental.stateless_fold_in(seed, 1),
                tf.random.experimental.stateless_fold_in(seed, 2))

    def required_features(self, model):
        return []  # the second view masks the backbone's own history inputs

    def view_slice(self, x):
        """The rows of a batch-major tensor that enter the contrastive term (``view_rows``)."""
        return x if self.view_rows is None else x[:self.view_rows]

    def views(self, model, features, outputs, training):
        """``(z, z_pos)``: projections of the shared forward pass and of the augmented view,
        for the first ``view_rows`` examples of the batch (all of them by default)."""
        mask_seed, drop_seed = self.seeds()
        groups = self.history_groups or history_feature_groups(model, features)
        if self.view_rows is not None:
            features = {k: self.view_slice(v) for k, v in features.items()}
        aug = augment.mask_history(features, groups, self.mask_rate, mask_seed)
        # training=True for the augmented view only while training (model dropout is part of
        # the augmentation; at evaluation batch-norm statistics must not be updated)
        out_pos = model.backbone(aug, training=training, emb_dropout=self.emb_dropout,
                                 seed=drop_seed)
        if self.view_rows is None:  # both views through the projector as one batch
            n = tf.shape(outputs["latent"])[0]
            z_both = self.projector(tf.concat([outputs["latent"], out_pos["latent"]], 0))
            z, z_pos = z_both[:n], z_both[n:]
        else:
            z = self.projector(self.view_slice(outputs["latent"]))
            z_pos = self.projector(out_pos["latent"])
        if training is None:
            training = False
        self.step.assign_add(tf.cast(training, tf.int64))
        return z, z_pos

    def get_config(self):
        cfg = super().get_config()
        cfg.update(stats=self.stats, weight=self.weight, z_dim=self.z_dim,
                   mask_rate=self.mask_rate, emb_dropout=self.emb_dropout,
                   projector_units=list(self.projector.hidden_units), negatives=self.negatives,
                   seed=self.base_seed, history_groups=self.history_groups,
                   view_rows=self.view_rows)
        return cfg


class AQCLLoss(_TwoViewLoss):
    """AQCL (Eq. 3-8) as an aux-loss layer; owns the projector g and the codebook Q.

    Args (names as in docs/architecture.md):
      stats: stats.json dict (``mean_history_length`` = L-bar of Eq. 6; not needed with
        ``const_alpha``). weight: w of Eq. 8. z_dim: projection size. T, K: codebook size and
        number of positive codewords. tau1, tau2, tau3: temperatures (Eq. 3, 5).
      w1, w2: alpha-adaptation (Eq. 6). const_alpha: a constant alpha instead (ablation).
      mask_rate, emb_dropout: augmentation of the second view.
      sinkhorn_iters, sinkhorn_epsilon: Eq. 4 solver (SwAV: 3, 0.05).
      codebook_reduction: "mean" (default) or "sum" over the batch in Eq. 5.
      negatives: "views" or "both" (see :func:`aqcl.losses.icl_loss`). seed: base seed.
      view_rows: contrastive term on the first ``view_rows`` examples only (module docstring).
    """

    def __init__(self, stats=None, weight=0.05, z_dim=64, T=128, K=5, tau1=0.1, tau2=0.1,
                 tau3=0.1, w1=1.0, w2=1.0, mask_rate=0.2, emb_dropout=0.1, const_alpha=None,
                 sinkhorn_iters=3, sinkhorn_epsilon=0.05, codebook_reduction="mean",
                 name="aqcl", **kwargs):
        super().__init__(stats=stats, weight=weight, z_dim=z_dim, mask_rate=mask_rate,
                         emb_dropout=emb_dropout, name=name, **kwargs)
        self.T, self.K = int(T), int(K)
        if codebook_problem(self.T, self.K):
            raise ValueError("AQCLLoss needs 0 < K <= T")
        self.tau1, self.tau2, self.tau3 = float(tau1), float(tau2), float(tau3)
        self.w1, self.w2 = float(w1), float(w2)
        self.const_alpha = None if const_alpha is None else float(const_alpha)
        if self.const_alpha is None:
            l_bar = self.stats.get("mean_history_length")
            if l_bar is None or float(l_bar) <= 0:
                raise ValueError("AQCLLoss needs stats['mean_history_length'] > 0 (Eq. 6) "
                                 "or a const_alpha")
            self.l_bar = float(l_bar)
        else:
            self.l_bar = float(self.stats.get("mean_history_length") or 1.0)
        self.sinkhorn_iters, self.sinkhorn_epsilon = int(sinkhorn_iters), float(sinkhorn_epsilon)
        self.codebook_reduction = codebook_reduction
        self.codebook = cb.Codebook(self.T, self.z_dim, name="codebook")
        self.history_feature = "history_length"  # L of Eq. 6 (schema.py: meta feature)

    def required_features(self, model):
        return [] if self.const_alpha is not None else [self.history_feature]

    def alpha(self, features, batch_size=None):
        """Per-example alpha [B] (Eq. 6, or the constant). The constant needs no history length
        (``required_features`` does not ask for it): its shape comes from ``batch_size``."""
        if self.const_alpha is not None:
            n = batch_size if batch_size is not None else tf.shape(features[self.history_feature])[0]
            return aqcl_alpha.constant_alpha(self.const_alpha, tf.zeros([n]))
        return aqcl_alpha.alpha_of_length(features[self.history_feature], self.l_bar, self.w1, self.w2)

    def call(self, model, features, outputs, training=False) -> Dict[str, tf.Tensor]:
        z, z_pos = self.views(model, features, outputs, training)
        q = self.codebook.codes
        alpha = self.view_slice(self.alpha(features, tf.shape(outputs["logits"])[0]))
        l_aqcl = aloss.aqcl_loss(z, z_pos, q, alpha, self.tau1, self.tau2,
                                 self.K, negatives=self.negatives)
        # Eq. 5 on the whole batch: sg(z) of every example (no second view needed)
        z_all = z if self.view_rows is None else self.projector(outputs["latent"])
        l_code = cb.codebook_loss(z_all, q, self.tau3, self.sinkhorn_iters, self.sinkhorn_epsilon,
                                  reduction=self.codebook_reduction)
        return {"aqcl": self.weight * l_aqcl, "codebook": l_code}

    def get_config(self):
        cfg = super().get_config()
        cfg.update(T=self.T, K=self.K, tau1=self.tau1, tau2=self.tau2, tau3=self.tau3,
                   w1=self.w1, w2=self.w2, const_alpha=self.const_alpha,
                   sinkhorn_iters=self.sinkhorn_iters, sinkhorn_epsilon=self.sinkhorn_epsilon,
                   codebook_reduction=self.codebook_reduction)
        return cfg


class ICLLoss(_TwoViewLoss):
    """Instance-level contrastive learning (Eq. 2) as an aux-loss layer: the ICL baseline of
    AQCL's Table 2 (same projector and augmentation as AQCL, no codebook)."""

    def __init__(self, stats=None, weight=0.05, z_dim=64, tau=0.1, mask_rate=0.2,
                 emb_dropout=0.1, name="icl", **kwargs):
        super().__init__(stats=stats, weight=weight, z_dim=z_dim, mask_rate=mask_rate,
                         emb_dropout=emb_dropout, name=name, **kwargs)
        self.tau = float(tau)

    def call(self, model, features, outputs, training=False) -> Dict[str, tf.Tensor]:
        z, z_pos = self.views(model, features, outputs, training)
        return {"icl": self.weight * aloss.icl_loss(z, z_pos, self.tau, negatives=self.negatives)}

    def get_config(self):
        cfg = super().get_config()
        cfg.update(tau=self.tau)
        return cfg
