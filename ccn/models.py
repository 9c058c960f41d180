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

``--aux_losses`` (comma list of ``ccn``, ``aqcl``, ``icl`` and the AQCL-paper regularisation
baselines ``dropoutnet``, ``deepmcp``, ``dmr`` of ``aqcl.baselines``) adds losses to any model,
e.g. ``--model=din --aux_losses=aqcl`` (AQCL on DIN), ``--model=ccn --aux_losses=aqcl``
(CCN+AQCL), ``--model=din --aux_losses=dmr`` (the DMR row of AQCL Table 2).
A run is identified by its *run key*: the model name plus ``+loss`` for every extra aux loss
(``din+aqcl``), which is what ``ccn.report`` groups by.

The loss classes are imported lazily (``ccn.aux.CCNLoss``, ``aqcl.aux.AQCLLoss`` /
``aqcl.aux.ICLLoss``) so validating flags needs neither TensorFlow nor the loss modules, and a
missing module is reported by name.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ctrcore.config import ConfigError, TrainConfig


@dataclasses.dataclass(frozen=True)
class ModelDef:
    name: str
    backbone: str
    aux: Tuple[str, ...]
    display: str
    description: str
    ccn_attraction: bool = True
    ccn_repulsion: bool = True


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
             ccn_attraction=False),
    ModelDef("ccn_no_repulsion", "tan", ("ccn",), "CCN (w/o L_S-)", "CCN without the repulsion loss",
             ccn_repulsion=False),
    ModelDef("ccn", "tan", ("ccn",), "CCN", "Collaborative Contrastive Network: TAN + L_S- + L_S+ (Eq. 12)"),
]}

AUX_LOSSES = ("ccn", "aqcl", "icl", "dropoutnet", "deepmcp", "dmr", "intent")
#: backbones with the collaborative module (needed by the CCN loss: s_target / collaborative_degree)
COLLABORATIVE_BACKBONES = frozenset({"tan_notsi", "tan"})
#: backbones with an intent network (needed by the intent loss: outputs 'intent_logit')
INTENT_BACKBONES = frozenset({"dihn", "dian"})
#: where each aux loss lives (module, class)
AUX_CLASSES = {"ccn": ("ccn.aux", "CCNLoss"), "aqcl": ("aqcl.aux", "AQCLLoss"), "icl": ("aqcl.aux", "ICLLoss"),
               "dropoutnet": ("aqcl.baselines", "DropoutNetLoss"),
               "deepmcp": ("aqcl.baselines", "DeepMCPLoss"), "dmr": ("aqcl.baselines", "DMRLoss"),
               "intent": ("ccn.baselines", "IntentLoss")}

#: loss hyper-parameters: flag name -> (default, help). ccn.train defines one flag per entry.
LOSS_PARAMS: Dict[str, Tuple[Any, str]] = {
    "ccn_lambda": (0.1, "CCN: weight lambda of the contrastive terms (Eq. 12)."),
    "ccn_tau": (0.5, "CCN: temperature tau of the repulsion loss (paper: 0.5)."),
    "ccn_xi": (0.8, "CCN: temperature xi of the attraction loss (paper: 0.8)."),
    "ccn_attraction_form": ("vector_cosine", "CCN: reading of Eq. 7's cos: vector_cosine (cosine "
                            "similarity of e^{s/xi} vectors) | angle (periodic cos of the angle "
                            "differences e^{s/xi}, docs/method.md 1.4)."),
    "ccn_attraction_scale": ("unit", "CCN: exponent of Eq. 7 on the unit direction of s (unit) or "
                             "on sqrt(D) times it (rms: unit-RMS components), docs/method.md 1.4."),
    "aqcl_weight": (0.05, "AQCL/ICL: weight w of the auxiliary task (paper searches {0.01, 0.05, 0.1})."),
    "aqcl_w1": (1.0, "AQCL: w1 of alpha = R(L) = exp(-w1 * (L / L_bar)^w2) (Eq. 6)."),
    "aqcl_w2": (1.0, "AQCL: w2 of alpha = R(L) (Eq. 6)."),
    "aqcl_const_alpha": (None, "AQCL: use this constant alpha instead of R(L) (ablation)."),
    "aqcl_codebook_size": (128, "AQCL: codebook capacity T (paper: 128)."),
    "aqcl_top_k": (5, "AQCL: K nearest codewords (paper: 5)."),
    "aqcl_z_dim": (64, "AQCL/ICL: dimension of the projection z of the latent h."),
    "aqcl_tau": (0.1, "AQCL/ICL: temperatures tau1 = tau2 = tau3 (paper: 0.1)."),
    "aqcl_mask_rate": (0.2, "AQCL/ICL augmentation: fraction of history items masked."),
    "aqcl_emb_dropout": (0.1, "AQCL/ICL augmentation: embedding dropout of the second view."),
    "aqcl_view_rows": (None, "AQCL/ICL: compute the second view and the contrastive term on the "
                             "first N examples of each (shuffled) batch only (default: all, as in "
                             "the paper); the codebook loss keeps the whole batch. Cuts the second "
                             "view's cost to N/B (benchmarks/RESULTS.md section 2) and, measured "
                             "on Beauty, most of AQCL's gain (docs/method.md 2.8)."),
    "dropoutnet_rate": (0.5, "DropoutNet baseline: probability an example loses its user or item id."),
    "deepmcp_match_weight": (0.1, "DeepMCP baseline: weight of the matching subnet loss."),
    "deepmcp_corr_weight": (0.1, "DeepMCP baseline: weight of the correlation subnet loss."),
    "dmr_weight": (0.1, "DMR baseline: weight of the auxiliary match loss."),
    "intent_weight": (None, "DIHN/DIAN: weight of the intent auxiliary loss (default: 0.8 for DIHN, "
                            "its Eq. 13; 0.1 for DIAN)."),
}


