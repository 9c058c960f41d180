"""The embedding front-end every architecture shares: lookups, one table per vocabulary, the item
embedder, and the per-pass view (:class:`Embedded`) that gathers embedding rows with embedding
dropout and records their L2 (the ``emb_l2`` output, added in one place: :meth:`Embedded.finish`).

Not a Keras layer (see :mod:`ctrcore.archs`): its layers are tracked by the backbone under
``lookups``, ``tables`` and ``items`` (checkpoint keys ``backbone/tables/<vocab>/embeddings``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import tensorflow as tf

from ctrcore import layers as L
from ctrcore.schema import PAD_ID, FeatureSpec

#: the item side whose ids SIM searches the long sequence by (and the intent label compares)
CATEGORY_SIDE = "category_id"


def as_seed(seed):
    """``None`` (a random seed) / int / scalar / ``[2]`` -> an int32 ``[2]`` stateless seed."""
    if seed is None:
        return tf.random.uniform([2], 0, 2 ** 31 - 1, dtype=tf.int32)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    seed = tf.cast(seed, tf.int32)
    return tf.stack([seed, 0]) if seed.shape.rank == 0 else seed


class EmbeddingFrontEnd:
    """Lookups (string -> int32 id, not XLA-compilable), the per-vocabulary ``IdEmbedding``
    tables (shared by target / trigger / sequences / context) and the ``ItemEmbedder``
    (item ⊕ category ⊕ seller), all from the spec.

    ``user_features``: the spec's scalar serving id features that are not item sides (user id,
    profile). An empty vocabulary (e.g. a log without sellers) gets one OOV bucket and a
    warning; a missing or malformed file raises naming the vocabulary, its features and the file.
    """

    def __init__(self, spec: FeatureSpec, emb_dim: int, l2_emb: float = 0.0):
        self.spec, self.emb_dim, self.l2_emb = spec, int(emb_dim), float(l2_emb)
        item_vocabs = {spec.features[n].vocab for n in L.item_feature_names(spec, "")}
        self.user_features: List[str] = [n for n, fd in spec.serving_features.items()
                                         if fd.vocab and not fd.shape and fd.vocab not in item_vocabs]
        self.vocab_features: Dict[str, str] = {n: fd.vocab for n, fd in spec.features.items() if fd.vocab}
        sides = list(spec.config.item_side)
        #: position of :data:`CATEGORY_SIDE` among the item sides (0 when the spec has none)
        self.category_index = sides.index(CATEGORY_SIDE) if CATEGORY_SIDE in sides else 0
        self.lookups = {v: L.IdLookup(spec.vocab_path(v), vocab_name=v, name=f"lookup_{v}",
                                      features=[n for n, fv in self.vocab_features.items() if fv == v])
                        for v in spec.vocabularies}
        self.tables = {v: L.IdEmbedding(lk.input_dim, emb_dim, name=f"emb_{v}")
                       for v, lk in self.lookups.items()}
        self.items = L.ItemEmbedder(spec, self.tables, name="item_embedder")
        self.item_dim = self.items.dim
        self.user_dim = emb_dim * len(self.user_features)

    def named_layers(self) -> List[Tuple[str, object]]:
        return [("lookups", self.lookups), ("tables", self.tables), ("items", self.items)]

    def embedding_tables(self) -> list:
        return list(self.tables.values())

    def inputs(self, prefixes: Sequence[str]) -> List[str]:
        """The serving features read by an architecture that embeds the items of ``prefixes``
        (plus the user features), in spec order."""
        used = set(self.user_features) | {n for p in prefixes for n in L.item_feature_names(self.spec, p)}
        return [n for n in self.spec.serving_features if n in used]

    def category_feature(self, prefix: str) -> str:
        """The spec feature of the category side of a prefix (``""``, ``"trigger_"``, ``"long_"``...)."""
        return L.item_feature_names(self.spec, prefix)[self.category_index]

    def lookup(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Raw features -> ``{name: int32 ids}`` for every spec id feature present, plus the spec's
        numeric features unchanged. Other keys (unknown names, string meta such as page ids) are
        dropped. Idempotent (integer id inputs are passed through as int32)."""
        out = {}
        for name, x in features.items():
            fd = self.spec.features.get(name)
            if fd is None:
                continue
            if fd.vocab:
                out[name] = self.lookups[fd.vocab](x)
            elif fd.dtype != "string":
                out[name] = x
        return out

    def begin(self, ids: Dict[str, tf.Tensor], emb_dropout: float = 0.0, seed=None) -> "Embedded":
        """The embedding view of one forward pass over looked-up ``ids``."""
        return Embedded(self, ids, emb_dropout, seed)

    def embed_items(self, features, prefix: str, emb_dropout: float = 0.0, seed=None):
        """Item embeddings ``[B, Di]`` / ``[B, C, Di]`` of a prefix from raw or looked-up features."""
        ids = self.lookup({n: features[n] for n in L.item_feature_names(self.spec, prefix)})
        return self.begin(ids, emb_dropout, seed).items(prefix)[0]

    def item_mask(self, features, prefix: str):
        """Padding mask (bool) of a prefix's items (item id != padding)."""
        name = L.item_feature_names(self.spec, prefix)[0]
        return tf.not_equal(self.lookup({name: features[name]})[name], PAD_ID)


class Embedded:
    """Embeddings of one forward pass. Every gathered table output goes through :meth:`post`:
    its squared L2 is recorded (when ``l2_emb > 0``) and stateless embedding dropout is applied
    with a seed folded in per gather, so the draws depend on the order of the gathers (each
    architecture keeps the order of 7d683ae's code)."""

    def __init__(self, front: EmbeddingFrontEnd, ids: Dict[str, tf.Tensor], emb_dropout: float = 0.0,
                 seed=None):
        self.front, self.ids = front, ids
        self._reg: List[tf.Tensor] = []
        self._rate = emb_dropout
        self._seed = as_seed(seed) if emb_dropout and emb_dropout > 0 else None
        self._count = 0

    def post(self, e):
        if self.front.l2_emb > 0:
            self._reg.append(tf.reduce_sum(tf.square(e), axis=list(range(1, e.shape.rank))))
        if self._seed is not None:
            s = tf.random.experimental.stateless_fold_in(self._seed, self._count)
            self._count += 1
            e = tf.nn.experimental.stateless_dropout(e, rate=self._rate, seed=s)
        return e

    def feature(self, name: str):
        """The embedding of one id feature (its vocabulary's table)."""
        return self.post(self.front.tables[self.front.vocab_features[name]](self.ids[name]))

    def user(self):
        """E_user ``[B, Du]``: the user features' embeddings, concatenated (``[B, 0]`` if none)."""
        if not self.front.user_features:
            b = tf.shape(self.ids[L.item_feature_names(self.front.spec, "")[0]])[0]
            return tf.zeros([b, 0])
        return tf.concat([self.feature(n) for n in self.front.user_features], -1)

    def items(self, prefix: str):
        """``(emb [B, (L,) Di], mask [B, (L,)] bool)`` of a prefix's items."""
        return self.front.items(self.ids, prefix, post=self.post)

    def category(self, prefix: str):
        """Looked-up category ids of a prefix (``[B]`` or ``[B, L]``)."""
        return self.ids[self.front.category_feature(prefix)]

    def finish(self, out: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Add ``emb_l2 = l2_emb * mean_batch(sum of the squared gathered rows)`` to ``out``."""
        if self.front.l2_emb > 0:
            out["emb_l2"] = self.front.l2_emb * tf.reduce_mean(tf.add_n(self._reg))
        return out

