"""CTR backbones: ``wide_deep``, ``deepfm``, ``din``, ``sim``, ``tan_base``, ``tan_notsi``, ``tan``
(and the CCN paper's competitors ``dihn``, ``dian`` in :mod:`ctrcore.trigger_backbones`).

One class, :class:`Backbone`, configured by name; all variants use the same embedding code
(one ``IdEmbedding`` table per vocabulary, shared by target / trigger / sequences / context).

Inputs per variant (E_x = item ⊕ category ⊕ seller embeddings, E_user = user id ⊕ profile):

=========== =========================================================================================
wide_deep   deep MLP(E_user, E_target, mean(E_short)); wide = linear weights of the user, profile
            and target ids + hashed cross target-category x short-sequence categories (mean over
            valid positions) [+ target-category x trigger-category when use_trigger=True]
deepfm      fields (E_user parts, target sides, masked-mean short-sequence sides): first order
            (linear id weights) + FM second order + deep MLP over the concatenated fields
din         MLP(E_user, E_target, DIN-attention(target, short), mean(E_short))
sim         MLP(E_user, E_target, MHTA(target, short), MHTA(target, long | cat == target cat))
tan_base    MLP(E_user, E_target, E_trigger, MHTA(target, short), MHTA(trigger, short))
            (TAN w/o CM & TSI: no long-sequence search, no collaborative module)
tan_notsi   MLP(E_user, E_target, E_trigger, MHTA(target, short), MHTA(target, long | target cat),
            s_target)   (CM, but no trigger-related sequence interaction)
tan         MLP(E_user, E_target, E_trigger, H_tsi, s_target) (CCN Eq. 3) with
            H_tsi = MHTA(target, short) ⊕ MHTA(trigger, short) ⊕ MHTA(target, long | target cat)
                    ⊕ MHTA(trigger, long | trigger cat)
            s = MLP_cm(E_user ⊕ (E ⊙ E_trigger)) (CCN Eq. 4; concat needs no projection)
=========== =========================================================================================

``latent`` is the output of the prediction MLP's last hidden layer (the deep side for W&D /
DeepFM), ``logits = Dense(1)(latent)`` (+ wide / FM terms).

XLA: string -> id lookups are not XLA-compilable. ``Backbone.lookup(features)`` (hash tables,
run outside XLA) returns int32 ids; ``Backbone.apply(ids, ...)`` is XLA-safe.
``call(features) = apply(lookup(features))`` and ``lookup`` is idempotent on integer inputs, so
both raw and looked-up feature dicts can be passed to ``call`` / ``embed_items``. ``CTRModel``
(ctrcore/model.py) uses this for ``compile(jit_compile=True)``: lookups in the outer
``tf.function``, forward + backward in an inner ``tf.function(jit_compile=True)``, optimizer
update outside XLA.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from ctrcore import layers as L
from ctrcore.schema import FeatureSpec

BACKBONES = ("wide_deep", "deepfm", "din", "sim", "tan_base", "tan_notsi", "tan", "dihn", "dian")
CATEGORY_SIDE = "category_id"

# name -> which parts are on
_KINDS = {
    #              trigger  short      long-search           cm
    "wide_deep": dict(trigger=False, short="mean", long=(), cm=False, head="wide_deep"),
    "deepfm": dict(trigger=False, short="mean", long=(), cm=False, head="deepfm"),
    "din": dict(trigger=False, short="din", long=(), cm=False, head="mlp"),
    "sim": dict(trigger=False, short="mhta", long=("target",), cm=False, head="mlp"),
    "tan_base": dict(trigger=True, short="mhta", short_trigger=True, long=(), cm=False, head="mlp"),
    "tan_notsi": dict(trigger=True, short="mhta", long=("target",), cm=True, head="mlp"),
    "tan": dict(trigger=True, short="mhta", short_trigger=True, long=("target", "trigger"), cm=True,
                head="mlp"),
    # the CCN paper's trigger-based competitors (ctrcore.trigger_backbones: own apply(); these
    # entries only say which shared modules Backbone.__init__ creates and which inputs they read)
    "dihn": dict(trigger=True, short="self_attention", long=("trigger",), cm=False, head="mlp"),
    "dian": dict(trigger=True, short="mhta", short_trigger=True, long=("target", "trigger"), cm=False,
                 head="mlp"),
}


def _as_seed(seed):
    if seed is None:
        return tf.random.uniform([2], 0, 2 ** 31 - 1, dtype=tf.int32)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    seed = tf.cast(seed, tf.int32)
    return tf.stack([seed, 0]) if seed.shape.rank == 0 else seed


class Backbone(keras.layers.Layer):
    """See the module docstring. Build with :func:`build_backbone`."""

    def __init__(self, spec: FeatureSpec, kind: str, emb_dim: int = 16, mlp_units: Sequence[int] = (200, 80),
                 dropout: float = 0.2, heads: int = 4, l2_emb: float = 0.0, l2_dense: float = 0.0,
                 cm_dim: int = 16, cm_units: Sequence[int] = (64,), batch_norm: bool = False,
                 din_units: Sequence[int] = (80, 40), din_softmax: bool = False,
                 wide_buckets: int = 1 << 16, use_trigger: Optional[bool] = None,
                 activation: str = "relu", name: Optional[str] = None, **kwargs):
        if kind not in _KINDS:
            raise ValueError(f"unknown backbone {kind!r}; expected one of {BACKBONES}")
        super().__init__(name=name or kind, **kwargs)
        self.spec, self.kind = spec, kind
        cfg = dict(_KINDS[kind])
        if use_trigger is not None and cfg["head"] in ("wide_deep", "deepfm"):
            cfg["trigger"] = bool(use_trigger)
        self.cfg = cfg
        self.emb_dim, self.l2_emb, self.cm_dim = emb_dim, float(l2_emb), cm_dim
        self.hparams = dict(emb_dim=emb_dim, mlp_units=list(mlp_units), dropout=dropout, heads=heads,
                            l2_emb=l2_emb, l2_dense=l2_dense, cm_dim=cm_dim, cm_units=list(cm_units),
                            batch_norm=batch_norm, din_units=list(din_units), din_softmax=din_softmax,
                            wide_buckets=wide_buckets, use_trigger=cfg["trigger"], activation=activation)

        # -- features, all from the spec ---------------------------------------------------------
        item_vocabs = {spec.features[n].vocab for n in L.item_feature_names(spec, "")}
        self.user_features = [n for n, fd in spec.serving_features.items()
                              if fd.vocab and not fd.shape and fd.vocab not in item_vocabs]
        self.vocab_features = {n: fd.vocab for n, fd in spec.features.items() if fd.vocab}
        sides = list(spec.config.item_side)
        self._cat_index = sides.index(CATEGORY_SIDE) if CATEGORY_SIDE in sides else 0
        prefixes = ["", "short_"] + (["trigger_"] if cfg["trigger"] else []) + (["long_"] if cfg["long"] else [])
        used = list(self.user_features) + [n for p in prefixes for n in L.item_feature_names(spec, p)]
        self.serving_inputs = [n for n in spec.serving_features if n in used]

        # -- lookups and embedding tables: one per vocabulary -------------------------------------
        # (an empty vocabulary, e.g. a log without sellers, gets one OOV bucket and a warning;
        # a missing or malformed file raises naming the vocabulary, its features and the file)
        self.lookups = {v: L.IdLookup(spec.vocab_path(v), vocab_name=v, name=f"lookup_{v}",
                                      features=[n for n, fv in self.vocab_features.items() if fv == v])
                        for v in spec.vocabularies}
        self.tables = {v: L.IdEmbedding(lk.input_dim, emb_dim, name=f"emb_{v}")
                       for v, lk in self.lookups.items()}
        self.items = L.ItemEmbedder(spec, self.tables, name="item_embedder")
        self.item_dim = self.items.dim
        self.user_dim = emb_dim * len(self.user_features)

        # -- interaction modules --------------------------------------------------------------------
        if cfg["short"] == "din":
            self.din_att = L.DinAttention(din_units, softmax=din_softmax, name="din_attention")
        if cfg["short"] == "mhta":
            self.att_target_short = L.TargetAttention(heads, name="mhta_target_short")
            if cfg.get("short_trigger"):
                self.att_trigger_short = L.TargetAttention(heads, name="mhta_trigger_short")
        if "target" in cfg["long"]:
            self.att_target_long = L.TargetAttention(heads, name="mhta_target_long")
        if "trigger" in cfg["long"]:
            self.att_trigger_long = L.TargetAttention(heads, name="mhta_trigger_long")
        if cfg["cm"]:
            self.cm_mlp = L.MLP(list(cm_units) + [cm_dim], activation=activation, linear_last=True,
                                l2=l2_dense, name="collaborative_module")
            # Layer norm on both inputs of Eq. 4 (docs/method.md §1.1): at initialisation
            # E ⊙ E_trigger is ~30x smaller than E_user, so s was the same vector for every item
            # of a page (all cosines ~1) and the CCN losses had no gradient to act on.
            self.cm_norm_user = keras.layers.LayerNormalization(name="cm_norm_user")
            self.cm_norm_interaction = keras.layers.LayerNormalization(name="cm_norm_interaction")
        self.mlp = L.MLP(mlp_units, activation=activation, dropout=dropout, batch_norm=batch_norm,
                         l2=l2_dense, name="prediction_mlp")
        self.out = keras.layers.Dense(1, name="logit")
        if cfg["head"] in ("wide_deep", "deepfm"):
            wide_feats = list(self.user_features) + L.item_feature_names(spec, "") + (
                L.item_feature_names(spec, "trigger_") if cfg["trigger"] else [])
            self.wide_features = wide_feats
            self.linear = {v: L.IdEmbedding(self.lookups[v].input_dim, 1, initializer="zeros", name=f"linear_{v}")
                           for v in sorted({self.vocab_features[n] for n in wide_feats})}
        if cfg["head"] == "wide_deep":
            self.cross_short = L.HashedCross(wide_buckets, name="cross_target_short_category")
            if cfg["trigger"]:
                self.cross_trigger = L.HashedCross(wide_buckets, name="cross_target_trigger_category")

    # ------------------------------------------------------------------------------------------
    @property
    def has_collaborative_module(self) -> bool:
        return bool(self.cfg["cm"])

    @property
    def trigger_aware(self) -> bool:
        return bool(self.cfg["trigger"])

    def lookup(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Raw features -> ``{name: int32 ids}`` for every spec id feature present, plus the spec's
        numeric features unchanged. Other keys (unknown names, string meta such as page ids) are
        dropped. Idempotent (integer id inputs are passed through as int32). Not XLA-compilable."""
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

    def embedding_tables(self):
        """The sparse (row-gathered) tables: per-vocab embeddings, wide/linear weights, crosses."""
        layers = list(self.tables.values()) + list(getattr(self, "linear", {}).values())
        layers += [l for l in (getattr(self, "cross_short", None), getattr(self, "cross_trigger", None)) if l]
        return layers

    # ------------------------------------------------------------------------------------------
    def _post(self, emb_dropout, seed, reg):
        """Per gathered embedding: record its l2 and apply stateless embedding dropout."""
        counter = [0]
        seed = _as_seed(seed) if emb_dropout and emb_dropout > 0 else None

        def post(e):
            if self.l2_emb > 0 and reg is not None:
                axes = list(range(1, e.shape.rank))
                reg.append(tf.reduce_sum(tf.square(e), axis=axes))
            if seed is not None:
                s = tf.random.experimental.stateless_fold_in(seed, counter[0])
                counter[0] += 1
                e = tf.nn.experimental.stateless_dropout(e, rate=emb_dropout, seed=s)
            return e

        return post

    def _user(self, ids, post):
        if not self.user_features:
            b = tf.shape(ids[L.item_feature_names(self.spec, "")[0]])[0]
            return tf.zeros([b, 0])
        return tf.concat([post(self.tables[self.vocab_features[n]](ids[n])) for n in self.user_features], -1)

    def embed_items(self, features, prefix: str, emb_dropout: float = 0.0, seed=None):
        """Item embeddings ``[B, Di]`` (prefix "" / "trigger_") or ``[B, C, Di]`` (prefix
        "context_" / "short_" / "long_"), from raw or looked-up features (same tables as the target)."""
        ids = self.lookup({n: features[n] for n in L.item_feature_names(self.spec, prefix)})
        return self.items(ids, prefix, post=self._post(emb_dropout, seed, None))[0]

    def item_mask(self, features, prefix: str):
        """Padding mask (bool) of a prefix's items (item id != padding)."""
        name = L.item_feature_names(self.spec, prefix)[0]
        return tf.not_equal(self.lookup({name: features[name]})[name], L.PAD_ID)

    def collaborative_degree(self, user_emb, item_emb, trigger_emb):
        """CCN Eq. 4: ``s = MLP(E_user ⊕ (E ⊙ E_trigger))``. ``item_emb`` is ``[B, Di]`` or
        ``[B, C, Di]``; ``user_emb [B, Du]`` and ``trigger_emb [B, Di]`` broadcast over C.
        Returns ``[B, cm_dim]`` or ``[B, C, cm_dim]``."""
        if not self.has_collaborative_module:
            raise ValueError(f"backbone {self.kind!r} has no collaborative module")
        user_emb = self.cm_norm_user(user_emb)  # [B, Du]: before the broadcast (LN is built for rank 2)
        inter = item_emb * (trigger_emb[:, None, :] if item_emb.shape.rank == 3 else trigger_emb)
        di = inter.shape[-1]
        inter = tf.reshape(self.cm_norm_interaction(tf.reshape(inter, [-1, di])), tf.shape(inter))
        if item_emb.shape.rank == 3:  # W_user . E_user once per example, not once per item
            return self.cm_mlp.call_broadcast(user_emb, inter)
        return self.cm_mlp(tf.concat([user_emb, inter], axis=-1))

    # ------------------------------------------------------------------------------------------
    def call(self, features, training=False, emb_dropout: float = 0.0, seed=None):
        return self.apply(self.lookup(features), training=training, emb_dropout=emb_dropout, seed=seed)

    def apply(self, ids, training=False, emb_dropout: float = 0.0, seed=None):
        """The XLA-safe part: looked-up int32 ids -> the output dict (module docstring)."""
        cfg = self.cfg
        reg = []
        post = self._post(emb_dropout, seed, reg)
        user = self._user(ids, post)
        target, _ = self.items(ids, "", post=post)
        short, short_mask = self.items(ids, "short_", post=post)
        out = {"user_emb": user, "target_emb": target}
        parts = [user, target]
        trigger = None
        if cfg["trigger"]:
            trigger, _ = self.items(ids, "trigger_", post=post)
            out["trigger_emb"] = trigger
            parts.append(trigger)
        # short-sequence interaction
        if cfg["short"] == "mean":
            parts.append(L.masked_mean(short, short_mask))
        elif cfg["short"] == "din":
            parts += [self.din_att(target, short, short_mask, training=training), L.masked_mean(short, short_mask)]
        else:
            parts.append(self.att_target_short(target, short, short_mask, training=training))
            if cfg.get("short_trigger"):
                parts.append(self.att_trigger_short(trigger, short, short_mask, training=training))
        # long-sequence SIM hard search by category
        if cfg["long"]:
            long, long_mask = self.items(ids, "long_", post=post)
            long_cat = ids[L.item_feature_names(self.spec, "long_")[self._cat_index]]
            for who in cfg["long"]:
                q = target if who == "target" else trigger
                qcat = ids[L.item_feature_names(self.spec, "" if who == "target" else "trigger_")[self._cat_index]]
                m = L.sim_hard_search(long, long_cat, qcat, long_mask)
                att = self.att_target_long if who == "target" else self.att_trigger_long
                parts.append(att(q, long, m, training=training))
        if cfg["cm"]:
            s = self.collaborative_degree(user, target, trigger)
            out["s_target"] = s
            parts.append(s)

        if cfg["head"] == "deepfm":
            fields = self._fm_fields(ids, post)  # [B, F, k]
            latent = self.mlp(tf.reshape(fields, [-1, fields.shape[1] * fields.shape[2]]), training=training)
            logits = self.out(latent)[:, 0] + fm_first_order(self, ids) + L.fm_interaction(fields)
        else:
            latent = self.mlp(tf.concat(parts, axis=-1), training=training)
            logits = self.out(latent)[:, 0]
            if cfg["head"] == "wide_deep":
                logits = logits + self._wide(ids, short_mask)
        out["latent"] = latent
        out["logits"] = logits
        if self.l2_emb > 0:
            out["emb_l2"] = self.l2_emb * tf.reduce_mean(tf.add_n(reg))
        return out

    # -- W&D / DeepFM parts ---------------------------------------------------------------------
    def _fm_fields(self, ids, post):
        fields = [post(self.tables[self.vocab_features[n]](ids[n])) for n in self.user_features]
        for n in L.item_feature_names(self.spec, ""):
            fields.append(post(self.tables[self.vocab_features[n]](ids[n])))
        if self.cfg["trigger"]:
            for n in L.item_feature_names(self.spec, "trigger_"):
                fields.append(post(self.tables[self.vocab_features[n]](ids[n])))
        short_names = L.item_feature_names(self.spec, "short_")
        mask = tf.not_equal(ids[short_names[0]], L.PAD_ID)
        for n in short_names:
            fields.append(L.masked_mean(post(self.tables[self.vocab_features[n]](ids[n])), mask))
        return tf.stack(fields, axis=1)

    def _wide(self, ids, short_mask):
        logit = fm_first_order(self, ids)
        tcat = ids[L.item_feature_names(self.spec, "")[self._cat_index]]
        scat = ids[L.item_feature_names(self.spec, "short_")[self._cat_index]]
        w = self.cross_short(tcat[:, None], scat)
        m = tf.cast(short_mask, w.dtype)
        logit += tf.reduce_sum(w * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)
        if self.cfg["trigger"]:
            logit += self.cross_trigger(tcat, ids[L.item_feature_names(self.spec, "trigger_")[self._cat_index]])
        return logit


