"""Registry of ``--model`` names -> (backbone, auxiliary losses), and the model factory.

========================= ============= ======================== ========================
``--model``               backbone      aux losses               paper row
========================= ============= ======================== ========================
``wide_deep``             wide_deep     -                        Wide&Deep
``deepfm``                deepfm        -                        DeepFM (AQCL Table 3)
``din``                   din           -                        DIN
``sim``                   sim           -                        SIM
``dihn``                  dihn          intent (weight 0.8)      DIHN
``dian``                  dian          intent (weight 0.1)      DIAN
``tan_base``              tan_base      -                        TAN (w/o CM & TSI)
``tan``                   tan           -                        TAN
``ccn_notsi``             tan_notsi     CCN (L_S- and L_S+)      CCN (w/o TSI)
``ccn_no_attraction``     tan           CCN, L_S- only           CCN (w/o L_S+)
``ccn_no_repulsion``      tan           CCN, L_S+ only           CCN (w/o L_S-)
``ccn``                   tan           CCN (L_S- and L_S+)      CCN
========================= ============= ======================== ========================

``--aux_losses`` (a comma list of the losses registered with :mod:`ctrcore.auxloss`, see
``--helpfull``) adds losses to any model, e.g. ``--model=din --aux_losses=aqcl``.
A run is identified by its *run key*: the model name plus ``+loss`` for every extra aux loss
(``din+aqcl``), which is what ``ccn.report`` groups by.

Every loss (its flags, checks, backbone requirements and layer) is a plug-in of
:mod:`ctrcore.auxloss`, registered by its own package (``ccn/aux_losses.py``,
``aqcl/aux_losses.py``, imported below); this module only combines them with the model table.
The loss layers are imported when a model is built, so validating flags needs no TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import ccn.aux_losses  # noqa: F401  (registers the ccn package's losses)
import aqcl.aux_losses  # noqa: F401  (registers the aqcl package's losses)
from ctrcore import auxloss, capabilities
from ctrcore.config import ConfigError, TrainConfig


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """A ``--model``: its backbone, the aux losses it always has, and ``aux_options``
    (``{loss name: {config field: value}}``: fixed options of those losses, e.g. an ablation)."""
    name: str
    backbone: str
    aux: Tuple[str, ...]
    display: str
    description: str
    aux_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


MODELS: Dict[str, ModelDef] = {m.name: m for m in [
    ModelDef("wide_deep", "wide_deep", (), "Wide&Deep", "Wide & Deep (Cheng et al. 2016)"),
    ModelDef("deepfm", "deepfm", (), "DeepFM", "DeepFM (Guo et al. 2017)"),
    ModelDef("din", "din", (), "DIN", "Deep Interest Network (target attention over the short sequence)"),
    ModelDef("sim", "sim", (), "SIM", "SIM: DIN + hard search (same category) over the long sequence"),
    ModelDef("dihn", "dihn", ("intent",), "DIHN", "Deep Interest Highlight Network (Shen et al. 2022): user "
             "intent network, trigger/target fusion, hybrid hard+soft interest extraction"),
    ModelDef("dian", "dian", ("intent",), "DIAN", "Deep Intention-Aware Network (Xia et al. 2023): intent net "
             "mixing a trigger-aware and a trigger-free CTR estimate"),
    ModelDef("tan_base", "tan_base", (), "TAN (w/o CM & TSI)", "TAN without the collaborative module "
             "and without trigger-related sequence interaction (SIM + trigger item features)"),
    ModelDef("tan", "tan", (), "TAN", "Trigger-aware network, CCN's backbone without contrastive learning"),
    ModelDef("ccn_notsi", "tan_notsi", ("ccn",), "CCN (w/o TSI)", "CCN without trigger-related sequence interaction"),
    ModelDef("ccn_no_attraction", "tan", ("ccn",), "CCN (w/o L_S+)", "CCN without the attraction loss",
             aux_options={"ccn": {"use_attraction": False}}),
    ModelDef("ccn_no_repulsion", "tan", ("ccn",), "CCN (w/o L_S-)", "CCN without the repulsion loss",
             aux_options={"ccn": {"use_repulsion": False}}),
    ModelDef("ccn", "tan", ("ccn",), "CCN", "Collaborative Contrastive Network: TAN + L_S- + L_S+ (Eq. 12)"),
]}


def default_loss_params() -> Dict[str, Any]:
    """``{flag: default}`` of every registered loss's hyper-parameters (``loss_params``)."""
    return auxloss.default_params()


