"""``CTRModel`` (tfrs.Model): serving graph = backbone only; training loss = CE + aux terms.

* ``model(features)`` -> ``{"logits": [B], "probabilities": [B]}`` (backbone only; serving).
* ``model.compute_loss(features, training)`` -> scalar total = tfrs Ranking CE (from logits)
  + every aux term + ``emb_l2`` (if the backbone has ``l2_emb``) + ``regularization``
  (``model.losses``: kernel regularizers, aux ``add_loss``). One backbone forward pass is shared
  by the CE and all aux losses (they receive its output dict).
* ``train_step`` / ``test_step`` return every named term (``ce``, aux names, ``emb_l2``,
  ``regularization``, ``total``, ``loss`` = total) as epoch means, plus ``auc``, so they show on
  the progress bar, in ``History`` and in TensorBoard.
* ``compile(..., jit_compile=True)``: StringLookup cannot be XLA-compiled, so Keras' own
  whole-step ``jit_compile`` is NOT used. Instead the train step runs ``backbone.lookup`` (string ->
  int32 ids; hash tables) in the ordinary ``tf.function``, calls an inner
  ``tf.function(jit_compile=True)`` doing forward, losses and gradients on the ids, and applies
  the gradients outside XLA (legacy sparse optimizer updates have no XLA kernels).
* Lookups happen once per step, XLA or not: ``train_step`` / ``test_step`` call
  ``backbone.lookup`` and hand the *looked-up* feature dict (int32 ids, 0 = padding, numeric
  features as they are, no string meta features) to the backbone and to every aux loss, so a
  second view (AQCL) or the context items (CCN) never repeat a string lookup. The backbone's
  lookup is idempotent on ints, so ``model(raw_features)`` (serving) still takes raw strings.
  ``test_step`` never uses XLA (eval is cheap, avoids a second compile).

Optimizers are the trainer's business; ``embedding_variables()`` / ``dense_variables()`` split
the trainable variables for ``tfrs.experimental.optimizers.CompositeOptimizer``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from ctrcore.layers import GatherMemo
from ctrcore.schema import PAD, FeatureSpec


class AuxLoss(keras.layers.Layer):
    """Base class of auxiliary losses (CCNLoss, AQCLLoss, ...).

    Subclasses implement ``call(self, model, features, outputs, training=False)`` returning a
    dict ``{term_name: weighted scalar}`` (or override ``__call__`` with the same signature).
    ``model`` is the :class:`CTRModel` (``model.backbone.embed_items``,
    ``model.backbone.collaborative_degree``, ``model.backbone(features, emb_dropout=, seed=)``),
    ``outputs`` the backbone output dict of the shared forward pass. A keras Layer so its
    variables are tracked by checkpoints (never by the serving export, which wraps the backbone).
    """

    def __call__(self, model, features, outputs, training=False) -> Dict[str, tf.Tensor]:
        with tf.name_scope(self.name):
            terms = self.call(model, features, outputs, training=training)
        self.built = True
        return terms

    def call(self, model, features, outputs, training=False) -> Dict[str, tf.Tensor]:
        raise NotImplementedError

    def required_features(self, model) -> Optional[List[str]]:
        """Feature names this loss reads besides the backbone's inputs and the label, or
        ``None`` for "every feature of the spec" (the safe default). The trainer parses only
        the union of these (``CTRModel.train_feature_names``), so a subclass that declares
        its needs makes the input pipeline cheaper."""
        return None


def _features_of(data):
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


class CTRModel(tfrs.Model):
    """See the module docstring."""

    def __init__(self, spec: FeatureSpec, backbone, aux_losses: Sequence[AuxLoss] = (),
                 name: str = "ctr_model", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec = spec
        self.backbone = backbone
        self.aux_losses = list(aux_losses)
        self.auc = keras.metrics.AUC(name="auc", from_logits=True)
        # per-example CE, averaged in compute_terms (AUTO / SUM_OVER_BATCH_SIZE raise under
        # tf.distribute); the train step divides by the number of replicas, so the summed
        # replica gradients are those of the global-batch mean
        self.task = tfrs.tasks.Ranking(loss=keras.losses.BinaryCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE),
                                       metrics=[self.auc], name="ranking")
        self._trackers: Dict[str, keras.metrics.Mean] = {}
        self._xla = False
        self._xla_grads = None
        # create the backbone's variables now (eagerly, in the caller's strategy scope) so that
        # embedding_variables()/dense_variables(), checkpoint restore and XLA steps see them.
        self.backbone(self._dummy_features(), training=False)

    # -- helpers ---------------------------------------------------------------------------------
    def _dummy_features(self, batch: int = 1):
        feats = {}
        for name, fd in self.spec.serving_features.items():
            shape = [batch] + list(fd.shape)
            feats[name] = tf.fill(shape, PAD) if fd.dtype == "string" else tf.zeros(
                shape, tf.int64 if fd.dtype == "int64" else tf.float32)
        return feats

    def embedding_variables(self):
        """Trainable variables of the row-gathered tables (embeddings, linear/cross weights)."""
        out, seen = [], set()
        for layer in self.backbone.embedding_tables():
            for v in layer.trainable_variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    def dense_variables(self):
        """Every other trainable variable (MLPs, attentions, aux-loss layers)."""
        emb = {id(v) for v in self.embedding_variables()}
        return [v for v in self.trainable_variables if id(v) not in emb]

    def train_feature_names(self) -> Optional[List[str]]:
        """The features a training step reads: the backbone's inputs, the label and what each
        aux loss declares (:meth:`AuxLoss.required_features`); ``None`` = all of the spec."""
        names = set(getattr(self.backbone, "serving_inputs", None) or self.spec.serving_features)
        names.add(self.spec.label)
        for aux in self.aux_losses:
            req = aux.required_features(self) if hasattr(aux, "required_features") else None
            if req is None:
                return None
            names.update(req)
        unknown = sorted(names - set(self.spec.features))
        if unknown:
            raise ValueError(f"training features {unknown} are not in the feature spec")
        return [n for n in self.spec.features if n in names]  # spec order

    @property
    def metrics(self):
        return [self.auc] + list(self._trackers.values())

    def _update_trackers(self, logs: Dict[str, tf.Tensor]):
        for k, v in logs.items():
            if k not in self._trackers:
                with tf.init_scope():
                    self._trackers[k] = keras.metrics.Mean(name=k)
            self._trackers[k].update_state(v)
        return {k: self._trackers[k].result() for k in logs}

    # -- forward / loss --------------------------------------------------------------------------
    def call(self, features, training=False):
        logits = tf.cast(self.backbone(features, training=training)["logits"], tf.float32)
        return {"logits": logits, "probabilities": tf.sigmoid(logits)}

    def compute_terms(self, features, training=False, outputs=None):
        """``(terms, outputs)``: named loss terms (incl. ``total``) and the backbone outputs.

        The forward pass and the aux losses share one :class:`ctrcore.layers.GatherMemo`: a
        second view of the batch (AQCL) reuses the first view's gathers of the ids it leaves
        unchanged, CCN's context items the layer-normalised E_user (same values)."""
        with GatherMemo():
            return self._compute_terms(features, training, outputs)

    def _compute_terms(self, features, training=False, outputs=None):
        if outputs is None:
            outputs = self.backbone(features, training=training)
        labels = tf.cast(features[self.spec.label], tf.float32)
        ce = tf.reduce_mean(self.task(labels=labels[:, None], predictions=outputs["logits"][:, None],
                                      training=training, compute_metrics=False))
        terms = {"ce": tf.cast(ce, tf.float32)}  # float32 terms under mixed precision too
        for aux in self.aux_losses:
            for k, v in aux(self, features, outputs, training=training).items():
                if k in terms:
                    raise ValueError(f"duplicate loss term name {k!r} from {aux.name}")
                terms[k] = tf.cast(v, tf.float32)
        if "emb_l2" in outputs:
            terms["emb_l2"] = tf.cast(outputs["emb_l2"], tf.float32)
        if self.losses:
            terms["regularization"] = tf.add_n([tf.cast(x, tf.float32) for x in self.losses])
        terms["total"] = tf.add_n(list(terms.values()))
        return terms, outputs

    def compute_loss(self, features, training=False):
        return self.compute_terms(_features_of(features), training=training)[0]["total"]

    # -- steps -----------------------------------------------------------------------------------
    def compile(self, optimizer="adagrad", jit_compile=None, **kwargs):
        """As keras ``compile``; ``jit_compile=True`` XLA-compiles the id-based forward and backward
        pass of the train step (see the module docstring), never the string lookups, nor the
        optimizer update (sparse Adagrad/Adam updates of the legacy optimizers used by
        ``CompositeOptimizer`` have no XLA kernel)."""
        self._xla = bool(jit_compile)
        self._xla_grads = tf.function(self._grads, jit_compile=True) if self._xla else None
        super().compile(optimizer=optimizer, jit_compile=False, **kwargs)

    def _grads(self, features):
        with tf.GradientTape() as tape:
            terms, outputs = self.compute_terms(features, training=True)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = terms["total"] / tf.cast(replicas, tf.float32)
            # mixed_float16: the trainer wraps the optimizer in a LossScaleOptimizer
            if hasattr(self.optimizer, "get_scaled_loss"):
                scaled = self.optimizer.get_scaled_loss(scaled)
        grads = tape.gradient(scaled, self.trainable_variables)
        if hasattr(self.optimizer, "get_unscaled_gradients"):
            grads = self.optimizer.get_unscaled_gradients(grads)
        return terms, outputs["logits"], grads

    def _apply(self, grads):
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, self.trainable_variables) if g is not None])

    def train_step(self, data):
        # string -> id lookups once per step (hash tables, outside XLA); the backbone, the CE and
        # every aux loss (incl. a second, augmented view) then work on the int32 ids
        features = self.backbone.lookup(_features_of(data))
        if self._xla:
            terms, logits, grads = self._xla_grads(features)
        else:
            terms, logits, grads = self._grads(features)
        self._apply(grads)
        return self._step_logs(features, logits, terms)

    def test_step(self, data):
        features = self.backbone.lookup(_features_of(data))
        terms, outputs = self.compute_terms(features, training=False)
        return self._step_logs(features, outputs["logits"], terms)

    def _step_logs(self, features, logits, terms):
        """A train or test step's logs: its loss terms (``loss`` = ``total``) through the
        trackers, and the running AUC updated with this batch."""
        self.auc.update_state(tf.cast(features[self.spec.label], tf.float32), logits)
        logs = dict(terms)
        logs["loss"] = terms["total"]
        logs = self._update_trackers(logs)
        logs["auc"] = self.auc.result()
        return logs

    def predict_step(self, data):
        return self(_features_of(data), training=False)
