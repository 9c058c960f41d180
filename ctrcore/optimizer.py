"""The optimizer of a run: ``--optimizer`` (AdaGrad, Adam, or a composite of AdaGrad on the
embedding tables and Adam on the rest), the learning-rate schedule and mixed-precision loss
scaling.

Learning-rate schedule: ``InverseTimeDecay`` (``lr / (1 + rate * step / decay_steps)``), the
"decays over time as the training progresses" of the CCN paper (Sec. 4.1, AdaGrad, 0.001).
Optimizers are the Keras 2 *legacy* ones (sparse row updates for embedding gradients; also the
only kind ``tfrs.experimental.optimizers.CompositeOptimizer`` accepts).
"""
from __future__ import annotations

from typing import List

import tensorflow as tf
import tf_keras as keras

from ctrcore.config import ConfigError, TrainConfig


def learning_rate(cfg: TrainConfig, lr: float):
    if cfg.lr_decay_steps and cfg.lr_decay_rate:
        return keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=cfg.lr_decay_steps,
                                                           decay_rate=cfg.lr_decay_rate)
    return lr


def embedding_variables(model: keras.Model) -> List[tf.Variable]:
    """The row-gathered tables: ``model.embedding_variables()`` (CTRModel) if the model has it,
    else the trainable variables of every ``keras.layers.Embedding`` inside ``model``."""
    if callable(getattr(model, "embedding_variables", None)):
        return list(model.embedding_variables())
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Embedding):
            for v in layer.trainable_weights:
                if v.ref() not in seen:
                    seen.add(v.ref())
                    out.append(v)
    return out


def loss_scaled(cfg: TrainConfig, optimizer):
    """mixed_float16 needs dynamic loss scaling (bfloat16 has float32's exponent range: none)."""
    if cfg.mixed_precision != "mixed_float16":
        return optimizer
    return keras.mixed_precision.LossScaleOptimizer(optimizer)


def make_optimizer(cfg: TrainConfig, model: keras.Model):
    legacy = keras.optimizers.legacy
    clip = {"global_clipnorm": cfg.clipnorm} if cfg.clipnorm else {}
    adagrad = lambda **kw: legacy.Adagrad(learning_rate(cfg, cfg.learning_rate),
                                          initial_accumulator_value=cfg.adagrad_initial_accumulator, **kw)
    if cfg.optimizer == "adagrad":
        return adagrad(**clip)
    if cfg.optimizer == "adam":
        return legacy.Adam(learning_rate(cfg, cfg.learning_rate), **clip)
    if cfg.optimizer == "composite":
        import tensorflow_recommenders as tfrs

        def emb_vars():
            return embedding_variables(model)

        def dense_vars():
            emb = {v.ref() for v in embedding_variables(model)}
            return [v for v in model.trainable_variables if v.ref() not in emb]

        return tfrs.experimental.optimizers.CompositeOptimizer([
            (adagrad(), emb_vars),
            (legacy.Adam(learning_rate(cfg, cfg.dense_learning_rate)), dense_vars)])
    raise ConfigError(f"unknown --optimizer={cfg.optimizer!r}")
