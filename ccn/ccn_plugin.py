"""The CCN collaborative contrastive loss as an auxiliary-loss plug-in (:mod:`ctrcore.auxloss`):
its config (the ``--ccn_*`` flags), its checks, and how it is built (the layer is
:class:`ccn.aux.CCNLoss`, imported when built so flags validate without TensorFlow).
Registered by ``ccn/aux_losses.py``."""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional

from ctrcore import capabilities
from ctrcore.auxloss import AuxContext, AuxLossConfig, AuxLossSpec, option

ATTRACTION_FORMS = ("vector_cosine", "angle")
ATTRACTION_SCALES = ("unit", "rms")


def attraction_problems(form: str, scale: str, prefix: str = "") -> List[str]:
    """The checks of the two readings of Eq. 7 (docs/method.md 1.4), shared by
    :meth:`CCNConfig.validate` (``prefix="--ccn_"``) and :class:`ccn.aux.CCNLoss`."""
    out = []
    if form not in ATTRACTION_FORMS:
        out.append(f"{prefix}attraction_form={form!r}: choose {' or '.join(ATTRACTION_FORMS)}")
    if scale not in ATTRACTION_SCALES:
        out.append(f"{prefix}attraction_scale={scale!r}: choose {' or '.join(ATTRACTION_SCALES)}")
    return out


def attraction_weight_problem(p_plus: float, p_minus: float, source: str = "stats.json"
                              ) -> str:
    """Why ``P_S- / P_S+`` (Eq. 12's weight of L_S+, from Eq. 9-10) cannot be used ('' when it
    can): P_S+ must be a probability in (0, 1], P_S- one in [0, 1), both finite. P_S+ <= 0
    means two items of a page never share their click label on average (pages of about one
    clicked and one unclicked item), where the weight is undefined: it used to be clipped to
    1e-6 silently, which put a weight near 1e6 on L_S+."""
    vals = f"p_s_plus={p_plus!r}, p_s_minus={p_minus!r}"
    if not (math.isfinite(p_plus) and math.isfinite(p_minus)):
        return (f"{source}: {vals} is not finite: rerun the preprocessing "
                f"(python -m pipelines.preprocess) to rewrite {source}")
    if not 0.0 < p_plus <= 1.0 or not 0.0 <= p_minus < 1.0 + 1e-9:
        return (f"{source}: {vals}: the CCN attraction weight P_S-/P_S+ (Eq. 12) needs "
                f"0 < P_S+ <= 1 and 0 <= P_S- <= 1. P_S+ (Eq. 9) <= 0 means the pages hold on "
                f"average about one clicked and one unclicked item, so two items of a page "
                f"never share their label and L_S+ has nothing to attract. Train without it "
                f"(--model=ccn_no_attraction), or set p_s_plus/p_s_minus in {source} to values "
                f"measured on your pages")
    return ""



@dataclasses.dataclass(frozen=True)
class CCNConfig(AuxLossConfig):
    """The CCN loss (Eq. 5-12): repulsion from S-, attraction to S+, weighted by P_S-/P_S+."""
    flag_prefix = "ccn_"

    lambda_: float = option(0.1, "CCN: weight lambda of the contrastive terms (Eq. 12).")
    tau: float = option(0.5, "CCN: temperature tau of the repulsion loss (paper: 0.5).")
    xi: float = option(0.8, "CCN: temperature xi of the attraction loss (paper: 0.8).")
    attraction_form: str = option("vector_cosine",
        "CCN: reading of Eq. 7's cos: vector_cosine (cosine similarity of e^{s/xi} vectors) | angle "
        "(periodic cos of the angle differences e^{s/xi}, docs/method.md 1.4).")
    attraction_scale: str = option("unit",
        "CCN: exponent of Eq. 7 on the unit direction of s (unit) or on sqrt(D) times it (rms: "
        "unit-RMS components), docs/method.md 1.4.")
    reduction: str = option("valid",
        "CCN: each term's mean over the examples whose S- / S+ is non-empty (valid) or over "
        "the batch as Eq. 12 writes it (batch), docs/method.md 1.2.")
    # set by the model table (the ablations of CCN Table 2), not flags
    use_attraction: bool = dataclasses.field(default=True, metadata={"flag": False})
    use_repulsion: bool = dataclasses.field(default=True, metadata={"flag": False})

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        errs = []
        if self.lambda_ < 0 or self.tau <= 0 or self.xi <= 0:
            errs.append("--ccn_lambda must be >= 0 and --ccn_tau, --ccn_xi > 0")
        errs += attraction_problems(self.attraction_form, self.attraction_scale, "--ccn_")
        if self.reduction not in ("valid", "batch"):
            errs.append(f"--ccn_reduction={self.reduction!r}: choose valid or batch")
        if ctx is not None and ctx.spec is not None:
            ctx_ids = ctx.spec.features.get("context_item_ids")
            lab = ctx.spec.features.get("context_labels")
            if ctx_ids is None or lab is None or not ctx_ids.shape or ctx_ids.shape[0] <= 0:
                errs.append(f"the CCN loss needs in-page context features (context_item_ids, "
                            f"context_labels with max_context > 0); {ctx.spec.root or 'the data'} has none")
        if ctx is not None and ctx.stats is not None and "p_s_plus" not in ctx.stats:
            errs.append("the CCN loss needs p_s_plus in stats.json (Eq. 9)")
        elif ctx is not None and ctx.stats is not None and self.use_attraction:
            p_plus = float(ctx.stats["p_s_plus"])
            p_minus = ctx.stats.get("p_s_minus")
            problem = attraction_weight_problem(
                p_plus, 1.0 - p_plus if p_minus is None else float(p_minus))
            if problem:
                errs.append(problem)
        return errs


def build(cfg: CCNConfig, ctx: AuxContext):
    from ccn.aux import CCNLoss

    return CCNLoss(ctx.stats, lambda_=cfg.lambda_, tau=cfg.tau, xi=cfg.xi,
                   use_attraction=cfg.use_attraction, use_repulsion=cfg.use_repulsion,
                   attraction_form=cfg.attraction_form, attraction_scale=cfg.attraction_scale,
                   reduction=cfg.reduction)


SPEC = AuxLossSpec("ccn", CCNConfig, build, requires=(capabilities.COLLABORATIVE_MODULE,), title="CCN",
                   description="CCN's L_S- and L_S+ (Eq. 5-12) on the collaborative degrees")
