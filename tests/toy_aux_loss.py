"""A test-only auxiliary loss: the whole plug-in in one file (config dataclass, layer, spec).

``tests/test_aux_registry.py`` registers it with one call (``auxloss.register(SPEC)``) and uses
it end to end; nothing else in the repository knows about it. Term: ``{"toy": weight *
mean(logits ** 2)}`` (a logit-norm penalty)."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from ctrcore.auxloss import AuxContext, AuxLossConfig, AuxLossSpec


@dataclasses.dataclass(frozen=True)
class ToyConfig(AuxLossConfig):
    flag_prefix = "toy_"

    weight: float = dataclasses.field(default=0.5, metadata={"help": "Toy: weight of the logit penalty."})
    rows: Optional[int] = dataclasses.field(default=None, metadata={"help": "Toy: first N rows only."})
    scale_by_ce: bool = dataclasses.field(default=False, metadata={"help": "Toy: unused switch."})

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        errs = []
        if self.weight < 0:
            errs.append(f"--toy_weight must be >= 0, got {self.weight}")
        if ctx is not None and ctx.stats is not None and "examples" not in ctx.stats:
            errs.append("the toy loss needs examples in stats.json")
        return errs


def build(cfg: ToyConfig, ctx: AuxContext):
    import tensorflow as tf

    from ctrcore.model import AuxLoss

    class ToyLoss(AuxLoss):
        def __init__(self, weight, rows, **kw):
            super().__init__(name="toy", **kw)
            self.weight, self.rows = weight, rows

        def required_features(self, model):
            return []

        def call(self, model, features, outputs, training=False):
            logits = tf.cast(outputs["logits"], tf.float32)
            if self.rows is not None:
                logits = logits[:self.rows]
            return {"toy": self.weight * tf.reduce_mean(tf.square(logits))}

    return ToyLoss(cfg.weight, cfg.rows)


SPEC = AuxLossSpec("toy", ToyConfig, build, description="test-only logit penalty")
