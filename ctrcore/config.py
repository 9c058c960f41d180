"""Training configuration: one dataclass, the single source of truth for the trainer's options.

``ccn.train`` defines one absl flag per field (same name, same default, help from the field's
metadata), so ``--flagfile``s, ``train_config.json`` and this dataclass always agree. Pure
Python (no TensorFlow import), so flag files can be validated cheaply.

Model-specific options (loss hyper-parameters of CCN / AQCL) are not fields here: the trainer
is model-agnostic and receives them, with the model factory, from the caller (``model_params``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence

OPTIMIZERS = ("adagrad", "adam", "composite")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker_mirrored", "parameter_server")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
TRAIN_INPUTS = ("auto", "stream", "ids", "cache", "memory")
DIN_WIDE = ("", "linear", "wide")  # --din_wide


class ConfigError(ValueError):
    """An inconsistent or invalid configuration (raised before any work is done)."""


def option(default, help: str, **kw):
    """A config field that is a flag: its default and help text (``metadata["help"]``); a list
    or dict default is copied for each instance. Used by :class:`TrainConfig` and by every
    auxiliary loss's config (:mod:`ctrcore.auxloss`)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d),
                                 metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass
class TrainConfig:
    # -- data / run ---------------------------------------------------------------------------
    data_dir: str = option("", "Preprocessed data: {train,valid,test}-*.tfrecord.gz, feature_spec.json, "
                           "vocab/, stats.json (output of pipelines.preprocess).")
    model_dir: str = option("", "Run directory: backup/ (resume), best/ (best weights by val AUC), tb/, "
                            "train_config.json, history.json, metrics.json/.md.")
    model: str = option("ccn", "Model name (see ccn.models.MODELS).")
    aux_losses: List[str] = option([], "Extra auxiliary losses added to the model's own (names "
                                   "registered with ctrcore.auxloss).")
    train_split: str = option("train", "Split to train on.")
    valid_split: str = option("valid", "Split used for val AUC (best checkpoint, early stopping).")
    eval_split: str = option("test", "Split evaluated at the end of training (metrics.json).")
    # -- schedule -----------------------------------------------------------------------------
    epochs: int = option(3, "Number of epochs (an epoch is one pass over the training split unless "
                        "--steps_per_epoch is set).")
    steps_per_epoch: int = option(0, "Steps per epoch; 0 = one pass over the training split "
                                 "(stats.json examples[train] / batch_size).")
    train_steps: Optional[int] = option(None, "Cap on the total number of training steps (smoke runs); "
                                          "must be > 0 when set.")
    batch_size: int = option(1024, "Training batch size (CCN paper: 1024).")
    eval_batch_size: int = option(4096, "Batch size for validation / evaluation.")
    shuffle_buffer: int = option(10000, "Record shuffle buffer of the training input.")
    # -- optimisation -------------------------------------------------------------------------
    optimizer: str = option("adagrad", "adagrad (CCN paper) | adam | composite (Adagrad for embedding "
                                   "tables + Adam for the dense layers, tfrs CompositeOptimizer).")
    learning_rate: float = option(0.001, "Initial learning rate (CCN paper: AdaGrad, 0.001, decayed).")
    dense_learning_rate: float = option(0.001, "Adam learning rate of the dense layers (composite).")
    # the schedule: InverseTimeDecay, lr(t) = lr / (1 + lr_decay_rate * t / lr_decay_steps)
    lr_decay_steps: int = option(10000, "Steps of the InverseTimeDecay schedule; 0 disables the decay.")
    lr_decay_rate: float = option(0.5, "Rate of the InverseTimeDecay schedule: lr / (1 + rate * t / steps).")
    adagrad_initial_accumulator: float = option(0.1, "Adagrad initial accumulator value.")
    clipnorm: float = option(0.0, "Gradient clipping by global norm (0 = off; not with composite).")
    # -- backbone -----------------------------------------------------------------------------
    emb_dim: int = option(16, "Embedding dimension of every id feature.")
    mlp_units: List[int] = option([200, 80], "Hidden units of the prediction MLP.")
    dropout: float = option(0.2, "Dropout rate of the MLP (AQCL paper: 0.2).")
    num_heads: int = option(4, "Heads of the multi-head target attention (CCN paper: 4).")
    l2_emb: float = option(0.0, "L2 weight on the looked-up embedding rows (AQCL searches 1e-5..1e-1).")
    l2_dense: float = option(0.0, "L2 weight on the MLP kernels.")
    cm_dim: int = option(16, "Dimension of the collaborative degree s (CCN Eq. 4; 1 = scalar).")
    cm_units: List[int] = option([64], "Hidden units of the collaborative module's MLP (CCN Eq. 4).")
    batch_norm: bool = option(False, "Batch normalisation after each hidden layer of the prediction MLP(s).")
    din_units: List[int] = option([80, 40], "Hidden units of the DIN attention MLP (din; dihn's two DIN "
                                        "attentions).")
    din_softmax: bool = option(False, "Normalise the DIN attention weights with a softmax (DIN itself: "
                                  "unnormalised, a weighted sum).")
    wide_buckets: int = option(1 << 16, "Hash buckets of each Wide&Deep category cross.")
    use_trigger: bool = option(False, "wide_deep / deepfm only: add the trigger's ids (and, for W&D, the "
                                  "target x trigger category cross); the other backbones ignore it.")
    activation: str = option("relu", "Activation of the hidden layers of the MLPs (a Keras name).")
    intent_units: List[int] = option([64], "Hidden units of the intent MLP of dihn / dian.")
    din_att_activation: str = option("sigmoid", "Activation of the hidden layers of the DIN attention unit "
                                           "(din): a Keras name, or prelu / dice (the DIN paper's; "
                                           "one PReLU / Dice layer per hidden layer).")
    din_wide: str = option("", "din only: '' (none) | linear (add first-order weights of the user and "
                               "target ids to the logit, as W&D / DeepFM have) | wide (add the whole "
                               "W&D wide head: those weights + the hashed target x history category "
                               "cross).")
    # -- reproducibility / performance --------------------------------------------------------
    seed: int = option(0, "Seed of weights init, dropout, shuffling (tf_keras.utils.set_random_seed).")
    deterministic: bool = option(False, "Deterministic input order (sequential shards, no parallel "
                                    "non-determinism) and tf op determinism (slower).")
    distribution: str = option("none", "none | mirrored (all local GPUs) | multi_worker_mirrored "
                                   "(TF_CONFIG) | parameter_server (TF_CONFIG).")
    jit_compile: bool = option(False, "XLA-compile the train step.")
    mixed_precision: str = option("none", "none | mixed_float16 (GPU) | mixed_bfloat16.")
    steps_per_execution: int = option(1, "Train steps run per tf.function call.")
    train_input: str = option("auto", "How the training split is fed: stream (read GZIP records, shuffle "
                                  "buffer, parse after batching, every epoch) | ids (stream the id "
                                  "shards of `python -m pipelines.id_shards`: the same records with "
                                  "the ids looked up, a third of the input CPU) | cache (stream, but "
                                  "keep the serialized records in memory from epoch 2: no reading "
                                  "or GZIP; RAM ~ the uncompressed split) | memory (parse and look "
                                  "up the split once, keep its columns in memory, gather every batch "
                                  "from a fresh permutation of all rows each epoch: no input work "
                                  "left beside the step; RAM = rows x parsed values x 4-8 bytes) | "
                                  "auto (memory when the parsed columns are estimated at most "
                                  "--in_memory_max_mb and a quarter of the available RAM, the "
                                  "lookups run in the input and the strategy is none/mirrored; "
                                  "else ids when valid id shards exist, else stream). The log says "
                                  "what was chosen and why.")
    in_memory_max_mb: int = option(2048, "--train_input=auto holds the training split in memory up to "
                                     "this many MiB of parsed columns (0: auto always streams).")
    lookup_in_input: bool = option(True, "Run the string -> id lookups of the training batches in the "
                                     "tf.data pipeline (parallel to the train step, as preprocessing "
                                     "layers are meant to be used) instead of inside the step; "
                                     "ignored with --distribution=parameter_server.")
    # -- checkpoints / stopping / logging -------------------------------------------------------
    backup_every_steps: int = option(200, "BackupAndRestore save frequency in steps (a killed run "
                                      "resumes from the last one); 0 = at every epoch end only.")
    early_stopping_patience: int = option(2, "Stop after this many epochs without a better val AUC; "
                                         "0 = no early stopping.")
    tb_update_freq: int = option(100, "TensorBoard: log train losses every N steps.")
    verbose: int = option(2, "Keras fit verbosity (0 silent, 1 progress bar, 2 one line per epoch).")
    overwrite: bool = option(False, "Delete MODEL_DIR first (otherwise a finished run is not retrained "
                                "and an unfinished one resumes).")
    # -- export ---------------------------------------------------------------------------------
    export_base: str = option("", "If set (with --model_name), export the serving graph to "
                              "EXPORT_BASE/MODEL_NAME/VERSION at the end (serving.export).")
    model_name: str = option("", "Name of the exported model (TF Serving MODEL_NAME).")

    # -------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = set(cls.field_names())
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def backbone_hparams(self) -> Dict[str, Any]:
        """Keyword arguments of ``ctrcore.backbones.build_backbone``."""
        return {"emb_dim": self.emb_dim, "mlp_units": list(self.mlp_units), "dropout": self.dropout,
                "heads": self.num_heads, "l2_emb": self.l2_emb, "l2_dense": self.l2_dense,
                "cm_dim": self.cm_dim, "cm_units": list(self.cm_units), "batch_norm": self.batch_norm,
                "din_units": list(self.din_units), "din_softmax": self.din_softmax,
                "wide_buckets": self.wide_buckets, "use_trigger": self.use_trigger,
                "activation": self.activation, "intent_units": list(self.intent_units),
                "din_att_activation": self.din_att_activation, "din_wide": self.din_wide}

    def validate(self, check_data: bool = True) -> None:
        """Raise :class:`ConfigError` naming every problem found (generic checks only)."""
        errs: List[str] = []
        if not self.data_dir:
            errs.append("--data_dir is required")
        if not self.model_dir:
            errs.append("--model_dir is required")
        if self.epochs <= 0:
            errs.append(f"--epochs must be > 0, got {self.epochs}")
        if self.train_steps is not None and self.train_steps <= 0:
            errs.append(f"--train_steps must be > 0 when set, got {self.train_steps}")
        if self.steps_per_epoch < 0:
            errs.append(f"--steps_per_epoch must be >= 0, got {self.steps_per_epoch}")
        for name in ("batch_size", "eval_batch_size", "shuffle_buffer", "steps_per_execution",
                     "emb_dim", "num_heads", "cm_dim", "wide_buckets"):
            if getattr(self, name) <= 0:
                errs.append(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            errs.append(f"--optimizer={self.optimizer!r} unknown; choose one of {OPTIMIZERS}")
        if self.optimizer == "composite" and self.clipnorm:
            errs.append("--clipnorm is not supported with --optimizer=composite")
        if self.learning_rate <= 0 or self.dense_learning_rate <= 0:
            errs.append("--learning_rate and --dense_learning_rate must be > 0")
        if self.lr_decay_steps < 0 or self.lr_decay_rate < 0:
            errs.append("--lr_decay_steps and --lr_decay_rate must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            errs.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.l2_emb < 0 or self.l2_dense < 0:
            errs.append("--l2_emb and --l2_dense must be >= 0")
        for name in ("mlp_units", "din_units", "intent_units"):
            units = getattr(self, name)
            if not units or any(int(u) <= 0 for u in units):
                errs.append(f"--{name} must be a non-empty list of positive ints, got {units}")
        if self.din_wide not in DIN_WIDE:
            errs.append(f"--din_wide={self.din_wide!r} unknown; choose one of {DIN_WIDE}")
        if any(int(u) <= 0 for u in self.cm_units):
            errs.append(f"--cm_units must be a list of positive ints (may be empty), got {self.cm_units}")
        if self.distribution not in DISTRIBUTIONS:
            errs.append(f"--distribution={self.distribution!r} unknown; choose one of {DISTRIBUTIONS}")
        if self.distribution in ("multi_worker_mirrored", "parameter_server") and not os.environ.get("TF_CONFIG"):
            errs.append(f"--distribution={self.distribution} needs the TF_CONFIG environment variable")
        if self.mixed_precision == "mixed_float16" and self.optimizer == "composite":
            errs.append("--mixed_precision=mixed_float16 needs loss scaling, which CompositeOptimizer "
                        "does not support: use --optimizer=adagrad|adam or --mixed_precision=mixed_bfloat16")
        if self.mixed_precision not in MIXED_PRECISION:
            errs.append(f"--mixed_precision={self.mixed_precision!r} unknown; choose one of {MIXED_PRECISION}")
        if self.train_input not in TRAIN_INPUTS:
            errs.append(f"--train_input={self.train_input!r} unknown; choose one of {TRAIN_INPUTS}")
        if self.train_input in ("memory", "cache", "ids") and self.distribution == "parameter_server":
            errs.append(f"--train_input={self.train_input} is not supported with "
                        "--distribution=parameter_server (each worker streams its own shard there)")
        if self.in_memory_max_mb < 0:
            errs.append("--in_memory_max_mb must be >= 0")
        if self.backup_every_steps < 0 or self.early_stopping_patience < 0:
            errs.append("--backup_every_steps and --early_stopping_patience must be >= 0")
        if bool(self.export_base) != bool(self.model_name):
            errs.append("--export_base and --model_name must be given together")
        if len({self.train_split, self.valid_split}) != 2:
            errs.append("--train_split and --valid_split must differ")
        if check_data and self.data_dir:
            errs.extend(check_data_dir(self.data_dir, (self.train_split, self.valid_split, self.eval_split)))
        if errs:
            raise ConfigError("invalid training configuration:\n  - " + "\n  - ".join(errs))


def check_data_dir(data_dir: str, splits: Sequence[str]) -> List[str]:
    """Problems with a preprocessed data directory (missing spec / stats / shards)."""
    errs = []
    if "://" in data_dir:  # gs://, hdfs://: checked through tf.io.gfile (imports TensorFlow)
        import tensorflow as tf

        exists, glob = tf.io.gfile.exists, tf.io.gfile.glob
    else:
        import glob as _glob

        exists, glob = os.path.exists, _glob.glob
    if not exists(data_dir):
        return [f"--data_dir={data_dir} does not exist (run pipelines.preprocess first)"]
    for fname in ("feature_spec.json", "stats.json"):
        p = os.path.join(data_dir, fname)
        if not exists(p):
            errs.append(f"{p} missing: --data_dir must be the output of pipelines.preprocess")
        elif "://" not in p:
            try:
                with open(p) as fh:
                    json.load(fh)
            except ValueError as e:
                errs.append(f"{p} is not valid JSON: {e}")
    for split in dict.fromkeys(splits):
        if not glob(os.path.join(data_dir, f"{split}-*.tfrecord.gz")):
            errs.append(f"no {split}-*.tfrecord.gz shards under {data_dir}")
    return errs
