"""The plug-in contract of auxiliary losses: one config dataclass per loss, one registry.

A loss is described by an :class:`AuxLossSpec`:

* ``name``: its ``--aux_losses`` name (and the model table's);
* ``config``: an :class:`AuxLossConfig` dataclass. Its fields are the loss's hyper-parameters:
  each field becomes one command-line flag named ``config.flag_prefix`` + the field name (a
  trailing ``_`` dropped: ``lambda_`` -> ``--ccn_lambda``), typed by the field's annotation
  (``bool``, ``int``, ``float``, ``str``, or ``Optional`` of one with a ``None`` default) with the
  help text of ``field(metadata={"help": ...})``. A field with ``metadata={"flag": False}`` is not
  a flag but an option a model definition fixes (e.g. a CCN ablation switching a term off).
  ``config.validate(ctx)`` returns the list of problems of that loss (its own checks, held once);
* ``build(config, ctx)``: the loss layer (a ``ctrcore.model.AuxLoss``). Import the layer inside
  ``build`` so that flags parse and validate without TensorFlow;
* ``requires``: backbone capabilities (:mod:`ctrcore.capabilities`) the loss reads, checked
  against what the configured backbone provides;
* ``excludes``: ``{other loss name: why}`` for losses it must not be combined with.

A package registers its losses with :func:`register` (``ccn/aux_losses.py``,
``aqcl/aux_losses.py``); everything else (flags, ``train_config.json``'s ``loss_params``,
validation, building) goes through this module, so no other module names a loss.
``loss_params`` (the flat ``{flag name: value}`` dict the trainer records and ``evaluate``
rebuilds from) is the exchange format; :meth:`AuxLossConfig.from_params` reads a config from it,
missing keys taking the field's default.

Pure Python (no TensorFlow), so ``ccn.train`` defines and validates flags cheaply.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from ctrcore import capabilities
from ctrcore.config import ConfigError, option  # noqa: F401  (re-exported: the plug-ins use it)

__all__ = ["AuxContext", "AuxLossConfig", "AuxLossSpec", "Flag", "register", "unregister", "get",
           "names", "flags", "default_params", "make_config", "validate", "build"]

_FLAG_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclasses.dataclass(frozen=True)
class AuxContext:
    """What a loss may look at when it is validated or built.

    ``backbone``: the backbone's name; ``spec`` (a ``ctrcore.schema.FeatureSpec``) and ``stats``
    (stats.json) are ``None`` when flags are validated without the data."""
    backbone: str
    spec: Any = None
    stats: Optional[Mapping[str, Any]] = None


@dataclasses.dataclass(frozen=True)
class Flag:
    """One loss hyper-parameter flag: ``kind`` in bool | int | float | str."""
    name: str
    kind: str
    default: Any
    help: str


@dataclasses.dataclass(frozen=True)
class AuxLossConfig:
    """Base of the config dataclasses (see the module docstring). Subclasses set the class
    attribute ``flag_prefix`` and override :meth:`validate`; frozen, like the subclasses."""

    flag_prefix = ""  # a plain class attribute, not a field

    @classmethod
    def flag_name(cls, field_name: str) -> str:
        return cls.flag_prefix + field_name.rstrip("_")

    @classmethod
    def flag_fields(cls) -> List[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]

    @classmethod
    def flags(cls) -> List[Flag]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in cls.flag_fields():
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: a flag field needs a default")
            out.append(Flag(cls.flag_name(f.name), _flag_kind(cls, f.name, hints[f.name], f.default),
                            f.default, f.metadata.get("help", f.name)))
        return out

    @classmethod
    def from_params(cls, params: Optional[Mapping[str, Any]] = None, **overrides) -> "AuxLossConfig":
        """The config of ``params`` (``{flag name: value}``; other keys are ignored, missing ones
        take the default) with ``overrides`` (field name -> value) applied."""
        params = params or {}
        kw = {f.name: params[cls.flag_name(f.name)] for f in cls.flag_fields()
              if cls.flag_name(f.name) in params}
        kw.update(overrides)
        return cls(**kw)

    def validate(self, ctx: Optional[AuxContext] = None) -> List[str]:
        """Problems of this configuration (empty when valid), phrased with the flag names.
        ``ctx`` is ``None`` when only the hyper-parameters are checked."""
        return []


def _flag_kind(cls, name: str, tp, default) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{cls.__name__}.{name}: unsupported flag type {tp}")
        tp = rest[0]
    elif default is None:
        raise TypeError(f"{cls.__name__}.{name}: a None default needs an Optional[...] type")
    if tp not in _FLAG_KINDS:
        raise TypeError(f"{cls.__name__}.{name}: unsupported flag type {tp} (bool, int, float, str "
                        "or Optional of one)")
    return _FLAG_KINDS[tp]


@dataclasses.dataclass(frozen=True)
class AuxLossSpec:
    """A registered auxiliary loss (see the module docstring). ``title``: its name in messages."""
    name: str
    config: Type[AuxLossConfig]
    build: Callable[[AuxLossConfig, AuxContext], Any]
    requires: Tuple[str, ...] = ()
    excludes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    title: str = ""
    description: str = ""

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.name)
        unknown = [c for c in self.requires if c not in capabilities.DESCRIPTIONS]
        if unknown:
            raise ValueError(f"aux loss {self.name!r} requires unknown capabilities {unknown}; "
                             f"known: {sorted(capabilities.DESCRIPTIONS)}")


_REGISTRY: Dict[str, AuxLossSpec] = {}


def register(spec: AuxLossSpec) -> AuxLossSpec:
    """Add ``spec`` to the registry (again with the same spec is a no-op). Raises ``ValueError``
    when the name is taken by another loss, or when one of its flags is also declared by a
    registered loss with another type, default or help (losses may share a flag only when they
    declare it identically, e.g. AQCL and ICL)."""
    old = _REGISTRY.get(spec.name)
    if old is not None:
        if old == spec:
            return spec
        raise ValueError(f"aux loss {spec.name!r} is already registered ({old.config.__module__})")
    known = {f.name: (s.name, f) for s in _REGISTRY.values() for f in s.config.flags()}
    for f in spec.config.flags():
        if f.name in known and known[f.name][1] != f:
            raise ValueError(f"aux loss {spec.name!r}: flag --{f.name} differs from the one of "
                             f"{known[f.name][0]!r} ({known[f.name][1]} vs {f})")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> Tuple[str, ...]:
    """Registered loss names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> AuxLossSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown aux loss {name!r}; registered: {names()}") from None


