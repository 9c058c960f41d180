"""Building blocks shared by every backbone (embeddings, MLP, attentions, SIM search, FM, wide).

Id handling is split in two so that the numeric part of a model can be XLA-compiled:

* ``IdLookup`` (string -> int32 id, a Keras ``StringLookup`` over the spec's vocab file,
  ``mask_token=""`` -> 0, ``num_oov_indices=1`` -> 1, vocabulary entries -> 2..) is NOT
  XLA-compilable (hash tables, string tensors);
* everything downstream works on int32 ids (``tf.gather`` embeddings, masks ``ids != 0``) and
  is XLA-safe.

Conventions: id 0 = padding (masked), id 1 = OOV (unknown / below min-frequency ids).

Vocabulary files are checked in Python before any TF table sees them
(:func:`check_vocabulary`): a missing file, a blank line inside it or a duplicated id raises an
error naming the vocabulary, the features that read it and the file; an *empty* vocabulary (a
log without that optional column, e.g. no seller) gets no table at all: ``""`` -> 0 and every
other value -> the one OOV bucket 1 (``IdLookup.oov_only``), and a warning names the features.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from tensorflow.python.distribute.sharded_variable import ShardedVariable as _ShardedVariable

from ctrcore.idshards import vocab_lines
from ctrcore.schema import OOV_ID, PAD, PAD_ID

log = logging.getLogger("ctrcore.layers")


class VocabularyError(ValueError):
    """A vocabulary file cannot be used (blank line, duplicated id, unreadable); the message
    names the vocabulary, the features that read it and the file."""


def _who(name: Optional[str], features: Sequence[str]) -> str:
    who = f"vocabulary {name!r}" if name else "vocabulary"
    if features:
        who += f" (feature{'s' if len(features) > 1 else ''} {', '.join(features)})"
    return who


def check_vocabulary(vocabulary, name: Optional[str] = None, features: Sequence[str] = ()) -> int:
    """Validate a vocabulary (a file path as written by the Beam job, or a list of ids) the way
    the TF table initializer would read it, and return its number of ids (0 = empty).

    Raises ``FileNotFoundError`` for a missing file and :class:`VocabularyError` for a blank
    line before the last id, a duplicated id or an unreadable file; every message names the
    vocabulary ``name``, the ``features`` that read it and the file. A file with no ids at all
    (empty, or blank lines only) is valid and returns 0."""
    who = _who(name, features)
    if not isinstance(vocabulary, (str, bytes)):
        ids = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vocabulary]
        seen = set()
        for v in ids:
            if v == "":
                raise VocabularyError(f"{who}: the empty string is the padding token and "
                                      "cannot be a vocabulary entry")
            if v in seen:
                raise VocabularyError(f"{who}: id {v!r} is listed twice")
            seen.add(v)
        return len(ids)
    path = vocabulary.decode() if isinstance(vocabulary, bytes) else vocabulary
    try:
        exists = tf.io.gfile.exists(path)
    except tf.errors.OpError as e:
        raise VocabularyError(f"{who}: cannot check vocabulary file {path}: {e}") from None
    if not exists:
        raise FileNotFoundError(f"{who}: vocabulary file {path} not found (written by "
                                "pipelines.preprocess under OUT/vocab/)")
    try:
        with tf.io.gfile.GFile(path, "rb") as fh:
            data = fh.read()
    except tf.errors.OpError as e:
        raise VocabularyError(f"{who}: cannot read vocabulary file {path}: {e}") from None
    lines = vocab_lines(data)  # the table initializer's split: trailing newline, CRs dropped
    if not any(lines):
        return 0  # no ids at all (empty, or blank lines only): never handed to a TF table
    first: dict = {}
    for i, ln in enumerate(lines, 1):
        if not ln:
            raise VocabularyError(f"{who}: vocabulary file {path} has a blank line at line {i} "
                                  "(one id per line, no blank lines)")
        if ln in first:
            raise VocabularyError(f"{who}: vocabulary file {path} lists id {ln!r} twice (lines "
                                  f"{first[ln]} and {i})")
        first[ln] = i
    return len(lines)


def pad_like(x: tf.Tensor) -> tf.Tensor:
    """The padding value for a feature tensor: ``""`` for raw string ids, 0 for looked-up ids.

    Use ``tf.where(keep, x, pad_like(x))`` to mask sequence positions of a feature dict whether
    it holds raw strings or ``Backbone.lookup`` ids.
    """
    if x.dtype == tf.string:
        return tf.constant(PAD, tf.string)
    return tf.zeros([], x.dtype)


class IdLookup(keras.layers.Layer):
    """String id -> int32 index: 0 for the padding ``""``, 1 for OOV, 2.. for vocabulary entries.

    ``vocabulary`` is a file path (one id per line, as written by the Beam job; tracked as a
    SavedModel asset) or a list of ids. Integer inputs are assumed to be looked up already and
    are only cast to int32 (so a lookup is idempotent).

    The vocabulary is checked first (:func:`check_vocabulary`; errors name ``vocab_name``, the
    ``features`` reading it and the file). An empty vocabulary builds no table: ``oov_only`` is
    True, ``""`` -> 0 and any other value -> 1 (``input_dim`` 2), and a warning is logged.
    """

    def __init__(self, vocabulary, vocab_name: Optional[str] = None,
                 features: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.vocab_name, self.features = vocab_name, list(features)
        self.size = check_vocabulary(vocabulary, vocab_name, self.features)
        self.oov_only = self.size == 0
        if self.oov_only:
            src = "" if not isinstance(vocabulary, (str, bytes)) else f" (file {vocabulary})"
            log.warning("%s is empty%s: one OOV bucket, every non-empty value maps to OOV id "
                        "%d and \"\" to padding %d", _who(vocab_name, self.features), src, OOV_ID,
                        PAD_ID)
            self.lookup = None
        else:
            self.lookup = keras.layers.StringLookup(vocabulary=vocabulary, mask_token=PAD,
                                                    num_oov_indices=1, output_mode="int",
                                                    name=f"{self.name}_sl")

    @property
    def input_dim(self) -> int:
        if self.oov_only:
            return 2  # padding + the OOV bucket
        return int(self.lookup.vocabulary_size())  # includes mask + OOV

    def call(self, x):
        if x.dtype.is_integer:
            return tf.cast(x, tf.int32)
        if self.oov_only:
            return tf.where(tf.equal(x, PAD), PAD_ID, OOV_ID)
        return tf.cast(self.lookup(x), tf.int32)


class IdEmbedding(keras.layers.Layer):
    """Embedding table ``[input_dim, dim]`` applied with ``tf.gather`` to int32 ids (XLA-safe).

    One instance per vocabulary: every feature whose spec ``vocab`` is the same shares it
    (``item_id``, ``trigger_item_id``, ``short_item_ids``, ``long_item_ids``,
    ``context_item_ids`` all use the ``item_id`` table).
    """

    def __init__(self, input_dim: int, dim: int, initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.dim = int(input_dim), int(dim)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight("embeddings", shape=[self.input_dim, self.dim],
                                          initializer=self.initializer, trainable=True)
        super().build(input_shape)

    def call(self, ids):
        if not self.built:
            self.build(None)
        memo = GatherMemo.active()
        if memo is not None:
            return memo.gather(self, ids)
        return self.gather(ids)

    def gather(self, ids):
        """The rows of ``ids`` (no memo)."""
        if isinstance(self.embeddings, _ShardedVariable):  # ParameterServerStrategy partitioner:
            return tf.nn.embedding_lookup(self.embeddings, ids)  # gathers per shard, no concat
        return tf.gather(self.embeddings, ids)


class GatherMemo:
    """Embedding-row gathers and layer outputs shared within one loss computation (trace time
    only, no state in the graph): ``with GatherMemo():`` around a forward pass and the aux losses
    of the same step (``CTRModel.compute_terms``).

    * A second gather of the *same* ids tensor by the same :class:`IdEmbedding` returns the first
      gather's output (same rows, same step: same values), e.g. the user and target ids of
      AQCL's second view, which only masks the history; the optimizer then de-duplicates one
      set of those rows per table instead of two.
    * :meth:`once`: a layer applied twice to the same tensor, computed once (the collaborative
      module's layer norm of E_user, for the target and again for CCN's context items).

    Gradients are the same sums (rounding aside). The memo is per thread (replicas of
    ``tf.distribute`` trace in their own threads) and nests (the innermost is active).

    Tried and not kept: serving the gather of AQCL's history-masked ids from the first view's
    rows (``where(keep, rows, row PAD_ID)``, the same values): the ``where`` and its gradient on
    the ``[B, L, dim]`` rows cost what the second gather and its de-duplication saved (in-process
    A/B, benchmarks/RESULTS.md section 2).
    """

    _local = threading.local()

    def __init__(self):
        self._memo = {}  # key -> (layer, input tensor, output): kept alive, so ids are not reused

    @classmethod
    def active(cls) -> Optional["GatherMemo"]:
        stack = getattr(cls._local, "stack", None)
        return stack[-1] if stack else None

    def __enter__(self):
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        self._local.stack.append(self)
        return self

    def __exit__(self, *exc):
        self._local.stack.pop()
        self._memo.clear()
        return False

    def once(self, layer, x, fn):
        """``fn()`` = ``layer`` applied to the tensor ``x``, computed once per memo (a second call
        with the same layer and the same ``x`` tensor returns the first result)."""
        if not isinstance(x, tf.Tensor):
            return fn()
        key = (id(layer), x.ref())
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = (layer, x, fn())
        return hit[2]

    def gather(self, layer: IdEmbedding, ids):
        """``layer``'s rows of ``ids``, gathered once per memo."""
        if isinstance(layer.embeddings, _ShardedVariable):
            return layer.gather(ids)
        return self.once(layer, ids, lambda: layer.gather(ids))


