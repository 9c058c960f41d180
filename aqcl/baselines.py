"""The regularisation baselines of AQCL Table 2 as backbone-agnostic ``AuxLoss`` plug-ins.

AQCL (Sec. 5.2.1) compares on a DIN backbone and "only refer[s] to the design of regularization
and omit[s] their modifications of the CTR model architectures". Accordingly each baseline here
only adds training-time terms; the serving graph (``backbone``) is unchanged. Registry names
(``--aux_losses``): ``dropoutnet``, ``deepmcp``, ``dmr`` (registered by ``aqcl/aux_losses.py``).

* :class:`DropoutNetLoss` - DropoutNet (Volkovs et al. 2017): per example, with probability
  ``rate`` the user id (half of the dropped examples) or the target item id (other half) is
  replaced by an id that is not in the vocabulary, i.e. looks exactly like a cold user / item at
  serving time (OOV), and the backbone is re-run on that view. ``mode="replace"`` (default)
  returns ``CE(dropped view) - CE(clean view)`` so that the model's total loss is the CE of the
  DropoutNet-perturbed input (the original method trains *only* on the perturbed inputs);
  ``mode="add"`` returns ``weight * CE(dropped view)`` (clean CE + dropped-view CE).
* :class:`DeepMCPLoss` - DeepMCP (Ouyang et al. 2019), the two auxiliary subnets on shared
  embeddings: matching subnet ``sigmoid(tanh(MLP_u(user)) . tanh(MLP_i(item)))`` trained with the
  click label (logloss), user = ``E_user`` (+ mean of the history embeddings), item =
  ``E_target``; correlation subnet: skip-gram with negative sampling over the clicked-item
  sequence (history, plus the target when clicked) within a window, negatives from other rows of
  the batch.
* :class:`DMRLoss` - DMR's auxiliary match loss (Lyu et al. 2020): the attention-pooled
  representation of the history *without its most recent click* (with position embeddings)
  predicts that most recent click, softmax over the in-batch candidates (sampled softmax).

See docs/method-baselines.md for the reading of each paper and the choices made.

Every loss reads only the :class:`~ctrcore.model.AuxLoss` inputs: ``model.backbone`` (callable on
a feature dict, ``embed_items(features, prefix)``), the backbone ``outputs`` (``logits``,
``user_emb``, ``target_emb``) and the feature dict (label, id features). Padding (``""`` or id 0)
never contributes: padded history positions and examples without the needed sequence are masked,
and in-batch negatives equal to the positive item are masked out.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from aqcl.baselines_plugin import rate_problem
from ctrcore.model import AuxLoss as _AuxBase
from ctrcore.schema import OOV_ID, PAD

__all__ = ["DropoutNetLoss", "DeepMCPLoss", "DMRLoss", "dropoutnet_view",
           "skipgram_loss", "inbatch_softmax_loss"]

OOV_STRING = "\x00__oov__"  # never in a vocabulary (vocab files hold one printable id a line)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _backbone(model):
    return getattr(model, "backbone", model)


def _spec(model):
    return getattr(model, "spec", None) or getattr(_backbone(model), "spec", None)


def _label(model, features) -> tf.Tensor:
    return tf.cast(tf.reshape(features[_spec(model).label], [-1]), tf.float32)


def _not_pad(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.string:
        return tf.not_equal(x, PAD)
    return tf.not_equal(x, tf.zeros([], x.dtype))


def _seq_id_feature(model, prefix: str) -> str:
    """Name of the item-id feature of a sequence prefix (``short_`` -> ``short_item_ids``)."""
    spec = _spec(model)
    side = spec.config.item_side[0] if spec is not None else "item_id"
    return f"{prefix}{side}s"


def _seq_features(model, prefix: str) -> List[str]:
    """Every item-side feature of a sequence prefix (what ``embed_items`` reads)."""
    from ctrcore.layers import item_feature_names

    return list(item_feature_names(_spec(model), prefix))


def _target_id_feature(model) -> str:
    """Name of the target item-id feature (``item_id``)."""
    spec = _spec(model)
    return spec.config.item_side[0] if spec is not None else "item_id"


def _id_key(x) -> tf.Tensor:
    """Ids comparable for equality (strings hashed; ints as they are)."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.string:
        return tf.strings.to_hash_bucket_fast(x, 2 ** 62)
    return tf.cast(x, tf.int64)


def _masked_mean(values, mask) -> tf.Tensor:
    m = tf.cast(mask, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * m), tf.reduce_sum(m))


def _bce_from_logits(labels, logits) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def _seed_pair(seed, counter):
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(counter, tf.int64)])


# ---------------------------------------------------------------------------------------------
# DropoutNet
# ---------------------------------------------------------------------------------------------
def _oov_like(x) -> tf.Tensor:
    if x.dtype == tf.string:
        return tf.constant(OOV_STRING)
    return tf.constant(OOV_ID, x.dtype)