def flags() -> List[Flag]:
    """Every registered loss's flags, each once (a shared flag at its first declaration)."""
    out: Dict[str, Flag] = {}
    for spec in _REGISTRY.values():
        for f in spec.config.flags():
            out.setdefault(f.name, f)
    return list(out.values())


def default_params() -> Dict[str, Any]:
    """``{flag name: default}`` of every registered loss (the ``loss_params`` of no flags)."""
    return {f.name: f.default for f in flags()}


def make_config(name: str, params: Optional[Mapping[str, Any]] = None,
                overrides: Optional[Mapping[str, Any]] = None) -> AuxLossConfig:
    return get(name).config.from_params(params, **dict(overrides or {}))


def _unique(losses: Sequence[str]) -> List[str]:
    return list(dict.fromkeys(losses))


def _requirement_problems(spec: AuxLossSpec, backbone: str, where: str = "",
                          hint: Optional[Callable[[str], str]] = None) -> List[str]:
    out = []
    for cap in spec.requires:
        if cap not in capabilities.provided_by(backbone):
            out.append(f"the {spec.title} loss needs a backbone with {capabilities.DESCRIPTIONS[cap]} "
                       f"({', '.join(capabilities.providers(cap))}); {where or f'backbone {backbone!r}'}"
                       + (f"; {hint(cap)}" if hint else ""))
    return out


def validate(losses: Sequence[str], params: Optional[Mapping[str, Any]], ctx: AuxContext,
             overrides: Optional[Mapping[str, Mapping[str, Any]]] = None, where: str = "",
             hint: Optional[Callable[[str], str]] = None) -> List[str]:
    """Problems of using the registered ``losses`` together on ``ctx.backbone``: the exclusions,
    the backbone requirements, then each loss's own :meth:`AuxLossConfig.validate`.
    ``overrides``: ``{loss name: {field: value}}`` (a model definition's fixed options);
    ``where``: how the backbone was chosen, for the messages (``--model=din uses 'din'``);
    ``hint(capability)``: advice appended to a missing-capability message."""
    losses = _unique(losses)
    errs: List[str] = []
    for i, a in enumerate(losses):
        for b in losses[i + 1:]:
            for x, y in ((a, b), (b, a)):
                why = get(x).excludes.get(y)
                if why:
                    errs.append(f"--aux_losses: {why}")
    for a in losses:
        errs += _requirement_problems(get(a), ctx.backbone, where, hint)
    for a in losses:
        errs += make_config(a, params, (overrides or {}).get(a)).validate(ctx)
    return errs


def build(losses: Sequence[str], params: Optional[Mapping[str, Any]], ctx: AuxContext,
          overrides: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[Any]:
    """The loss layers of ``losses`` (in order). Raises :class:`ConfigError` when a loss's
    backbone requirement is not met (the configuration's other checks belong to :func:`validate`)."""
    out = []
    for a in losses:
        spec = get(a)
        problems = _requirement_problems(spec, ctx.backbone, "")
        if problems:
            raise ConfigError("; ".join(problems))
        out.append(spec.build(make_config(a, params, (overrides or {}).get(a)), ctx))
    return out
