"""The Keras classes of the CCN paper's trigger-based competitors DIHN and DIAN (CCN Table 2).

The architectures are :class:`ctrcore.archs.intent.DIHN` / ``DIAN`` (the formulas are in that
module's docstring); the classes here host them under the class paths of 7d683ae
(``tests/test_golden.py`` compares them). Build with ``ctrcore.backbones.build_backbone``.
"""
from __future__ import annotations

from typing import Optional

from ctrcore.archs import ComposedBackbone, intent
from ctrcore.archs.intent import mixture_logit

__all__ = ["DIAN", "DIHN", "TRIGGER_BACKBONES", "mixture_logit"]


class DIHN(ComposedBackbone):
    """Deep Interest Highlight Network (:class:`ctrcore.archs.intent.DIHN`)."""

    def __init__(self, spec, name: Optional[str] = None, **hparams):
        super().__init__(spec, intent.DIHN, name=name, **hparams)


class DIAN(ComposedBackbone):
    """Deep Intention-Aware Network (:class:`ctrcore.archs.intent.DIAN`)."""

    def __init__(self, spec, name: Optional[str] = None, **hparams):
        super().__init__(spec, intent.DIAN, name=name, **hparams)


TRIGGER_BACKBONES = {"dihn": DIHN, "dian": DIAN}