def dropoutnet_view(features: Dict[str, tf.Tensor], drop_user, drop_item,
                    user_features: Sequence[str] = ("user_id",),
                    item_features: Sequence[str] = ("item_id",)) -> Dict[str, tf.Tensor]:
    """Copy of ``features`` with the ids of ``user_features`` replaced by OOV where ``drop_user``
    and those of ``item_features`` where ``drop_item`` (bool ``[B]``). Padding stays padding;
    side information (profile, category, seller, history) is kept: it is what the model must
    learn to rely on for cold ids."""
    out = dict(features)
    for names, drop in ((user_features, drop_user), (item_features, drop_item)):
        for n in names:
            if n not in features:
                continue
            x = tf.convert_to_tensor(features[n])
            d = tf.reshape(drop, [-1] + [1] * (x.shape.rank - 1))
            d = tf.logical_and(tf.broadcast_to(d, tf.shape(x)), _not_pad(x))
            out[n] = tf.where(d, tf.broadcast_to(_oov_like(x), tf.shape(x)), x)
    return out


class DropoutNetLoss(_AuxBase):
    """DropoutNet as an auxiliary view (see the module docstring).

    Args:
      stats: stats.json dict (unused; the common aux-loss constructor signature).
      rate: probability that an example is dropped; a dropped example loses its user id or its
        target item id with equal probability (DropoutNet's user / item cold-start dropout).
      mode: ``"replace"`` (total loss = CE on the perturbed input, the original method; the
        returned term is ``CE(dropped) - CE(clean)``) or ``"add"`` (``weight * CE(dropped)``).
      weight: scale of the returned term.
      user_features / item_features: the id features dropped (default the user id and the
        target item id only; a tuple may add e.g. ``trigger_item_id``).
    """

    def __init__(self, stats: Optional[dict] = None, rate: float = 0.5, mode: str = "replace",
                 weight: float = 1.0, user_features: Sequence[str] = ("user_id",),
                 item_features: Sequence[str] = ("item_id",), seed: int = 0,
                 name: str = "dropoutnet", **kwargs):
        super().__init__(name=name, **kwargs)
        if mode not in ("replace", "add"):
            raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
        if rate_problem(rate):
            raise ValueError(f"rate {rate_problem(rate)}")
        self.rate, self.mode, self.weight = float(rate), mode, float(weight)
        self.user_features, self.item_features = tuple(user_features), tuple(item_features)
        self.seed = int(seed)
        self._step = None

    def build(self, input_shape=None):
        self._step = self.add_weight(
            "step", shape=[], dtype=tf.int64, trainable=False, initializer="zeros",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        super().build(input_shape)

    def drop_masks(self, batch_size, seed):
        u = tf.random.stateless_uniform([batch_size], seed=seed)
        return u < self.rate / 2.0, tf.logical_and(u >= self.rate / 2.0, u < self.rate)

    def required_features(self, model):
        return []  # the user / item ids it drops are backbone inputs

    def call(self, model, features, outputs, training=False):
        if not training or self.rate == 0.0:
            return {}
        if self._step is None:
            self.build(None)
        self._step.assign_add(1)
        logits = tf.reshape(outputs["logits"], [-1])
        b = tf.shape(logits)[0]
        drop_user, drop_item = self.drop_masks(b, _seed_pair(self.seed, self._step))
        view = dropoutnet_view(features, drop_user, drop_item, self.user_features,
                               self.item_features)
        out = _backbone(model)(view, training=training)
        labels = _label(model, features)
        ce_drop = _bce_from_logits(labels, tf.reshape(out["logits"], [-1]))
        if self.mode == "replace":
            term = ce_drop - _bce_from_logits(labels, logits)
        else:
            term = ce_drop
        return {"dropoutnet": self.weight * term}


# ---------------------------------------------------------------------------------------------
# pure losses shared by DeepMCP / DMR
# ---------------------------------------------------------------------------------------------
def skipgram_loss(emb, mask, ids, window: int = 2, num_negatives: int = 4):
    """Skip-gram with negative sampling over sequences (DeepMCP's correlation subnet).

    ``emb [B, S, D]``, ``mask [B, S]`` bool (valid positions), ``ids [B, S]`` (equality keys).
    Pairs ``(k, k+j)``, ``1 <= j <= window``, both valid: ``-log s(e_k.e_{k+j})`` ``-sum_n
    log s(-e_k.e_n)`` with the negatives ``e_n`` the context item of the same pair in
    ``num_negatives`` other rows (batch rolled by 1..n); a negative that is padding or the same
    item as the anchor or the context is masked. Mean over valid pairs (0 if none).
    """
    emb = tf.convert_to_tensor(emb)
    mask = tf.convert_to_tensor(mask)
    ids = _id_key(ids)
    totals, counts = [], []
    s = emb.shape[1]
    for j in range(1, min(window, s - 1) + 1):
        a, c = emb[:, :-j], emb[:, j:]
        a_id, c_id = ids[:, :-j], ids[:, j:]
        valid = tf.logical_and(mask[:, :-j], mask[:, j:])
        pos = tf.math.log_sigmoid(tf.reduce_sum(a * c, -1))
        neg = tf.zeros_like(pos)
        for r in range(1, num_negatives + 1):
            n = tf.roll(c, shift=r, axis=0)
            n_id, n_ok = tf.roll(c_id, shift=r, axis=0), tf.roll(mask[:, j:], shift=r, axis=0)
            ok = tf.logical_and(n_ok, tf.logical_and(tf.not_equal(n_id, a_id), tf.not_equal(n_id, c_id)))
            neg += tf.where(ok, tf.math.log_sigmoid(-tf.reduce_sum(a * n, -1)), tf.zeros_like(pos))
        vf = tf.cast(valid, emb.dtype)
        totals.append(tf.reduce_sum(-(pos + neg) * vf))
        counts.append(tf.reduce_sum(vf))
    if not totals:
        return tf.constant(0.0, emb.dtype)
    return tf.math.divide_no_nan(tf.add_n(totals), tf.add_n(counts))


def inbatch_softmax_loss(query, candidates, valid, ids):
    """Softmax over in-batch candidates: row i's positive is candidate i (DMR's match loss).

    ``query [B, D]``, ``candidates [B, D]``, ``valid [B]`` bool (rows with a query and a
    positive), ``ids [B]`` (candidate item keys). Invalid rows are neither queries nor
    candidates; a candidate j != i with the same item as i is masked (not a negative).
    Mean cross-entropy over valid rows (0 if none).
    """
    ids = _id_key(ids)
    logits = tf.matmul(query, candidates, transpose_b=True)  # [B, B]
    b = tf.shape(logits)[0]
    eye = tf.eye(b, dtype=tf.bool)
    same = tf.logical_and(tf.equal(ids[:, None], ids[None, :]), tf.logical_not(eye))
    col_ok = tf.logical_and(tf.broadcast_to(valid[None, :], [b, b]), tf.logical_not(same))
    col_ok = tf.logical_or(col_ok, eye)
    logits = tf.where(col_ok, logits, tf.fill([b, b], tf.constant(-1e9, logits.dtype)))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(b), logits=logits)
    return _masked_mean(ce, valid)


