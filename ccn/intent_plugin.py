"""The intent auxiliary task of DIHN / DIAN as an auxiliary-loss plug-in (:mod:`ctrcore.auxloss`);
the layer is :class:`ccn.baselines.IntentLoss`, imported when built. Registered by
``ccn/aux_losses.py``. (When the backbones are split into one module each, this moves next to
the DIHN / DIAN model.)"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from ctrcore import capabilities
from ctrcore.auxloss import AuxContext, AuxLossConfig, AuxLossSpec


@dataclasses.dataclass(frozen=True)
class IntentConfig(AuxLossConfig):
    flag_prefix = "intent_"

    weight: Optional[float] = dataclasses.field(default=None, metadata={"help": (
        "DIHN/DIAN: weight of the intent auxiliary loss (default: 0.8 for DIHN, its Eq. 13; 0.1 "
        "for DIAN).")})

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        errs = []
        if self.weight is not None and self.weight < 0:
            errs.append("--intent_weight must be >= 0")
        if ctx is not None and ctx.spec is not None:
            lab = ctx.spec.features.get("context_labels")
            if lab is None or not lab.shape or lab.shape[0] <= 0:
                errs.append(f"the intent label needs the in-page context features (context_labels, "
                            f"context categories); {ctx.spec.root or 'the data'} has none")
        return errs


def build(cfg: IntentConfig, ctx: AuxContext):
    from ccn.baselines import DEFAULT_INTENT_WEIGHT, IntentLoss

    w = DEFAULT_INTENT_WEIGHT.get(ctx.backbone, 0.1) if cfg.weight is None else cfg.weight
    return IntentLoss(ctx.stats, weight=w)


SPEC = AuxLossSpec("intent", IntentConfig, build, requires=(capabilities.INTENT_NETWORK,),
                   description="DIHN / DIAN intent task: BCE of intent_logit (ccn.baselines)")
