"""CCN auxiliary loss plug-in (``AuxLoss`` protocol, docs/architecture.md section 4).

``CCNLoss(stats, lambda_, tau, xi, use_attraction, use_repulsion)(model, features, outputs,
training)`` returns the *weighted* terms of Eq. 12::

    {"ccn_repulsion": lambda * L_S-,  "ccn_attraction": lambda * P_S-/P_S+ * L_S+}

(a term switched off for an ablation is simply not returned). The context items' collaborative
degrees are computed here (training only): the context embeddings come from the backbone's
shared item tables (``embed_items(features, "context_")``) and go through the backbone's own
collaborative module (``collaborative_degree``, Eq. 4), so the serving graph never sees them.
"""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf

from ccn import losses as closs
from ccn.ccn_plugin import attraction_problems, attraction_weight_problem

from ctrcore.model import AuxLoss

__all__ = ["CCNLoss", "p_from_stats"]


def p_from_stats(stats: Optional[dict]) -> tuple:
    """``(P_S+, P_S-)`` (Eq. 9-10) from stats.json: ``p_s_plus`` / ``p_s_minus`` if present,
    else computed from ``avg_unclicked_per_page`` (N0) and ``avg_clicked_per_page`` (N1); as
    they are (:class:`CCNLoss` refuses values its weight cannot use)."""
    stats = stats or {}
    if stats.get("p_s_plus") is not None:
        p_plus = float(stats["p_s_plus"])
    elif "avg_unclicked_per_page" in stats and "avg_clicked_per_page" in stats:
        p_plus = closs.p_s_plus(float(stats["avg_unclicked_per_page"]),
                                float(stats["avg_clicked_per_page"]), floor=0.0)
    else:
        raise ValueError("CCNLoss needs p_s_plus (or avg_clicked_per_page and "
                         "avg_unclicked_per_page) in the stats (Eq. 9)")
    p_minus = float(stats["p_s_minus"]) if stats.get("p_s_minus") is not None else 1.0 - p_plus
    return p_plus, p_minus


class CCNLoss(AuxLoss):
    """CCN collaborative contrastive loss (Eq. 5-12) as an aux-loss layer.

    Args:
      stats: stats.json dict (``p_s_plus``/``p_s_minus`` or ``avg_*_per_page``).
      lambda_: lambda of Eq. 12. tau, xi: temperatures of Eq. 5 and Eq. 7 (paper: 0.5, 0.8).
      use_attraction, use_repulsion: switch L_S+ / L_S- off (Table 2 ablations).
      attraction_form: Eq. 7's cos as the cosine of two vectors ("vector_cosine") or as the
        periodic cosine of angle differences ("angle"); attraction_scale: the exponent's
        unit direction as is ("unit") or times sqrt(D) ("rms"); see
        :func:`ccn.losses.attraction_loss_per_example`.
      reduction: each term's mean over the examples having its set ("valid") or over the batch
        ("batch", Eq. 12's 1/|D|), :func:`ccn.losses.masked_mean`.
      similarity, weighting, stop_gradient_weights, normalize: the reading of the paper, see
        :mod:`ccn.losses` and docs/method.md.
    """

    def __init__(self, stats=None, lambda_=0.1, tau=0.5, xi=0.8, use_attraction=True,
                 use_repulsion=True, similarity="cosine", weighting="similarity",
                 stop_gradient_weights=False, normalize=True, attraction_form="vector_cosine",
                 attraction_scale="unit", reduction="valid", name="ccn", **kwargs):
        super().__init__(name=name, **kwargs)
        self.p_plus, self.p_minus = p_from_stats(stats)
        if use_attraction:  # the weight P_S-/P_S+ multiplies L_S+ only
            problem = attraction_weight_problem(self.p_plus, self.p_minus)
            if problem:
                raise ValueError(problem)
        self.lambda_ = float(lambda_)
        self.tau, self.xi = float(tau), float(xi)
        self.use_attraction, self.use_repulsion = bool(use_attraction), bool(use_repulsion)
        self.similarity, self.weighting = similarity, weighting
        self.stop_gradient_weights = bool(stop_gradient_weights)
        self.normalize = bool(normalize)
        problems = attraction_problems(attraction_form, attraction_scale)
        if problems:
            raise ValueError("; ".join(problems))
        self.attraction_form, self.attraction_scale = attraction_form, attraction_scale
        if reduction not in closs.REDUCTIONS:
            raise ValueError(f"reduction {reduction!r}: one of {list(closs.REDUCTIONS)}")
        self.reduction = reduction

    @property
    def attraction_weight(self) -> float:
        """P_S- / P_S+ (Eq. 12)."""
        return self.p_minus / self.p_plus

    def required_features(self, model):
        """The context items' sides and their labels (the target's label is always parsed)."""
        from ctrcore.layers import item_feature_names

        return list(item_feature_names(model.spec, "context_")) + ["context_labels"]

    def context_degrees(self, model, features, outputs):
        """Collaborative degrees of the context items, [B, C, Ds] (Eq. 4)."""
        bb = model.backbone
        if not getattr(bb, "has_collaborative_module", False):
            raise ValueError("CCNLoss needs a backbone with the collaborative module "
                             "(outputs 's_target' and collaborative_degree)")
        ctx_emb = bb.embed_items(features, "context_")  # [B, C, Di], same tables as the target
        # collaborative_degree broadcasts user_emb [B, Du] and trigger_emb [B, Di] over C
        return bb.collaborative_degree(outputs["user_emb"], ctx_emb, outputs["trigger_emb"])

    def call(self, model, features, outputs, training=False) -> Dict[str, tf.Tensor]:
        s_target = outputs["s_target"]
        s_ctx = self.context_degrees(model, features, outputs)
        labels = features[model.spec.label]
        ctx_labels = features["context_labels"]
        # L_S- (Eq. 5-6) and L_S+ (Eq. 7-8) of closs.repulsion_loss / closs.attraction_loss, with
        # their common parts (set masks, scores, normalised degrees) computed once
        l_minus, l_plus = closs.ccn_losses(
            s_target, s_ctx, ctx_labels, labels, self.tau, self.xi,
            use_repulsion=self.use_repulsion, use_attraction=self.use_attraction,
            similarity=self.similarity, weighting=self.weighting,
            stop_gradient_weights=self.stop_gradient_weights, normalize=self.normalize,
            form=self.attraction_form, exponent_scale=self.attraction_scale,
            reduction=self.reduction)
        terms = {}
        if self.use_repulsion:
            terms["ccn_repulsion"] = self.lambda_ * l_minus
        if self.use_attraction:
            terms["ccn_attraction"] = self.lambda_ * self.attraction_weight * l_plus
        return terms

    def get_config(self):
        cfg = super().get_config()
        cfg.update(lambda_=self.lambda_, tau=self.tau, xi=self.xi,
                   use_attraction=self.use_attraction, use_repulsion=self.use_repulsion,
                   similarity=self.similarity, weighting=self.weighting,
                   stop_gradient_weights=self.stop_gradient_weights, normalize=self.normalize,
                   attraction_form=self.attraction_form, attraction_scale=self.attraction_scale,
                   reduction=self.reduction, stats={"p_s_plus": self.p_plus, "p_s_minus": self.p_minus})
        return cfg