# ---------------------------------------------------------------------------------------------
# DeepMCP
# ---------------------------------------------------------------------------------------------
class _Tower(keras.layers.Layer):
    def __init__(self, units, final_activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.layers_ = [keras.layers.Dense(u, activation="relu", name=f"d{i}")
                        for i, u in enumerate(units[:-1])]
        self.layers_.append(keras.layers.Dense(units[-1], activation=final_activation, name="out"))

    def call(self, x):
        for d in self.layers_:
            x = d(x)
        return x


class DeepMCPLoss(_AuxBase):
    """DeepMCP's matching and correlation subnets as auxiliary terms (module docstring).

    Args:
      stats: stats.json dict (unused).
      match_weight / corr_weight: the weights (alpha, beta of DeepMCP's joint loss).
      units: matching tower units (last = matching dimension, tanh output as in DeepMCP).
      corr_dim: dimension of the correlation subnet's item vectors (a linear map of the shared
        item embeddings); 0 = use the embeddings as they are.
      window / num_negatives: skip-gram window over the clicked sequence, negatives per pair.
      seq_prefix: the history sequence used (``short_`` = the one DIN attends to).
      user_history: add the mean history embedding to the user side of the matching subnet.
    """

    def __init__(self, stats: Optional[dict] = None, match_weight: float = 0.1,
                 corr_weight: float = 0.1, units: Sequence[int] = (64, 32), corr_dim: int = 32,
                 window: int = 2, num_negatives: int = 4, seq_prefix: str = "short_",
                 user_history: bool = True, name: str = "deepmcp", **kwargs):
        super().__init__(name=name, **kwargs)
        self.match_weight, self.corr_weight = float(match_weight), float(corr_weight)
        self.window, self.num_negatives = int(window), int(num_negatives)
        self.seq_prefix, self.user_history = seq_prefix, bool(user_history)
        self.user_tower = _Tower(list(units), name="match_user")
        self.item_tower = _Tower(list(units), name="match_item")
        self.corr_proj = keras.layers.Dense(corr_dim, use_bias=False, name="corr_proj") \
            if corr_dim else None

    def required_features(self, model):
        return _seq_features(model, self.seq_prefix)

    def call(self, model, features, outputs, training=False):
        if not training:
            return {}
        bb = _backbone(model)
        labels = _label(model, features)
        seq_name = _seq_id_feature(model, self.seq_prefix)
        seq_ids = features[seq_name]
        seq_mask = _not_pad(seq_ids)
        hist = bb.embed_items(features, self.seq_prefix)  # [B, S, Di]
        terms = {}
        if self.match_weight:
            user = outputs["user_emb"]
            if self.user_history:
                m = tf.cast(seq_mask, hist.dtype)[..., None]
                mean = tf.math.divide_no_nan(tf.reduce_sum(hist * m, 1), tf.reduce_sum(m, 1))
                user = tf.concat([user, mean], -1)
            vu, vi = self.user_tower(user), self.item_tower(outputs["target_emb"])
            terms["deepmcp_match"] = self.match_weight * _bce_from_logits(
                labels, tf.reduce_sum(vu * vi, -1))
        if self.corr_weight:
            target = outputs["target_emb"][:, None, :]
            tgt_ids = tf.reshape(features[_target_id_feature(model)], [-1, 1])
            tgt_ok = tf.logical_and(labels[:, None] > 0.5, _not_pad(tgt_ids))
            seq = tf.concat([target, hist], 1)  # clicked sequence: target (if clicked), history
            mask = tf.concat([tgt_ok, seq_mask], 1)
            ids = tf.concat([_id_key(tgt_ids), _id_key(seq_ids)], 1)
            if self.corr_proj is not None:
                seq = self.corr_proj(seq)
            terms["deepmcp_corr"] = self.corr_weight * skipgram_loss(
                seq, mask, ids, self.window, self.num_negatives)
        return terms


# ---------------------------------------------------------------------------------------------
# DMR
# ---------------------------------------------------------------------------------------------
class DMRLoss(_AuxBase):
    """DMR's auxiliary match loss (module docstring).

    ``u_{T-1} = MLP(sum_t a_t e_t)`` over the history without its most recent click (positions
    1..S-1, most recent first), ``a = softmax_t(v . tanh(W [e_t ; p_t]))`` with learned position
    embeddings ``p_t`` (DMR's position-as-query attention); the most recent click (position 0)
    is the positive; ``v'_j = W_o e_j`` of the in-batch positives are the candidates.

    Args:
      stats: stats.json dict (unused).
      weight: weight beta of the auxiliary loss.
      attention_units: hidden size of the attention scorer.
      seq_prefix: the history sequence used.
    """

    def __init__(self, stats: Optional[dict] = None, weight: float = 0.1,
                 attention_units: int = 32, seq_prefix: str = "short_", name: str = "dmr",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight, self.seq_prefix = float(weight), seq_prefix
        self.attention_units = int(attention_units)
        self.att_hidden = keras.layers.Dense(attention_units, activation="tanh", name="att_hidden")
        self.att_score = keras.layers.Dense(1, use_bias=False, name="att_score")
        self.pos_emb = None

    def build_for(self, seq_len: int, dim: int):
        if self.pos_emb is None:
            self.pos_emb = self.add_weight("position_embeddings", shape=[seq_len, self.attention_units],
                                           initializer="glorot_uniform", trainable=True)
            self.user_proj = keras.layers.Dense(dim, name="user_proj")
            self.item_proj = keras.layers.Dense(dim, use_bias=False, name="item_proj")

    def user_state(self, hist, mask):
        """Attention pooling of ``hist [B, S, D]`` under ``mask [B, S]`` -> ``[B, D]``."""
        s = hist.shape[1]
        h = self.att_hidden(hist) + self.pos_emb[None, :s]
        score = tf.squeeze(self.att_score(tf.tanh(h)), -1)
        score = tf.where(mask, score, tf.fill(tf.shape(score), tf.constant(-1e9, score.dtype)))
        a = tf.nn.softmax(score, axis=-1) * tf.cast(mask, score.dtype)
        return self.user_proj(tf.reduce_sum(a[..., None] * hist, 1))

    def required_features(self, model):
        return _seq_features(model, self.seq_prefix)

    def call(self, model, features, outputs, training=False):
        if not training or not self.weight:
            return {}
        bb = _backbone(model)
        seq_ids = features[_seq_id_feature(model, self.seq_prefix)]
        mask = _not_pad(seq_ids)
        hist = bb.embed_items(features, self.seq_prefix)  # [B, S, Di]
        if hist.shape[1] is None or hist.shape[1] < 2:
            return {}
        self.build_for(int(hist.shape[1]), int(hist.shape[-1]))
        past, past_mask = hist[:, 1:], mask[:, 1:]
        valid = tf.logical_and(mask[:, 0], tf.reduce_any(past_mask, axis=1))
        u = self.user_state(past, past_mask)
        v = self.item_proj(hist[:, 0])
        loss = inbatch_softmax_loss(u, v, valid, seq_ids[:, 0])
        return {"dmr": self.weight * loss}