def default_loss_params() -> Dict[str, Any]:
    return {k: v[0] for k, v in LOSS_PARAMS.items()}


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


def validate(cfg: TrainConfig, loss_params: Optional[Dict[str, Any]] = None, spec=None,
             stats: Optional[dict] = None) -> None:
    """Model-specific checks; raises :class:`ConfigError` listing every problem.

    ``spec`` (a :class:`ctrcore.schema.FeatureSpec`) and ``stats`` (stats.json) enable the data
    checks (context features for CCN, statistics the losses need).
    """
    errs: List[str] = []
    lp = dict(default_loss_params(), **(loss_params or {}))
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown --model={cfg.model!r}; choose one of {sorted(MODELS)}")
    mdef = MODELS[cfg.model]
    extra = parse_aux_list(cfg.aux_losses)
    for a in extra:
        if a not in AUX_LOSSES:
            errs.append(f"unknown aux loss {a!r} in --aux_losses; choose from {AUX_LOSSES}")
    losses = list(mdef.aux) + extra
    dup = sorted({a for a in losses if losses.count(a) > 1})
    if dup:
        errs.append(f"aux loss(es) {dup} given twice (--model={cfg.model} already includes {list(mdef.aux)})")
    if "aqcl" in losses and "icl" in losses:
        errs.append("--aux_losses: aqcl already contains the instance-level term; do not combine with icl")
    if "ccn" in losses:
        if mdef.backbone not in COLLABORATIVE_BACKBONES:
            errs.append(f"the CCN loss needs a backbone with the collaborative module "
                        f"({sorted(COLLABORATIVE_BACKBONES)}); --model={cfg.model} uses "
                        f"{mdef.backbone!r}. Use --model=ccn (or ccn_notsi) instead")
        if lp["ccn_lambda"] < 0 or lp["ccn_tau"] <= 0 or lp["ccn_xi"] <= 0:
            errs.append("--ccn_lambda must be >= 0 and --ccn_tau, --ccn_xi > 0")
        if lp.get("ccn_attraction_form", "vector_cosine") not in ("vector_cosine", "angle"):
            errs.append(f"--ccn_attraction_form={lp.get('ccn_attraction_form')!r}: "
                        "choose vector_cosine or angle")
        if lp.get("ccn_attraction_scale", "unit") not in ("unit", "rms"):
            errs.append(f"--ccn_attraction_scale={lp.get('ccn_attraction_scale')!r}: choose unit or rms")
        if spec is not None:
            ctx = spec.features.get("context_item_ids")
            lab = spec.features.get("context_labels")
            if ctx is None or lab is None or not ctx.shape or ctx.shape[0] <= 0:
                errs.append(f"the CCN loss needs in-page context features (context_item_ids, "
                            f"context_labels with max_context > 0); {spec.root or 'the data'} has none")
        if stats is not None and "p_s_plus" not in stats:
            errs.append("the CCN loss needs p_s_plus in stats.json (Eq. 9)")
    if "intent" in losses:
        if mdef.backbone not in INTENT_BACKBONES:
            errs.append(f"the intent loss needs a backbone with an intent network "
                        f"({sorted(INTENT_BACKBONES)}); --model={cfg.model} uses {mdef.backbone!r}")
        if lp.get("intent_weight") is not None and lp["intent_weight"] < 0:
            errs.append("--intent_weight must be >= 0")
        if spec is not None:
            lab = spec.features.get("context_labels")
            if lab is None or not lab.shape or lab.shape[0] <= 0:
                errs.append(f"the intent label needs the in-page context features (context_labels, "
                            f"context categories); {spec.root or 'the data'} has none")
    if "aqcl" in losses or "icl" in losses:
        if lp["aqcl_weight"] < 0 or lp["aqcl_tau"] <= 0 or lp["aqcl_z_dim"] <= 0:
            errs.append("--aqcl_weight must be >= 0, --aqcl_tau and --aqcl_z_dim > 0")
        if not 0.0 <= lp["aqcl_mask_rate"] < 1.0 or not 0.0 <= lp["aqcl_emb_dropout"] < 1.0:
            errs.append("--aqcl_mask_rate and --aqcl_emb_dropout must be in [0, 1)")
        vr = lp.get("aqcl_view_rows")
        if vr is not None and (vr != int(vr) or vr < 2):
            errs.append(f"--aqcl_view_rows must be an integer >= 2 (in-batch negatives), got {vr}")
    if "aqcl" in losses:
        if lp["aqcl_codebook_size"] <= 0 or not 0 < lp["aqcl_top_k"] <= lp["aqcl_codebook_size"]:
            errs.append("--aqcl_codebook_size must be > 0 and 0 < --aqcl_top_k <= --aqcl_codebook_size")
        if lp["aqcl_w1"] <= 0 or lp["aqcl_w2"] <= 0:
            errs.append("--aqcl_w1 and --aqcl_w2 must be > 0 (Eq. 6)")
        ca = lp["aqcl_const_alpha"]
        if ca is not None and not 0.0 <= ca <= 1.0:
            errs.append(f"--aqcl_const_alpha must be in [0, 1], got {ca}")
        if stats is not None and "mean_history_length" not in stats:
            errs.append("AQCL needs mean_history_length in stats.json (Eq. 6)")
    if errs:
        raise ConfigError(f"invalid --model={cfg.model} / --aux_losses configuration:\n  - " + "\n  - ".join(errs))