def parse_aux_list(value) -> List[str]:
    """``"ccn, aqcl"`` / ``["ccn","aqcl"]`` -> ``["ccn", "aqcl"]`` (order kept, blanks dropped)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip().lower() for v in value if v and v.strip()]


def run_key(model: str, aux_losses: Sequence[str] = ()) -> str:
    """The identity of a run configuration: ``model`` + ``+aux`` for every extra aux loss."""
    return "+".join([model] + sorted(parse_aux_list(aux_losses)))


def display_name(key: str) -> str:
    """Human-readable name of a run key (``din+aqcl`` -> ``DIN+AQCL``)."""
    parts = key.split("+")
    base = MODELS[parts[0]].display if parts[0] in MODELS else parts[0]
    return "+".join([base] + [p.upper() for p in parts[1:]])


def all_aux(model: str, aux_losses: Sequence[str]) -> List[str]:
    return list(MODELS[model].aux) + [a for a in parse_aux_list(aux_losses)]


def _models_with(capability: str) -> List[str]:
    return [m.name for m in MODELS.values() if capability in capabilities.provided_by(m.backbone)]


def validate(cfg: TrainConfig, loss_params: Optional[Dict[str, Any]] = None, spec=None,
             stats: Optional[dict] = None) -> None:
    """Model-specific checks; raises :class:`ConfigError` listing every problem.

    ``spec`` (a :class:`ctrcore.schema.FeatureSpec`) and ``stats`` (stats.json) enable the data
    checks (the features and statistics the losses need). The loss checks are the registered
    losses' own (:func:`ctrcore.auxloss.validate`).
    """
    errs: List[str] = []
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown --model={cfg.model!r}; choose one of {sorted(MODELS)}")
    mdef = MODELS[cfg.model]
    extra = parse_aux_list(cfg.aux_losses)
    for a in extra:
        if a not in auxloss.names():
            errs.append(f"unknown aux loss {a!r} in --aux_losses; choose from {auxloss.names()}")
    losses = list(mdef.aux) + extra
    dup = sorted({a for a in losses if losses.count(a) > 1})
    if dup:
        errs.append(f"aux loss(es) {dup} given twice (--model={cfg.model} already includes {list(mdef.aux)})")
    errs += auxloss.validate([a for a in losses if a in auxloss.names()], loss_params,
                             auxloss.AuxContext(mdef.backbone, spec, stats), mdef.aux_options,
                             where=f"--model={cfg.model} uses {mdef.backbone!r}",
                             hint=lambda cap: f"models with it: {', '.join(_models_with(cap))}")
    if errs:
        raise ConfigError(f"invalid --model={cfg.model} / --aux_losses configuration:\n  - " + "\n  - ".join(errs))


def make_aux_loss(name: str, mdef: ModelDef, lp: Optional[Dict[str, Any]], stats: dict, spec=None):
    """The layer of the registered aux loss ``name`` as part of the model ``mdef``."""
    return auxloss.build([name], lp, auxloss.AuxContext(mdef.backbone, spec, stats), mdef.aux_options)[0]


def build_model(cfg: TrainConfig, loss_params: Optional[Dict[str, Any]], spec, stats: dict):
    """Build the (uncompiled) ``ctrcore.model.CTRModel`` of a configuration."""
    from ctrcore.backbones import build_backbone
    from ctrcore.model import CTRModel

    mdef = MODELS[cfg.model]
    backbone = build_backbone(mdef.backbone, spec, **cfg.backbone_hparams())
    aux = auxloss.build(all_aux(cfg.model, cfg.aux_losses), loss_params,
                        auxloss.AuxContext(mdef.backbone, spec, stats), mdef.aux_options)
    return CTRModel(spec, backbone, aux_losses=aux)


def model_factory(cfg: TrainConfig, loss_params: Optional[Dict[str, Any]] = None):
    """``fn(spec, stats) -> CTRModel`` for :func:`ctrcore.trainer.train`."""
    return lambda spec, stats: build_model(cfg, loss_params, spec, stats)
