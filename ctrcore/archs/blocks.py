"""Blocks the architectures are built from.

A block is plain Python, not a Keras layer (see :mod:`ctrcore.archs`): it owns Keras layers and
declares, in :meth:`Block.named_layers`, the backbone attribute each is tracked under (the
checkpoint name), in creation order. One-layer blocks are the layers of :mod:`ctrcore.layers`
themselves: ``TargetAttention`` (single-query multi-head target attention) and ``DinAttention``
(DIN attention pooling); an architecture tracks them with :meth:`Block.track`.

=========================== ==================================================================
:class:`CategorySearch`     SIM hard search of the long sequence by the query's category, pooled
                            by target attention (the one copy of the long-sequence search)
:class:`CollaborativeModule` CCN Eq. 4: ``s = MLP(LN(E_user) ⊕ LN(E ⊙ E_trigger))``
:class:`PredictionHead`     the prediction MLP and its logit: ``latent``, ``logit``
:class:`LinearTerms`        first-order (1-d) weights of id features (wide part / FM first order)
:class:`WideHead`           W&D wide part: linear terms + hashed category crosses
:class:`FMHead`             DeepFM: FM fields, first order + second order
=========================== ==================================================================
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras as keras

from ctrcore import layers as L
from ctrcore.archs.embedding import Embedded, EmbeddingFrontEnd
from ctrcore.schema import PAD_ID


class Block:
    """Owns layers (``named_layers``: ``[(backbone attribute, layer)]`` in creation order) and
    sub-blocks; ``embedding_tables()``: its sparse (row-gathered) layers."""

    def __init__(self):
        self._parts: List[Union[Tuple[str, object], "Block"]] = []

    def track(self, attr: str, layer):
        """Register ``layer`` under the backbone attribute ``attr``; returns it."""
        self._parts.append((attr, layer))
        return layer

    def add(self, block: "Block") -> "Block":
        """Register a sub-block (its layers follow those registered so far); returns it."""
        self._parts.append(block)
        return block

    def named_layers(self) -> List[Tuple[str, object]]:
        out: List[Tuple[str, object]] = []
        for p in self._parts:
            out.extend(p.named_layers() if isinstance(p, Block) else [p])
        return out

    def embedding_tables(self) -> list:
        return [t for p in self._parts if isinstance(p, Block) for t in p.embedding_tables()]


class CategorySearch(Block):
    """SIM hard search + target attention: the query attends over the long-sequence positions
    whose category is the query's (``ctrcore.layers.sim_hard_search``; a padding / OOV query
    category matches nothing, the result is then zeros)."""

    def __init__(self, attr: str, heads: int, name: str):
        super().__init__()
        self.attention = self.track(attr, L.TargetAttention(heads, name=name))

    @staticmethod
    def mask(emb: Embedded, query_prefix: str, long_mask):
        """The hard-search mask ``[B, L]``: valid long-sequence positions of the category of
        ``query_prefix`` (``""`` the target, ``"trigger_"`` the trigger)."""
        return L.sim_hard_search(None, emb.category("long_"), emb.category(query_prefix), long_mask)

    def __call__(self, emb: Embedded, query, query_prefix: str, long, long_mask, training=False):
        """``query [B, Di]`` of ``query_prefix`` over ``long [B, L, Di]`` (``emb.items("long_")``)
        -> ``[B, Di]``."""
        return self.attention(query, long, self.mask(emb, query_prefix, long_mask), training=training)


class CollaborativeModule(Block):
    """CCN Eq. 4, ``s = MLP_cm(E_user ⊕ (E ⊙ E_trigger))``, with layer norm on both inputs
    (docs/method.md §1.1: at initialisation E ⊙ E_trigger is ~30x smaller than E_user, so s was
    the same vector for every item of a page and the CCN losses had no gradient to act on)."""

    def __init__(self, units: Sequence[int], dim: int, activation: str = "relu", l2: float = 0.0):
        super().__init__()
        self.mlp = self.track("cm_mlp", L.MLP(list(units) + [dim], activation=activation, linear_last=True,
                                              l2=l2, name="collaborative_module"))
        self.norm_user = self.track("cm_norm_user", keras.layers.LayerNormalization(name="cm_norm_user"))
        self.norm_interaction = self.track("cm_norm_interaction",
                                           keras.layers.LayerNormalization(name="cm_norm_interaction"))

    def __call__(self, user_emb, item_emb, trigger_emb):
        """``item_emb [B, Di]`` or ``[B, C, Di]``; ``user_emb [B, Du]`` and ``trigger_emb [B, Di]``
        broadcast over C. Returns ``[B, dim]`` or ``[B, C, dim]``."""
        # [B, Du]: before the broadcast (LN is built for rank 2); once per step when the target's
        # and the context items' degrees (CCN loss) share E_user (L.GatherMemo)
        memo = L.GatherMemo.active()
        if memo is not None:
            user_emb = memo.once(self.norm_user, user_emb, lambda: self.norm_user(user_emb))
        else:
            user_emb = self.norm_user(user_emb)
        inter = item_emb * (trigger_emb[:, None, :] if item_emb.shape.rank == 3 else trigger_emb)
        di = inter.shape[-1]
        inter = tf.reshape(self.norm_interaction(tf.reshape(inter, [-1, di])), tf.shape(inter))
        if item_emb.shape.rank == 3:  # W_user . E_user once per example, not once per item
            return self.mlp.call_broadcast(user_emb, inter)
        return self.mlp(tf.concat([user_emb, inter], axis=-1))


class PredictionHead(Block):
    """``latent = MLP(x)`` (the last hidden layer), ``logit = Dense(1)(latent)[:, 0]``."""

    def __init__(self, units: Sequence[int], activation: str = "relu", dropout: float = 0.0,
                 batch_norm: bool = False, l2: float = 0.0, mlp_attr: str = "mlp", out_attr: str = "out",
                 mlp_name: str = "prediction_mlp", out_name: str = "logit"):
        super().__init__()
        self.mlp = self.track(mlp_attr, L.MLP(units, activation=activation, dropout=dropout,
                                              batch_norm=batch_norm, l2=l2, name=mlp_name))
        self.out = self.track(out_attr, keras.layers.Dense(1, name=out_name))

    def __call__(self, x, training=False):
        latent = self.mlp(x, training=training)
        return latent, self.out(latent)[:, 0]


class LinearTerms(Block):
    """One zero-initialised 1-d weight per id of each vocabulary of ``features``;
    ``__call__(ids)`` -> the sum over ``features`` ``[B]``."""

    def __init__(self, front: EmbeddingFrontEnd, features: Sequence[str]):
        super().__init__()
        self.front, self.features = front, list(features)
        vocabs = sorted({front.vocab_features[n] for n in self.features})
        self.linear = self.track("linear", {v: L.IdEmbedding(front.lookups[v].input_dim, 1, initializer="zeros",
                                                              name=f"linear_{v}") for v in vocabs})

    def __call__(self, ids):
        return tf.add_n([self.linear[self.front.vocab_features[n]](ids[n])[:, 0] for n in self.features])

    def embedding_tables(self) -> list:
        return list(self.linear.values())


def wide_features(front: EmbeddingFrontEnd, trigger: bool) -> List[str]:
    """The features with first-order weights: user features, target sides (+ trigger sides)."""
    spec = front.spec
    return list(front.user_features) + L.item_feature_names(spec, "") + (
        L.item_feature_names(spec, "trigger_") if trigger else [])


class WideHead(Block):
    """W&D wide part: linear terms of the user / target (/ trigger) ids + hashed crosses
    target category x short-sequence categories (mean over valid positions) [+ target category x
    trigger category]."""

    def __init__(self, front: EmbeddingFrontEnd, buckets: int, trigger: bool):
        super().__init__()
        self.trigger = trigger
        self.linear = self.add(LinearTerms(front, wide_features(front, trigger)))
        self.cross_short = self.track("cross_short", L.HashedCross(buckets, name="cross_target_short_category"))
        self.cross_trigger = (self.track("cross_trigger", L.HashedCross(buckets, name="cross_target_trigger_category"))
                              if trigger else None)

    def __call__(self, emb: Embedded, short_mask):
        logit = self.linear(emb.ids)
        tcat = emb.category("")
        w = self.cross_short(tcat[:, None], emb.category("short_"))
        m = tf.cast(short_mask, w.dtype)
        logit += tf.reduce_sum(w * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
        if self.trigger:
            logit += self.cross_trigger(tcat, emb.category("trigger_"))
        return logit

    def embedding_tables(self) -> list:
        return super().embedding_tables() + [l for l in (self.cross_short, self.cross_trigger) if l is not None]


class FMHead(Block):
    """DeepFM's FM part over the fields (user features, target sides (+ trigger sides), masked
    means of the short-sequence sides, each ``[B, k]``): first order + second order."""

    def __init__(self, front: EmbeddingFrontEnd, trigger: bool):
        super().__init__()
        self.front, self.trigger = front, trigger
        self.linear = self.add(LinearTerms(front, wide_features(front, trigger)))

    def fields(self, emb: Embedded):
        """``[B, F, k]``; every field is a fresh gather (:meth:`Embedded.feature`)."""
        spec = self.front.spec
        fields = [emb.feature(n) for n in self.front.user_features]
        fields += [emb.feature(n) for n in L.item_feature_names(spec, "")]
        if self.trigger:
            fields += [emb.feature(n) for n in L.item_feature_names(spec, "trigger_")]
        short_names = L.item_feature_names(spec, "short_")
        mask = tf.not_equal(emb.ids[short_names[0]], PAD_ID)
        fields += [L.masked_mean(emb.feature(n), mask) for n in short_names]
        return tf.stack(fields, axis=1)

    def __call__(self, emb: Embedded, fields, deep_logit):
        """``deep_logit + first order + second order`` ``[B]``."""
        return deep_logit + self.linear(emb.ids) + L.fm_interaction(fields)