def fm_first_order(bb: Backbone, ids):
    """Sum of the linear (1-d) weights of the wide features' ids -> [B]."""
    return tf.add_n([bb.linear[bb.vocab_features[n]](ids[n])[:, 0] for n in bb.wide_features])


def build_backbone(name: str, spec: FeatureSpec, **hparams) -> Backbone:
    """``name`` in :data:`BACKBONES`; ``hparams``: emb_dim=16, mlp_units=(200, 80), dropout=0.2,
    heads=4, l2_emb=0.0 (l2 on the looked-up embedding rows, reported as the ``emb_l2`` output),
    l2_dense=0.0 (kernel l2 of the MLPs, in ``layer.losses``), cm_dim=16 (1 = scalar s),
    cm_units=(64,), batch_norm=False, din_units=(80, 40), din_softmax=False, wide_buckets=65536,
    use_trigger (W&D / DeepFM only: add trigger ids / cross; default False), activation="relu".
    ``dihn`` / ``dian`` are the subclasses of :mod:`ctrcore.trigger_backbones`."""
    if name in ("dihn", "dian"):
        from ctrcore.trigger_backbones import TRIGGER_BACKBONES

        return TRIGGER_BACKBONES[name](spec, **hparams)
    return Backbone(spec, name, **hparams)
