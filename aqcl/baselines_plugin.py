"""The regularisation baselines of AQCL Table 2 (DropoutNet, DeepMCP, DMR) as auxiliary-loss
plug-ins (:mod:`ctrcore.auxloss`): one config each (``--dropoutnet_*``, ``--deepmcp_*``,
``--dmr_*``); the layers are in :mod:`aqcl.baselines`, imported when built. Registered by
``aqcl/aux_losses.py``."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from ctrcore.auxloss import AuxContext, AuxLossConfig, AuxLossSpec


def rate_problem(rate) -> Optional[str]:
    """DropoutNet's drop probability must be in [0, 1] (shared with ``DropoutNetLoss``)."""
    return None if 0.0 <= rate <= 1.0 else f"must be in [0, 1], got {rate}"


@dataclasses.dataclass(frozen=True)
class DropoutNetConfig(AuxLossConfig):
    flag_prefix = "dropoutnet_"

    rate: float = dataclasses.field(default=0.5, metadata={"help": (
        "DropoutNet baseline: probability an example loses its user or item id.")})

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        p = rate_problem(self.rate)
        return [f"--dropoutnet_rate {p}"] if p else []


@dataclasses.dataclass(frozen=True)
class DeepMCPConfig(AuxLossConfig):
    flag_prefix = "deepmcp_"

    match_weight: float = dataclasses.field(default=0.1, metadata={"help": (
        "DeepMCP baseline: weight of the matching subnet loss.")})
    corr_weight: float = dataclasses.field(default=0.1, metadata={"help": (
        "DeepMCP baseline: weight of the correlation subnet loss.")})


@dataclasses.dataclass(frozen=True)
class DMRConfig(AuxLossConfig):
    flag_prefix = "dmr_"

    weight: float = dataclasses.field(default=0.1, metadata={"help": (
        "DMR baseline: weight of the auxiliary match loss.")})


def build_dropoutnet(cfg: DropoutNetConfig, ctx: AuxContext):
    from aqcl.baselines import DropoutNetLoss

    return DropoutNetLoss(ctx.stats, rate=cfg.rate)


def build_deepmcp(cfg: DeepMCPConfig, ctx: AuxContext):
    from aqcl.baselines import DeepMCPLoss

    return DeepMCPLoss(ctx.stats, match_weight=cfg.match_weight, corr_weight=cfg.corr_weight)


def build_dmr(cfg: DMRConfig, ctx: AuxContext):
    from aqcl.baselines import DMRLoss

    return DMRLoss(ctx.stats, weight=cfg.weight)


DROPOUTNET = AuxLossSpec("dropoutnet", DropoutNetConfig, build_dropoutnet, title="DropoutNet",
                         description="DropoutNet (Volkovs et al. 2017): CE of an id-dropped view")
DEEPMCP = AuxLossSpec("deepmcp", DeepMCPConfig, build_deepmcp, title="DeepMCP",
                      description="DeepMCP (Ouyang et al. 2019): matching + correlation subnets")
DMR = AuxLossSpec("dmr", DMRConfig, build_dmr, title="DMR",
                  description="DMR (Lyu et al. 2020): auxiliary match loss")
