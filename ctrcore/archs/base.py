"""The architecture interface, its hyper-parameters, and the Keras layer that hosts one.

* :class:`HParams` - every backbone hyper-parameter with its default (the keyword arguments of
  ``ctrcore.backbones.build_backbone``; ``TrainConfig.backbone_hparams()`` sets all of them).
* :class:`Architecture` - one per model (``ctrcore/archs/<family>.py``): which item prefixes it
  embeds, the blocks it is built from (created in ``__init__``) and ``apply``, the forward pass
  from an :class:`~ctrcore.archs.embedding.Embedded` view to the output dict (without
  ``emb_l2``, which the view adds).
* :class:`ComposedBackbone` - the ``keras.layers.Layer``: the embedding front-end plus one
  architecture; tracks their layers under the names they declare, and is what is trained,
  checkpointed and exported (``call`` is the serving graph).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple, Type

import tensorflow as tf
import tf_keras as keras

from ctrcore.archs.blocks import Block, PredictionHead
from ctrcore.archs.embedding import Embedded, EmbeddingFrontEnd
from ctrcore.schema import FeatureSpec


@dataclasses.dataclass(frozen=True)
class HParams:
    """Backbone hyper-parameters (each architecture reads the ones it uses)."""
    emb_dim: int = 16  # embedding dimension of every id feature
    mlp_units: Tuple[int, ...] = (200, 80)  # hidden units of the prediction MLP
    dropout: float = 0.2  # dropout of the prediction MLP
    heads: int = 4  # heads of the multi-head target attentions (and DIHN's self-attention)
    l2_emb: float = 0.0  # l2 on the gathered embedding rows (the emb_l2 output)
    l2_dense: float = 0.0  # kernel l2 of the MLPs (in layer.losses)
    cm_dim: int = 16  # dimension of the collaborative degree s (1 = scalar)
    cm_units: Tuple[int, ...] = (64,)  # hidden units of the collaborative module's MLP
    batch_norm: bool = False  # batch norm after each hidden layer of the prediction MLPs
    din_units: Tuple[int, ...] = (80, 40)  # DIN attention MLP (DIN, DIHN)
    din_softmax: bool = False  # DIN attention weights normalised by a softmax
    wide_buckets: int = 1 << 16  # hash buckets of each W&D cross
    use_trigger: Optional[bool] = None  # W&D / DeepFM: add the trigger's ids (and cross); None = no
    activation: str = "relu"  # activation of the hidden layers
    intent_units: Tuple[int, ...] = (64,)  # hidden units of DIHN's / DIAN's intent MLP
    din_att_activation: str = "sigmoid"  # DIN attention unit's hidden activation (+ prelu, dice)
    din_wide: str = ""  # DIN: "" | "linear" (+ first-order id weights) | "wide" (+ the W&D wide head)

    def __post_init__(self):
        for f in ("mlp_units", "cm_units", "din_units", "intent_units"):
            object.__setattr__(self, f, tuple(int(u) for u in getattr(self, f)))

    @classmethod
    def names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> Dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class Inputs:
    """The embeddings every single-network architecture starts from (:meth:`Architecture.embed`)."""
    user: tf.Tensor  # E_user [B, Du]
    target: tf.Tensor  # E_target [B, Di]
    short: tf.Tensor  # short sequence [B, S, Di]
    short_mask: tf.Tensor  # [B, S] bool
    trigger: Optional[tf.Tensor] = None  # E_trigger [B, Di] (trigger-aware architectures)

    def outputs(self) -> Dict[str, tf.Tensor]:
        """The embedding outputs: ``user_emb``, ``target_emb`` (, ``trigger_emb``)."""
        out = {"user_emb": self.user, "target_emb": self.target}
        if self.trigger is not None:
            out["trigger_emb"] = self.trigger
        return out


class Architecture(Block):
    """One model's forward pass from the shared embeddings, built from blocks.

    Class attributes: ``kind`` (the ``build_backbone`` name), ``has_collaborative_module``,
    ``reads_long`` (embeds the long sequence); ``trigger_aware`` (embeds the trigger) may be set
    per instance. Subclasses create their blocks in ``__init__`` (in the order their layers are
    tracked: the order of 7d683ae's attributes, which fixes the order of ``backbone.variables``)
    and implement :meth:`apply`.
    """
    kind: str = ""
    trigger_aware: bool = False
    reads_long: bool = False
    has_collaborative_module: bool = False

    def __init__(self, front: EmbeddingFrontEnd, hp: HParams):
        super().__init__()
        self.front, self.hp = front, hp

    @property
    def prefixes(self) -> List[str]:
        """The item prefixes embedded (serving inputs besides the user features)."""
        return ["", "short_"] + (["trigger_"] if self.trigger_aware else []) + (["long_"] if self.reads_long else [])

    def prediction_head(self, **names) -> PredictionHead:
        """A :class:`~ctrcore.archs.blocks.PredictionHead` with the prediction-MLP hyper-parameters
        (``names``: its attribute / layer names)."""
        hp = self.hp
        return PredictionHead(hp.mlp_units, activation=hp.activation, dropout=hp.dropout,
                              batch_norm=hp.batch_norm, l2=hp.l2_dense, **names)

    def embed(self, emb: Embedded) -> Inputs:
        """Gathers E_user, E_target, the short sequence and (trigger-aware) E_trigger, in this
        order (the order fixes the embedding-dropout draws)."""
        user = emb.user()
        target, _ = emb.items("")
        short, short_mask = emb.items("short_")
        trigger = emb.items("trigger_")[0] if self.trigger_aware else None
        return Inputs(user, target, short, short_mask, trigger)

    def apply(self, emb: Embedded, training=False) -> Dict[str, tf.Tensor]:
        """The output dict (``logits``, ``latent``, the embeddings, architecture extras)."""
        raise NotImplementedError

    def collaborative_degree(self, user_emb, item_emb, trigger_emb):
        raise ValueError(f"backbone {self.kind!r} has no collaborative module")


class DeepAndShallow(Architecture):
    """W&D and DeepFM: the prediction MLP (``self.head``, created first) beside a shallow head
    that the subclass adds; the trigger's ids are embedded only with ``use_trigger=True``."""

    def __init__(self, front: EmbeddingFrontEnd, hp: HParams):
        super().__init__(front, hp)
        self.trigger_aware = bool(hp.use_trigger)
        self.head = self.add(self.prediction_head())


class ComposedBackbone(keras.layers.Layer):
    """A backbone: :class:`EmbeddingFrontEnd` + one :class:`Architecture` (module docstring of
    :mod:`ctrcore.backbones` for the inputs and outputs).

    ``hparams``: the fields of :class:`HParams`; other keyword arguments go to
    ``keras.layers.Layer``. XLA: ``lookup(features)`` (hash tables, outside XLA) returns int32
    ids; ``apply(ids, ...)`` is XLA-safe; ``call(features) = apply(lookup(features))`` and
    ``lookup`` is idempotent on integer inputs.
    """

    def __init__(self, spec: FeatureSpec, architecture: Type[Architecture], name: Optional[str] = None,
                 **kwargs):
        hp = HParams(**{k: kwargs.pop(k) for k in HParams.names() if k in kwargs})
        super().__init__(name=name or architecture.kind, **kwargs)
        self.spec, self.kind = spec, architecture.kind
        front = EmbeddingFrontEnd(spec, hp.emb_dim, hp.l2_emb)
        arch = architecture(front, hp)
        self.front, self.arch = front, arch  # plain objects: not tracked (no level in the paths)
        self.hparams = dict(hp.to_dict(), use_trigger=arch.trigger_aware)
        self.serving_inputs = front.inputs(arch.prefixes)
        # the layers, tracked under the names (and in the order) of 7d683ae's Backbone attributes
        for attr, layer in front.named_layers() + arch.named_layers():
            setattr(self, attr, layer)

    # -- what the plug-ins and the trainer read -------------------------------------------------
    @property
    def has_collaborative_module(self) -> bool:
        return bool(self.arch.has_collaborative_module)

    @property
    def trigger_aware(self) -> bool:
        return bool(self.arch.trigger_aware)

    @property
    def category_index(self) -> int:
        """Position of the category among the item sides (``spec.config.item_side``)."""
        return self.front.category_index

    def category_feature(self, prefix: str) -> str:
        """The spec feature of a prefix's category side (e.g. ``"trigger_category_id"``)."""
        return self.front.category_feature(prefix)

    def lookup(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Raw features -> ``{name: int32 ids}`` (:meth:`EmbeddingFrontEnd.lookup`). Not
        XLA-compilable."""
        return self.front.lookup(features)

    def embedding_tables(self) -> list:
        """The sparse (row-gathered) tables: per-vocab embeddings, wide/linear weights, crosses."""
        return self.front.embedding_tables() + self.arch.embedding_tables()

    def embed_items(self, features, prefix: str, emb_dropout: float = 0.0, seed=None):
        """Item embeddings ``[B, Di]`` (prefix "" / "trigger_") or ``[B, C, Di]`` (prefix
        "context_" / "short_" / "long_"), from raw or looked-up features (same tables as the target)."""
        return self.front.embed_items(features, prefix, emb_dropout, seed)

    def item_mask(self, features, prefix: str):
        """Padding mask (bool) of a prefix's items (item id != padding)."""
        return self.front.item_mask(features, prefix)

    def collaborative_degree(self, user_emb, item_emb, trigger_emb):
        """CCN Eq. 4 (:class:`~ctrcore.archs.blocks.CollaborativeModule`); ``item_emb`` is
        ``[B, Di]`` or ``[B, C, Di]``. Raises ValueError without a collaborative module."""
        return self.arch.collaborative_degree(user_emb, item_emb, trigger_emb)

    # -- forward ----------------------------------------------------------------------------------
    def call(self, features, training=False, emb_dropout: float = 0.0, seed=None):
        return self.apply(self.lookup(features), training=training, emb_dropout=emb_dropout, seed=seed)

    def apply(self, ids, training=False, emb_dropout: float = 0.0, seed=None):
        """The XLA-safe part: looked-up int32 ids -> the output dict."""
        emb = self.front.begin(ids, emb_dropout, seed)
        return emb.finish(self.arch.apply(emb, training=training))