def matmul_last(x, kernel):
    """``einsum("...d,du->...u", x, kernel)`` as one 2-D matmul (reshape, matmul, reshape):
    oneDNN's einsum (and its gradient) is slower than MatMul for these shapes."""
    u = int(kernel.shape[-1])
    y = tf.matmul(tf.reshape(x, [-1, int(x.shape[-1])]), kernel)
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [u]], 0))


class MLP(keras.layers.Layer):
    """Dense stack: ``units`` with ``activation``, dropout and optional batch norm after each hidden
    layer. With ``linear_last=True`` the last layer has no activation / dropout / norm."""

    def __init__(self, units: Sequence[int], activation="relu", dropout: float = 0.0,
                 batch_norm: bool = False, linear_last: bool = False, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = list(units)
        reg = keras.regularizers.l2(l2) if l2 else None
        self.denses, self.norms, self.drops = [], [], []
        for i, u in enumerate(self.units):
            last = i == len(self.units) - 1
            lin = last and linear_last
            self.denses.append(keras.layers.Dense(u, activation=None if lin else activation,
                                                  kernel_regularizer=reg, name=f"dense_{i}"))
            self.norms.append(keras.layers.BatchNormalization(name=f"bn_{i}") if batch_norm and not lin else None)
            self.drops.append(keras.layers.Dropout(dropout) if dropout and not lin else None)

    def call(self, x, training=False):
        return self._after_first_dense(self.denses[0](x), training)

    def _after_first_dense(self, x, training):
        """Norm / dropout of layer 0 (whose Dense is already applied), then the other layers."""
        for i, (d, n, dr) in enumerate(zip(self.denses, self.norms, self.drops)):
            if i > 0:
                x = d(x)
            if n is not None:
                x = n(x, training=training)
            if dr is not None:
                x = dr(x, training=training)
        return x

    def first_kernel(self, in_dim: int, dtype=tf.float32):
        """The first Dense's kernel ``[in_dim, units[0]]`` (built on ``in_dim`` if needed), for
        callers that apply the first layer to a concatenation part by part."""
        d0 = self.denses[0]
        if not d0.built:
            d0.build(tf.TensorShape([None, int(in_dim)]))
        return tf.cast(d0.kernel, dtype)

    def finish_first(self, pre, training=False):
        """The MLP from the first Dense's pre-activation ``pre`` (= x . kernel) on: bias and
        activation of layer 0, then norms / dropout / the other layers."""
        d0 = self.denses[0]
        if d0.use_bias:
            pre = pre + tf.cast(d0.bias, pre.dtype)
        if d0.activation is not None:
            pre = d0.activation(pre)
        return self._after_first_dense(pre, training)

    def call_broadcast(self, shared, per_item, training=False):
        """``call(concat([tile(shared), per_item], -1))`` for ``shared [B, Ds]`` and
        ``per_item [B, C, Dp]`` without tiling: the first Dense is split into its ``shared`` and
        ``per_item`` rows, so ``W_s . shared`` is computed once per example instead of C times."""
        ds = int(shared.shape[-1])
        k = self.first_kernel(ds + int(per_item.shape[-1]), per_item.dtype)
        shared = tf.cast(shared, per_item.dtype)
        x = tf.matmul(shared, k[:ds])[:, None, :] + matmul_last(per_item, k[ds:])
        return self.finish_first(x, training)


class TargetAttention(keras.layers.Layer):
    """Multi-head target attention (CCN Eq. 1-2) of one query item over a sequence.

    ``call(query [B, D], seq [B, L, D], mask [B, L] bool) -> [B, D_out]`` with the weights of a
    ``keras.layers.MultiHeadAttention`` (``heads`` heads of ``key_dim = D // heads``, softmax over
    the unmasked positions, output projection to ``output_dim`` (default D)). Masked positions
    get exactly zero weight, so appending padding does not change the result; an all-padding
    sequence returns zeros (not the average of padding values, not NaN).

    ``single_query=True`` (default) computes the same function in the single-query form: with
    one query per example, ``q_h . (W_k,h x_l + b_k,h) = (W_k,h^T q_h) . x_l + const_h`` (the
    constant cancels in the softmax) and ``sum_l p_hl (W_v,h x_l + b_v,h) = W_v,h (sum_l p_hl
    x_l) + b_v,h`` (the weights sum to one), so the keys and values are never projected: the
    sequence is touched by two batched ``[B, H, D] x [B, D, L]``-shaped products instead of two
    ``[B, L, D] x [D, H*K]`` projections (~12x fewer FLOPs for L = 100, D = 48); the query and
    key weights are folded into one ``[D, H*D]`` matrix and the value and output weights into
    one ``[H*D, E]`` matrix, so each example costs two plain matmuls besides the attention.
    Same variables as the Keras layer (checkpoints are interchangeable); ``single_query=False``
    calls ``MultiHeadAttention`` itself (tests compare the two).
    """

    def __init__(self, heads: int = 4, key_dim: Optional[int] = None, output_dim: Optional[int] = None,
                 dropout: float = 0.0, single_query: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.key_dim, self.output_dim, self.dropout = heads, key_dim, output_dim, dropout
        self.single_query = bool(single_query)
        self.mha = None

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.mha = keras.layers.MultiHeadAttention(
            num_heads=self.heads, key_dim=self.key_dim or max(1, d // self.heads),
            output_shape=self.output_dim, dropout=self.dropout, name="mha")
        # the variables now (not at the first call), for the single-query path that reads them
        m = self.mha
        m._build_from_signature(tf.TensorShape([None, 1, d]), tf.TensorShape([None, None, d]))
        for dense, shape in ((m._query_dense, [None, 1, d]), (m._key_dense, [None, None, d]),
                             (m._value_dense, [None, None, d]),
                             (m._output_dense, [None, 1, m._num_heads, m._value_dim])):
            if not dense.built:
                with tf.name_scope(m.name), tf.name_scope(dense.name):  # the names Keras gives
                    dense.build(tf.TensorShape(shape))
        super().build(input_shape)

    def call(self, query, seq, mask, training=False):
        if self.mha is None:
            self.build(query.shape)
        mask = tf.cast(mask, tf.bool)
        any_valid = tf.reduce_any(mask, axis=1, keepdims=True)
        if not self.single_query:
            out = self.mha(query[:, None, :], seq, seq, attention_mask=mask[:, None, :],
                           training=training)[:, 0, :]
        else:
            out = self._single_query(query, seq, mask, training)
        return tf.where(any_valid, out, tf.zeros_like(out))

    def _single_query(self, query, seq, mask, training):
        m = self.mha
        dt = seq.dtype
        wq, bq = tf.cast(m._query_dense.kernel, dt), tf.cast(m._query_dense.bias, dt)  # [D,H,K], [H,K]
        wk = tf.cast(m._key_dense.kernel, dt)  # [D,H,K] (its bias cancels in the softmax)
        wv, bv = tf.cast(m._value_dense.kernel, dt), tf.cast(m._value_dense.bias, dt)
        wo, bo = tf.cast(m._output_dense.kernel, dt), tf.cast(m._output_dense.bias, dt)  # [H,K,E], [E]
        d, h = int(wq.shape[0]), int(wq.shape[1])
        scale = tf.math.rsqrt(tf.cast(wq.shape[-1], dt))
        # per head, query -> input space in one product: q_in_h = (x W_q,h + b_q,h) W_k,h^T / sqrt(K)
        # (weights only, tiny: batched matmuls over the heads; oneDNN's einsum costs more here)
        wk_t = tf.transpose(wk, [1, 2, 0])  # [H, K, D]
        m_qk = tf.reshape(tf.transpose(tf.matmul(tf.transpose(wq, [1, 0, 2]), wk_t), [1, 0, 2]) * scale,
                          [d, h * d])  # [D, H*D]
        c_qk = tf.reshape(tf.matmul(bq[:, None, :], wk_t) * scale, [h * d])
        q_in = tf.reshape(tf.matmul(tf.cast(query, dt), m_qk) + c_qk, [-1, h, d])  # [B, H, D]
        # batched matmuls, not einsums: oneDNN's einsum gradient of [B,H,L] x [B,L,D] was ~5x
        # slower than the BatchMatMul pair (benchmarks/profile.py, RESULTS.md section 8)
        scores = tf.matmul(q_in, seq, transpose_b=True)  # [B, H, L]
        scores = tf.where(mask[:, None, :], scores, tf.cast(-1e9 if dt != tf.float16 else -65500.0, dt))
        p = tf.nn.softmax(scores, axis=-1)
        if self.dropout and training:
            p = tf.nn.dropout(p, rate=self.dropout)
        pooled = tf.matmul(p, seq)  # [B, H, D]
        # value and output projections folded: sum_h (pooled_h W_v,h + b_v,h) W_o,h + b_o
        n_vo = tf.reshape(tf.matmul(tf.transpose(wv, [1, 0, 2]), wo), [h * d, -1])  # [H*D, E]
        c_vo = tf.reduce_sum(tf.matmul(bv[:, None, :], wo), axis=[0, 1]) + bo
        return tf.matmul(tf.reshape(pooled, [-1, h * d]), n_vo) + c_vo


class Dice(keras.layers.Layer):
    """Dice (DIN paper Eq. 9): ``p = sigmoid(BN(x))``, ``y = p * x + (1 - p) * alpha * x``; the
    batch norm has no centre / scale (its statistics over every axis but the last), ``alpha`` one
    weight per unit (zeros at start, as DeepCTR's ``Dice``)."""

    def __init__(self, epsilon: float = 1e-9, **kwargs):
        super().__init__(**kwargs)
        self.bn = keras.layers.BatchNormalization(axis=-1, epsilon=epsilon, center=False, scale=False,
                                                  name="bn")

    def build(self, input_shape):
        self.alpha = self.add_weight("alpha", shape=[int(input_shape[-1])], initializer="zeros",
                                     trainable=True)
        super().build(input_shape)

    def call(self, x, training=False):
        p = tf.sigmoid(self.bn(x, training=training))
        return p * x + (1.0 - p) * tf.cast(self.alpha, x.dtype) * x


#: DIN attention activations that are layers with weights (one per hidden layer of the unit)
PARAMETRIC_ACTIVATIONS = ("prelu", "dice")


class DinAttention(keras.layers.Layer):
    """DIN's local activation unit: weight_j = MLP([q, k_j, q - k_j, q * k_j]), masked.

    ``softmax=False`` (default, as in DIN): weights are not normalised, output is the weighted
    *sum* of the sequence (keeps the intensity of the user's interest); masked positions get weight
    0. ``softmax=True``: softmax over the unmasked positions (an all-padding sequence gives zeros).
    ``activation``: of the unit's hidden layers, a Keras name (default ``sigmoid``) or one of
    :data:`PARAMETRIC_ACTIVATIONS`: ``prelu`` (PReLU, one slope per unit, zeros at start) or
    ``dice`` (:class:`Dice`), the DIN paper's; these add one layer per hidden layer (``act_<i>``).
    """

    def __init__(self, units: Sequence[int] = (80, 40), activation="sigmoid", softmax: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.softmax = softmax
        parametric = isinstance(activation, str) and activation.lower() in PARAMETRIC_ACTIVATIONS
        self.mlp = MLP(list(units) + [1], activation=None if parametric else activation, linear_last=True,
                       name="att_mlp")
        self.acts = []
        if parametric:
            kind = activation.lower()
            self.acts = [keras.layers.PReLU(shared_axes=[1], name=f"act_{i}") if kind == "prelu"
                         else Dice(name=f"act_{i}") for i in range(len(units))]

    def _unit(self, pre, training):
        """The unit from the first Dense's pre-activation on -> ``[B, L]`` scores."""
        if not self.acts:
            return self.mlp.finish_first(pre, training=training)[..., 0]
        d = self.mlp.denses
        x = pre + tf.cast(d[0].bias, pre.dtype)
        for i, act in enumerate(self.acts):
            x = d[i + 1](act(x, training=training))
        return x[..., 0]

    def call(self, query, seq, mask, training=False):
        mask = tf.cast(mask, tf.bool)
        # MLP([q, k, q - k, q * k]) with the first layer split by its input rows:
        # W.[q; k; q-k; q*k] = (W_q + W_d).q + (W_k - W_d).k + W_p.(q*k), so the query part is
        # computed once per example instead of once per position (same function and weights as
        # the concatenation; ~half the attention FLOPs)
        d = int(seq.shape[-1])
        w = self.mlp.first_kernel(4 * d, seq.dtype)
        query = tf.cast(query, seq.dtype)
        pre = (tf.matmul(query, w[:d] + w[2 * d:3 * d])[:, None, :]
               + matmul_last(seq, w[d:2 * d] - w[2 * d:3 * d])
               + matmul_last(query[:, None, :] * seq, w[3 * d:]))
        score = self._unit(pre, training)  # [B, L]
        if self.softmax:
            score = tf.where(mask, score, tf.fill(tf.shape(score), tf.constant(-1e9, score.dtype)))
            w = tf.nn.softmax(score, axis=-1)
        else:
            w = score
        w = tf.where(mask, w, tf.zeros_like(w))
        return tf.matmul(w[:, None, :], seq)[:, 0, :]


def sim_hard_search(seq_emb, seq_cat_ids, query_cat_ids, seq_mask):
    """SIM hard search: the attention mask keeping the long-sequence positions whose category is
    the query's category (vectorised, XLA-safe).

    ``seq_cat_ids [B, L]`` and ``query_cat_ids [B]`` are looked-up int ids, ``seq_mask [B, L]``
    the padding mask. A padding (0) or OOV (1) query category matches nothing. ``seq_emb`` is not
    needed for the hard search (kept for the interface; the caller attends over it with the
    returned mask). Returns a bool ``[B, L]`` mask.
    """
    del seq_emb
    q = tf.cast(query_cat_ids, seq_cat_ids.dtype)[:, None]
    return tf.logical_and(tf.cast(seq_mask, tf.bool),
                          tf.logical_and(tf.equal(seq_cat_ids, q), q > OOV_ID))


def masked_mean(seq, mask):
    """Mean over the unmasked positions of ``seq [B, L, D]`` (zeros when all masked)."""
    m = tf.cast(mask, seq.dtype)[..., None]
    return tf.reduce_sum(seq * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1.0)


def fm_interaction(fields):
    """Second-order FM term ``0.5 * sum_k((sum_i v_ik)^2 - sum_i v_ik^2)`` of ``fields [B, F, k]``
    -> ``[B]`` (DeepFM)."""
    s = tf.reduce_sum(fields, axis=1)
    return 0.5 * tf.reduce_sum(tf.square(s) - tf.reduce_sum(tf.square(fields), axis=1), axis=-1)


class HashedCross(keras.layers.Layer):
    """A hashed cross of two int id tensors -> a learnable scalar weight per bucket (W&D wide part).

    ``bucket = (a * 1000003 + b) mod num_buckets`` (integer arithmetic on looked-up ids, XLA-safe);
    pairs where either side is padding (0) get weight 0. Broadcasts ``a`` and ``b``.
    """

    def __init__(self, num_buckets: int = 1 << 16, **kwargs):
        super().__init__(**kwargs)
        self.num_buckets = int(num_buckets)

    def build(self, input_shape=None):
        self.weights_table = self.add_weight("cross_weights", shape=[self.num_buckets, 1],
                                             initializer="zeros", trainable=True)
        super().build(input_shape)

    def call(self, a, b):
        if not self.built:
            self.build(None)
        a64, b64 = tf.cast(a, tf.int64), tf.cast(b, tf.int64)
        bucket = tf.math.floormod(a64 * 1000003 + b64, self.num_buckets)
        w = tf.gather(self.weights_table, tf.cast(bucket, tf.int32))[..., 0]
        valid = tf.logical_and(a64 > 0, b64 > 0)
        return tf.where(valid, w, tf.zeros_like(w))


def item_feature_names(spec, prefix: str):
    """Spec feature names of the item sides (``spec.config.item_side``) for a prefix.

    ``""`` / ``"trigger_"`` -> scalar features ``[prefix + side]`` (e.g. ``trigger_category_id``);
    ``"short_"`` / ``"long_"`` / ``"context_"`` -> list features ``[prefix + side + "s"]``.
    Resolved against the spec (no feature name is hard-coded).
    """
    names = []
    for side in spec.config.item_side:
        if prefix + side in spec.features:
            names.append(prefix + side)
        elif f"{prefix}{side}s" in spec.features:
            names.append(f"{prefix}{side}s")
        else:
            raise KeyError(f"no feature for item side {side!r} with prefix {prefix!r} in the spec")
    return names


class ItemEmbedder(keras.layers.Layer):
    """item ⊕ category ⊕ seller (every ``spec.config.item_side``) embeddings of a prefix.

    Holds *references* to the shared per-vocabulary ``IdEmbedding`` tables (no copies).
    ``call(ids, prefix, post=None) -> (emb [B, (L,) Di], mask [B, (L,)] bool)`` where ``ids`` are
    looked-up int ids, the mask is ``item id != padding`` and ``post(emb)`` (optional) is applied
    to each gathered table output (embedding dropout / l2 bookkeeping).
    """

    def __init__(self, spec, tables, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.tables = tables  # vocab name -> IdEmbedding (shared)
        self.dim = sum(tables[spec.features[n].vocab].dim for n in item_feature_names(spec, ""))

    def call(self, ids, prefix: str, post=None):
        names = item_feature_names(self.spec, prefix)
        parts = []
        for n in names:
            e = self.tables[self.spec.features[n].vocab](ids[n])
            parts.append(post(e) if post is not None else e)
        return tf.concat(parts, axis=-1), tf.not_equal(ids[names[0]], PAD_ID)
