"""AQCL and its ICL baseline as auxiliary-loss plug-ins (:mod:`ctrcore.auxloss`): their configs
(the ``--aqcl_*`` flags, shared by both: ICL's are AQCL's two-view part), their checks, and how
they are built (the layers are :class:`aqcl.aux.AQCLLoss` / :class:`aqcl.aux.ICLLoss`, imported
when built so flags validate without TensorFlow). Registered by ``aqcl/aux_losses.py``."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from ctrcore.auxloss import AuxContext, AuxLossConfig, AuxLossSpec, option


def view_rows_problem(view_rows) -> Optional[str]:
    """The rule on ``view_rows`` (None, or an integer >= 2: in-batch negatives), shared by
    :meth:`ICLConfig.validate` and the layers (``aqcl.aux``); ``None`` when it holds."""
    if view_rows is not None and (view_rows != int(view_rows) or view_rows < 2):
        return f"must be an integer >= 2 (in-batch negatives), got {view_rows}"
    return None


def codebook_problem(size, top_k) -> Optional[str]:
    """The rule on the codebook size T and the K nearest codewords: 0 < K <= T."""
    if size <= 0 or not 0 < top_k <= size:
        return "must be > 0 and 0 < top_k <= codebook_size"
    return None



@dataclasses.dataclass(frozen=True)
class ICLConfig(AuxLossConfig):
    """ICL (Eq. 2): the two-view part AQCL shares."""
    flag_prefix = "aqcl_"

    weight: float = option(0.05,
        "AQCL/ICL: weight w of the auxiliary task (paper searches {0.01, 0.05, 0.1}).")
    z_dim: int = option(64,
        "AQCL/ICL: dimension of the projection z of the latent h.")
    tau: float = option(0.1,
        "AQCL/ICL: temperatures tau1 = tau2 = tau3 (paper: 0.1).")
    mask_rate: float = option(0.2,
        "AQCL/ICL augmentation: fraction of history items masked.")
    emb_dropout: float = option(0.1,
        "AQCL/ICL augmentation: embedding dropout of the second view.")
    # a float flag (as it always was) so that a non-integer is reported by validate()
    view_rows: Optional[float] = option(None,
        "AQCL/ICL: compute the second view and the contrastive term on the first N examples of "
        "each (shuffled) batch only (default: all, as in the paper); the codebook loss keeps the "
        "whole batch. Cuts the second view's cost to N/B (benchmarks/RESULTS.md section 2) and, "
        "measured on Beauty, most of AQCL's gain (docs/method.md 2.8).")

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        errs = []
        if self.weight < 0 or self.tau <= 0 or self.z_dim <= 0:
            errs.append("--aqcl_weight must be >= 0, --aqcl_tau and --aqcl_z_dim > 0")
        if not 0.0 <= self.mask_rate < 1.0 or not 0.0 <= self.emb_dropout < 1.0:
            errs.append("--aqcl_mask_rate and --aqcl_emb_dropout must be in [0, 1)")
        p = view_rows_problem(self.view_rows)
        if p:
            errs.append(f"--aqcl_view_rows {p}")
        return errs

    def layer_args(self) -> dict:
        return dict(weight=self.weight, z_dim=self.z_dim, mask_rate=self.mask_rate,
                    emb_dropout=self.emb_dropout,
                    view_rows=None if self.view_rows is None else int(self.view_rows))


@dataclasses.dataclass(frozen=True)
class AQCLConfig(ICLConfig):
    """AQCL (Eq. 3-8): ICL's two views plus the codebook and the alpha adaptation."""

    w1: float = option(1.0,
        "AQCL: w1 of alpha = R(L) = exp(-w1 * (L / L_bar)^w2) (Eq. 6).")
    w2: float = option(1.0, ("AQCL: w2 of alpha = R(L) (Eq. 6)."))
    const_alpha: Optional[float] = option(None,
        "AQCL: use this constant alpha instead of R(L) (ablation).")
    codebook_size: int = option(128,
        "AQCL: codebook capacity T (paper: 128).")
    top_k: int = option(5, ("AQCL: K nearest codewords (paper: 5)."))

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        errs = super().validate(ctx)
        if codebook_problem(self.codebook_size, self.top_k):
            errs.append("--aqcl_codebook_size must be > 0 and 0 < --aqcl_top_k <= --aqcl_codebook_size")
        if self.w1 <= 0 or self.w2 <= 0:
            errs.append("--aqcl_w1 and --aqcl_w2 must be > 0 (Eq. 6)")
        ca = self.const_alpha
        if ca is not None and not 0.0 <= ca <= 1.0:
            errs.append(f"--aqcl_const_alpha must be in [0, 1], got {ca}")
        if ctx is not None and ctx.stats is not None and "mean_history_length" not in ctx.stats:
            errs.append("AQCL needs mean_history_length in stats.json (Eq. 6)")
        return errs


def build_aqcl(cfg: AQCLConfig, ctx: AuxContext):
    from aqcl.aux import AQCLLoss

    return AQCLLoss(ctx.stats, T=cfg.codebook_size, K=cfg.top_k, tau1=cfg.tau, tau2=cfg.tau,
                    tau3=cfg.tau, w1=cfg.w1, w2=cfg.w2, const_alpha=cfg.const_alpha, **cfg.layer_args())


def build_icl(cfg: ICLConfig, ctx: AuxContext):
    from aqcl.aux import ICLLoss

    return ICLLoss(ctx.stats, tau=cfg.tau, **cfg.layer_args())


AQCL = AuxLossSpec("aqcl", AQCLConfig, build_aqcl, title="AQCL",
                   excludes={"icl": "aqcl already contains the instance-level term; do not combine with icl"},
                   description="AQCL (Eq. 3-8): adaptive quantised contrastive learning + codebook")
ICL = AuxLossSpec("icl", ICLConfig, build_icl, title="ICL",
                  description="ICL (AQCL Eq. 2): instance-level contrastive learning (AQCL Table 2)")
