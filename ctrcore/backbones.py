"""CTR backbones: the registry and builder (:func:`build_backbone`).

``wide_deep``, ``deepfm``, ``din``, ``sim``, ``tan_base``, ``tan_notsi``, ``tan`` and the CCN
paper's competitors ``dihn``, ``dian``; each is an architecture class of :mod:`ctrcore.archs`
(one file per model family, built from the shared embedding front-end and blocks; the layout is
in that package's docstring), hosted by a Keras layer: :class:`Backbone` here, and
``ctrcore.trigger_backbones.DIHN`` / ``DIAN`` (the class paths of 7d683ae, which
``tests/test_golden.py`` compares, as thin subclasses of ``ctrcore.archs.ComposedBackbone``).

Every variant uses the same embedding code (one ``IdEmbedding`` table per vocabulary, shared by
target / trigger / sequences / context; E_x = item ⊕ category ⊕ seller embeddings, E_user =
user id ⊕ profile). The formulas are in each architecture's module docstring.

Outputs of ``backbone(features, training=False, emb_dropout=0.0, seed=None)`` (a dict):
``logits [B]``, ``latent [B, H]`` (the prediction MLP's last hidden layer; the deep side's for
W&D / DeepFM; ``logits = Dense(1)(latent)`` + wide / FM terms), ``user_emb``, ``target_emb``,
``trigger_emb`` (trigger-aware backbones), ``s_target`` (collaborative module), ``intent_logit``
(DIHN / DIAN), ``emb_l2`` (with ``l2_emb > 0``).

XLA: string -> id lookups are not XLA-compilable. ``backbone.lookup(features)`` (hash tables,
run outside XLA) returns int32 ids; ``backbone.apply(ids, ...)`` is XLA-safe.
``call(features) = apply(lookup(features))`` and ``lookup`` is idempotent on integer inputs, so
both raw and looked-up feature dicts can be passed to ``call`` / ``embed_items``. ``CTRModel``
(ctrcore/model.py) uses this for ``compile(jit_compile=True)``: lookups in the outer
``tf.function``, forward + backward in an inner ``tf.function(jit_compile=True)``, optimizer
update outside XLA.
"""
from __future__ import annotations

from typing import Optional

from ctrcore.archs import ARCHITECTURES, CATEGORY_SIDE, ComposedBackbone, HParams
from ctrcore.schema import FeatureSpec
from ctrcore.trigger_backbones import TRIGGER_BACKBONES

BACKBONES = tuple(ARCHITECTURES)
#: build_backbone's keyword arguments (the fields of ``ctrcore.archs.HParams``)
HPARAMS = tuple(HParams.names())

__all__ = ["BACKBONES", "CATEGORY_SIDE", "HPARAMS", "Backbone", "build_backbone"]


class Backbone(ComposedBackbone):
    """The Keras layer of the single-network architectures (every name of :data:`BACKBONES` but
    ``dihn`` / ``dian``); ``kind`` names the architecture. Build with :func:`build_backbone`."""

    def __init__(self, spec: FeatureSpec, kind: str, name: Optional[str] = None, **kwargs):
        if kind not in ARCHITECTURES or kind in TRIGGER_BACKBONES:
            raise ValueError(f"unknown backbone {kind!r}; expected one of "
                             f"{tuple(k for k in BACKBONES if k not in TRIGGER_BACKBONES)}")
        super().__init__(spec, ARCHITECTURES[kind], name=name, **kwargs)


def build_backbone(name: str, spec: FeatureSpec, **hparams) -> ComposedBackbone:
    """``name`` in :data:`BACKBONES`; ``hparams`` (:class:`ctrcore.archs.HParams`): emb_dim=16,
    mlp_units=(200, 80), dropout=0.2, heads=4, l2_emb=0.0 (l2 on the looked-up embedding rows,
    reported as the ``emb_l2`` output), l2_dense=0.0 (kernel l2 of the MLPs, in
    ``layer.losses``), cm_dim=16 (1 = scalar s), cm_units=(64,), batch_norm=False,
    din_units=(80, 40), din_softmax=False, wide_buckets=65536, use_trigger (W&D / DeepFM only:
    add trigger ids / cross; default False), activation="relu", intent_units=(64,) (DIHN / DIAN).
    A hyper-parameter an architecture does not use is ignored."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")
    if name in TRIGGER_BACKBONES:
        return TRIGGER_BACKBONES[name](spec, **hparams)
    return Backbone(spec, name, **hparams)
