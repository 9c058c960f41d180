"""Composable backbones: an embedding front-end, blocks, and one small class per architecture.

Layout (``ctrcore/archs/``):

================= =================================================================================
``embedding.py``  :class:`EmbeddingFrontEnd` (lookups, one table per vocabulary, item embedder) and
                  :class:`Embedded`, the per-pass view (embedding dropout, the ``emb_l2`` finish)
``blocks.py``     the blocks: SIM category search, collaborative module, prediction head, W&D
                  and DeepFM heads (+ ``ctrcore.layers``' TargetAttention and DinAttention)
``base.py``       :class:`HParams` (every hyper-parameter), :class:`Architecture` (the interface)
                  and :class:`ComposedBackbone`, the Keras layer = front-end + one architecture
``wide_deep.py``  :class:`WideDeep` (``wide_deep``)
``deepfm.py``     :class:`DeepFM` (``deepfm``)
``din.py``        :class:`DIN`, :class:`SIM` (``din``, ``sim``)
``trigger.py``    :class:`TANBase`, :class:`TANNoTSI`, :class:`TAN` (``tan_base``, ``tan_notsi``, ``tan``)
``intent.py``     :class:`DIHN`, :class:`DIAN` (``dihn``, ``dian``: the CCN paper's competitors)
================= =================================================================================

:data:`ARCHITECTURES` maps a backbone name to its class; ``ctrcore.backbones.build_backbone``
builds one (``ctrcore/backbones.py`` and ``ctrcore/trigger_backbones.py`` keep the Keras class
paths of 7d683ae, ``ctrcore.backbones.Backbone`` / ``ctrcore.trigger_backbones.DIHN|DIAN``, as
thin subclasses of :class:`ComposedBackbone`; ``tests/test_golden.py`` compares them).

Checkpoint compatibility: front-end, blocks and architectures are plain Python objects, not
Keras layers, so they add no level to the checkpoint paths; each declares the backbone attribute
its layers are tracked under (``Block.named_layers``), and :class:`ComposedBackbone` sets those
attributes in declaration order. The names and the order are those of 7d683ae's ``Backbone``
(``backbone/tables/item_id/embeddings``, ``backbone/att_target_long/mha/...``,
``backbone/cm_mlp/...``, ``backbone/mlp/...``, ``backbone/out/...``), so ``backbone.variables``
(the SavedModel's variable list) has the same order and old checkpoints restore.
"""
from __future__ import annotations

from typing import Dict, Type

from ctrcore.archs.base import Architecture, ComposedBackbone, HParams
from ctrcore.archs.deepfm import DeepFM
from ctrcore.archs.din import DIN, SIM
from ctrcore.archs.embedding import CATEGORY_SIDE, Embedded, EmbeddingFrontEnd
from ctrcore.archs.intent import DIAN, DIHN, mixture_logit
from ctrcore.archs.trigger import TAN, TANBase, TANNoTSI
from ctrcore.archs.wide_deep import WideDeep

#: backbone name -> architecture class (the order of ``ctrcore.backbones.BACKBONES``)
ARCHITECTURES: Dict[str, Type[Architecture]] = {a.kind: a for a in (
    WideDeep, DeepFM, DIN, SIM, TANBase, TANNoTSI, TAN, DIHN, DIAN)}

__all__ = ["ARCHITECTURES", "Architecture", "CATEGORY_SIDE", "ComposedBackbone", "DIAN", "DIHN", "DIN",
           "DeepFM", "Embedded", "EmbeddingFrontEnd", "HParams", "SIM", "TAN", "TANBase", "TANNoTSI",
           "WideDeep", "mixture_logit"]
