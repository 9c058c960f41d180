"""The single source of truth for the data contract.

Pure Python (no TensorFlow import): the Beam job, the tf.data parser, the trainer and the
serving signature all read the feature spec built here.

Two layers:

1. The *canonical exposure log*: one row per shown item (or one history-only click). Every
   source (synthetic, mind, amazon_beauty, generic CSV/Parquet/JSONL + mapping) reshapes its
   input into rows with the fields of :data:`CANONICAL_FIELDS`.
2. The *example feature spec* (``feature_spec.json``): one ``tf.train.Example`` per exposed
   item = target + its in-page context + the user's behaviour sequences. Each feature has a
   ``role``:

   * ``serving``   - available at request time; the only inputs of the exported model.
   * ``train``     - training-only (labels, context items, page statistics). Never in ``call``.
   * ``meta``      - evaluation keys (user, page, history length, timestamp); not model inputs.

All id features are stored as strings (ints in a log are written as their decimal string), so
the served model takes raw ids and looks them up in-graph.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

SPEC_VERSION = 1
PAD = ""  # padding value of every string id sequence
LABEL_PAD = -1  # padding value of context labels (mask = label >= 0)
PAD_ID = 0  # the id of PAD after the in-graph vocabulary lookup (ctrcore.layers)
OOV_ID = 1  # the id of any string outside the vocabulary

# ---------------------------------------------------------------------------------------------
# Canonical exposure log
# ---------------------------------------------------------------------------------------------
# name -> (python type, required)
CANONICAL_FIELDS: Dict[str, tuple] = {
    "page_id": (str, True),          # one request / page / impression
    "user_id": (str, True),
    "item_id": (str, True),
    "clicked": (int, True),          # 0/1
    "timestamp": (int, True),        # seconds (any monotone integer clock)
    "position": (int, False),        # rank on the page, optional
    "trigger_item_id": (str, False),  # item that opened the page (CCN); "" if none
    "category_id": (str, False),
    "seller_id": (str, False),
    "is_history": (int, False),      # 1 = a click known only as user history (not an exposure)
}
# user profile columns are free-form: "user_<name>" string columns declared by the source.
USER_PROFILE_PREFIX = "user_"

# ---------------------------------------------------------------------------------------------
# Example feature spec
# ---------------------------------------------------------------------------------------------
ITEM_SIDE = ("item_id", "category_id", "seller_id")  # the "streamlined" item features (CCN 2.3)


@dataclasses.dataclass
class FeatureDef:
    name: str
    dtype: str  # "string" | "int64" | "float32"
    shape: List[int]  # [] scalar, [n] fixed-length padded list
    role: str  # "serving" | "train" | "meta"
    vocab: Optional[str] = None  # vocabulary name (files under vocab/)
    default: object = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("name")
        return d

    # -- views (not part of feature_spec.json) ----------------------------------------------
    @property
    def length(self) -> Optional[int]:
        """Number of values of a fixed-length list feature (``shape == [n]``); ``None`` for a
        scalar (``shape == []``)."""
        if not self.shape:
            return None
        if len(self.shape) != 1:
            raise ValueError(f"feature {self.name!r}: shape {self.shape} (only [] and [n])")
        return self.shape[0]

    @property
    def pad_value(self):
        """The value that pads a list feature to its length and that a parser uses for a
        missing feature: ``default``, else ``PAD`` for strings and 0 for numbers."""
        if self.default is not None:
            return self.default
        return PAD if self.dtype == "string" else 0


@dataclasses.dataclass
class SpecConfig:
    short_len: int = 20
    long_len: int = 100
    max_context: int = 20
    user_profile: Sequence[str] = ()  # names without the "user_" prefix, e.g. ("gender", "age")
    item_side: Sequence[str] = ITEM_SIDE


# How the preprocessing job writes each feature into a serialized example (a property of the
# encoding, not of feature_spec.json): PAGE_SCOPE features are the same for every example of a
# page (user, behaviour sequences, page statistics, page metadata) and are encoded once per page;
# EXAMPLE_SCOPE features are each example's own (target, trigger, label, in-page context);
# PROFILE_SCOPE features are the user profile values of each example's own row. A serialized
# example holds its features in ENCODING_SCOPES order, spec order within a scope
# (:func:`encoding_layout`): parsers do not care, but the bytes (and their fingerprints) do.
PAGE_SCOPE, EXAMPLE_SCOPE, PROFILE_SCOPE = "page", "example", "profile"
ENCODING_SCOPES = (PAGE_SCOPE, EXAMPLE_SCOPE, PROFILE_SCOPE)


def scoped_feature_defs(cfg: SpecConfig) -> List[Tuple[str, FeatureDef]]:
    """``(encoding scope, feature)`` of every example feature, in spec order."""
    f: List[Tuple[str, FeatureDef]] = []
    s = lambda name, vocab, role="serving": FeatureDef(name, "string", [], role, vocab, PAD)
    # user
    f.append((PAGE_SCOPE, s("user_id", "user_id")))
    for p in cfg.user_profile:
        f.append((PROFILE_SCOPE, s(USER_PROFILE_PREFIX + p, USER_PROFILE_PREFIX + p)))
    # target and trigger item
    for side in cfg.item_side:
        f.append((EXAMPLE_SCOPE, s(side, side)))
    for side in cfg.item_side:
        f.append((EXAMPLE_SCOPE, s("trigger_" + side, side)))
    # behaviour sequences (most recent first, padded with PAD at the end)
    for seq, n in (("short", cfg.short_len), ("long", cfg.long_len)):
        for side in cfg.item_side:
            f.append((PAGE_SCOPE, FeatureDef(f"{seq}_{side}s", "string", [n], "serving", side,
                                             PAD)))
    # training-only: label and in-page context
    f.append((EXAMPLE_SCOPE, FeatureDef("label", "int64", [], "train", None, 0)))
    for side in cfg.item_side:
        f.append((EXAMPLE_SCOPE, FeatureDef(f"context_{side}s", "string", [cfg.max_context],
                                            "train", side, PAD)))
    f.append((EXAMPLE_SCOPE, FeatureDef("context_labels", "int64", [cfg.max_context], "train",
                                        None, LABEL_PAD)))
    f.append((PAGE_SCOPE, FeatureDef("page_num_clicked", "int64", [], "train", None, 0)))
    f.append((PAGE_SCOPE, FeatureDef("page_num_unclicked", "int64", [], "train", None, 0)))
    # evaluation metadata
    f.append((PAGE_SCOPE, FeatureDef("page_id", "string", [], "meta", None, PAD)))
    f.append((PAGE_SCOPE, FeatureDef("timestamp", "int64", [], "meta", None, 0)))
    f.append((PAGE_SCOPE, FeatureDef("history_length", "int64", [], "meta", None, 0)))
    return f


def build_feature_defs(cfg: SpecConfig) -> List[FeatureDef]:
    """The list of example features for a given configuration (order is stable)."""
    return [fd for _, fd in scoped_feature_defs(cfg)]


def encoding_layout(cfg: SpecConfig) -> List[Tuple[str, List[str]]]:
    """``[(scope, [feature names])]`` for every scope of :data:`ENCODING_SCOPES` in order, the
    names in spec order: the order of the features in a serialized example."""
    scoped = scoped_feature_defs(cfg)
    return [(scope, [fd.name for sc, fd in scoped if sc == scope]) for scope in ENCODING_SCOPES]


@dataclasses.dataclass
class FeatureSpec:
    """Parsed ``feature_spec.json``. ``root`` is the directory holding it (vocab paths are relative)."""

    features: Dict[str, FeatureDef]
    vocabularies: Dict[str, str]  # vocab name -> relative path of a one-id-per-line file
    config: SpecConfig
    label: str = "label"
    root: str = ""
    version: int = SPEC_VERSION

    # -- views -------------------------------------------------------------------------------
    def by_role(self, *roles: str) -> Dict[str, FeatureDef]:
        return {k: v for k, v in self.features.items() if v.role in roles}

    @property
    def serving_features(self) -> Dict[str, FeatureDef]:
        return self.by_role("serving")

    def encoding_layout(self) -> List[Tuple[str, List[str]]]:
        """:func:`encoding_layout` of this spec's configuration; raises ``ValueError`` when the
        spec's features are not the ones its configuration defines."""
        layout = encoding_layout(self.config)
        names = [n for _, ns in layout for n in ns]
        if sorted(names) != sorted(self.features):
            raise ValueError(f"feature spec out of sync with its config: "
                             f"{sorted(set(names) ^ set(self.features))}")
        return layout

    def vocab_path(self, vocab: str) -> str:
        return os.path.join(self.root, self.vocabularies[vocab])

    def read_vocab(self, vocab: str) -> List[str]:
        import tensorflow as tf  # gfile so gs:// / hdfs:// work; imported lazily

        with tf.io.gfile.GFile(self.vocab_path(vocab)) as fh:
            return [line.rstrip("\n") for line in fh if line.rstrip("\n")]

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "version": self.version,
            "label": self.label,
            "config": {
                "short_len": self.config.short_len,
                "long_len": self.config.long_len,
                "max_context": self.config.max_context,
                "user_profile": list(self.config.user_profile),
                "item_side": list(self.config.item_side),
            },
            "vocabularies": dict(self.vocabularies),
            "features": {k: v.to_json() for k, v in self.features.items()},
        }

    @classmethod
    def from_json(cls, d: dict, root: str = "") -> "FeatureSpec":
        if d.get("version") != SPEC_VERSION:
            raise ValueError(f"feature spec version {d.get('version')!r} != supported {SPEC_VERSION}")
        cfg = SpecConfig(**d["config"])
        feats = {k: FeatureDef(name=k, **v) for k, v in d["features"].items()}
        return cls(features=feats, vocabularies=d["vocabularies"], config=cfg,
                   label=d.get("label", "label"), root=root)

    @classmethod
    def create(cls, cfg: SpecConfig, root: str = "") -> "FeatureSpec":
        feats = {fd.name: fd for fd in build_feature_defs(cfg)}
        vocabs = sorted({fd.vocab for fd in feats.values() if fd.vocab})
        return cls(features=feats, vocabularies={v: f"vocab/{v}.txt" for v in vocabs},
                   config=cfg, root=root)


SPEC_FILENAME = "feature_spec.json"
STATS_FILENAME = "stats.json"


def save_spec(spec: FeatureSpec, out_dir: str) -> str:
    import tensorflow as tf

    path = os.path.join(out_dir, SPEC_FILENAME)
    with tf.io.gfile.GFile(path, "w") as fh:
        json.dump(spec.to_json(), fh, indent=1, sort_keys=True)
    return path


def load_spec(data_dir: str) -> FeatureSpec:
    """Load ``DATA_DIR/feature_spec.json``; vocab paths resolve relative to DATA_DIR."""
    path = os.path.join(data_dir, SPEC_FILENAME)
    try:
        with open(path) as fh:
            d = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: run `python -m pipelines.preprocess --output_dir={data_dir}` first")
    return FeatureSpec.from_json(d, root=data_dir)


def load_stats(data_dir: str) -> dict:
    with open(os.path.join(data_dir, STATS_FILENAME)) as fh:
        return json.load(fh)