def _import_aux_class(name: str):
    mod_name, cls_name = AUX_CLASSES[name]
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ImportError(f"aux loss {name!r} needs module {mod_name} ({e})") from e
    try:
        return getattr(mod, cls_name)
    except AttributeError:
        raise ImportError(f"aux loss {name!r}: {mod_name} has no {cls_name}") from None


def required_modules(model: str, aux_losses: Sequence[str] = ()) -> List[str]:
    """Modules a configuration needs (for skip messages / diagnostics)."""
    mods = ["ctrcore.backbones", "ctrcore.model"]
    for a in all_aux(model, aux_losses):
        mods.append(AUX_CLASSES[a][0])
    return mods


def make_aux_loss(name: str, mdef: ModelDef, lp: Dict[str, Any], stats: dict):
    cls = _import_aux_class(name)
    if name == "ccn":
        return cls(stats, lambda_=lp["ccn_lambda"], tau=lp["ccn_tau"], xi=lp["ccn_xi"],
                   use_attraction=mdef.ccn_attraction, use_repulsion=mdef.ccn_repulsion,
                   attraction_form=lp.get("ccn_attraction_form", "vector_cosine"),
                   attraction_scale=lp.get("ccn_attraction_scale", "unit"))
    common = dict(weight=lp["aqcl_weight"], z_dim=lp["aqcl_z_dim"], mask_rate=lp["aqcl_mask_rate"],
                  emb_dropout=lp["aqcl_emb_dropout"],
                  view_rows=None if lp.get("aqcl_view_rows") is None else int(lp["aqcl_view_rows"]))
    tau = lp["aqcl_tau"]
    if name == "aqcl":
        return cls(stats, T=lp["aqcl_codebook_size"], K=lp["aqcl_top_k"], tau1=tau, tau2=tau, tau3=tau,
                   w1=lp["aqcl_w1"], w2=lp["aqcl_w2"], const_alpha=lp["aqcl_const_alpha"], **common)
    if name == "icl":
        return cls(stats, tau=tau, **common)
    if name == "dropoutnet":
        return cls(stats, rate=lp["dropoutnet_rate"])
    if name == "deepmcp":
        return cls(stats, match_weight=lp["deepmcp_match_weight"], corr_weight=lp["deepmcp_corr_weight"])
    if name == "dmr":
        return cls(stats, weight=lp["dmr_weight"])
    if name == "intent":
        from ccn.baselines import DEFAULT_INTENT_WEIGHT

        w = lp.get("intent_weight")
        return cls(stats, weight=DEFAULT_INTENT_WEIGHT.get(mdef.backbone, 0.1) if w is None else w)
    raise ConfigError(f"unknown aux loss {name!r}")


def build_model(cfg: TrainConfig, loss_params: Optional[Dict[str, Any]], spec, stats: dict):
    """Build the (uncompiled) ``ctrcore.model.CTRModel`` of a configuration."""
    from ctrcore.backbones import build_backbone
    from ctrcore.model import CTRModel

    lp = dict(default_loss_params(), **(loss_params or {}))
    mdef = MODELS[cfg.model]
    backbone = build_backbone(mdef.backbone, spec, **cfg.backbone_hparams())
    losses = all_aux(cfg.model, cfg.aux_losses)
    if "ccn" in losses and not getattr(backbone, "has_collaborative_module", False):
        raise ConfigError(f"backbone {mdef.backbone!r} has no collaborative module; the CCN loss needs one")
    aux = [make_aux_loss(a, mdef, lp, stats) for a in losses]
    return CTRModel(spec, backbone, aux_losses=aux)


def model_factory(cfg: TrainConfig, loss_params: Optional[Dict[str, Any]] = None):
    """``fn(spec, stats) -> CTRModel`` for :func:`ctrcore.trainer.train`."""
    return lambda spec, stats: build_model(cfg, loss_params, spec, stats)
