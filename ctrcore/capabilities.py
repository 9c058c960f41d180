"""What each backbone provides to the training-only plug-ins (auxiliary losses).

An auxiliary loss declares the capabilities it reads (``AuxLossSpec.requires``,
:mod:`ctrcore.auxloss`); they are checked against this table by backbone name, without building
the backbone, so flags validate without TensorFlow. ``tests/test_aux_registry.py`` checks the
table against the built backbones. (Kept apart from the architectures of ``ctrcore.archs``,
which import TensorFlow; their ``has_collaborative_module`` / ``intent_logit`` output is what the
test compares this table with.)
"""
from __future__ import annotations

from typing import Dict, FrozenSet, List

#: the collaborative module of CCN Eq. 4: output ``s_target`` and
#: ``backbone.collaborative_degree(user_emb, item_emb, trigger_emb)``
COLLABORATIVE_MODULE = "collaborative_module"
#: an intent network (DIHN / DIAN): output ``intent_logit``
INTENT_NETWORK = "intent_network"

#: capability -> how messages describe it
DESCRIPTIONS: Dict[str, str] = {
    COLLABORATIVE_MODULE: "the collaborative module (s_target, collaborative_degree)",
    INTENT_NETWORK: "an intent network (intent_logit)",
}

#: backbone name -> its capabilities (a backbone not listed has none)
BACKBONES: Dict[str, FrozenSet[str]] = {
    "tan_notsi": frozenset({COLLABORATIVE_MODULE}),
    "tan": frozenset({COLLABORATIVE_MODULE}),
    "dihn": frozenset({INTENT_NETWORK}),
    "dian": frozenset({INTENT_NETWORK}),
}


def provided_by(backbone: str) -> FrozenSet[str]:
    return BACKBONES.get(backbone, frozenset())


def providers(capability: str) -> List[str]:
    """Sorted names of the backbones with ``capability``."""
    return sorted(b for b, caps in BACKBONES.items() if capability in caps)
