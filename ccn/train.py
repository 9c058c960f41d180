"""Train one model, evaluate it on the test split, optionally export it.

    python -m ccn.train --flagfile=configs/ccn_synthetic.flags [--seed=1] [--model_dir=...]
    python -m ccn.train --data_dir=out/synthetic/data --model_dir=runs/x --model=din --aux_losses=aqcl

One flag per field of :class:`ctrcore.config.TrainConfig` (training, backbone, checkpointing,
distribution) plus one per hyper-parameter of every registered auxiliary loss (the fields of its
config dataclass, :mod:`ctrcore.auxloss`); ``--helpfull`` lists them. ``--model`` names are in :data:`ccn.models.MODELS`.

Every flag is validated (generic, model/aux-loss and data checks) before anything is written
or any TensorFlow work starts; problems are printed together and the exit code is 2.
Re-running the same command resumes an interrupted run from its last backup
(``MODEL_DIR/backup``); a finished run is not retrained (only re-evaluated / re-exported) unless
``--overwrite``.

Writes (see ``ctrcore.rundir``): ``train_config.json``, ``history.json``, ``best/``, ``tb/`` and,
via ``ccn.evaluate``, ``metrics.json`` / ``metrics.md`` of ``--eval_split``.
"""
from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from absl import app, flags

from ccn import models
from ctrcore import auxloss
from ctrcore.config import (DISTRIBUTIONS, MIXED_PRECISION, OPTIMIZERS, TRAIN_INPUTS, ConfigError,
                             TrainConfig)

FLAGS = flags.FLAGS
_ENUMS = {"optimizer": OPTIMIZERS, "distribution": DISTRIBUTIONS, "mixed_precision": MIXED_PRECISION,
          "train_input": TRAIN_INPUTS}


def define_flags(flag_values=FLAGS) -> None:
    """One absl flag per TrainConfig field and per loss hyper-parameter (idempotent)."""
    if "model_dir" in flag_values:
        return
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f.metadata.get("help", f.name)
        t = str(f.type)
        if f.name in _ENUMS:
            flags.DEFINE_enum(f.name, default, list(_ENUMS[f.name]), help_, flag_values=flag_values)
        elif f.name == "model":
            flags.DEFINE_string(f.name, default, help_ + " One of: " + ", ".join(models.MODELS),
                                flag_values=flag_values)
        elif f.name == "aux_losses":
            flags.DEFINE_list(f.name, [str(x) for x in default],
                              help_ + " Registered: " + ", ".join(auxloss.names()) + ".",
                              flag_values=flag_values)
        elif t.startswith("List"):
            flags.DEFINE_list(f.name, [str(x) for x in default], help_, flag_values=flag_values)
        elif t == "bool":
            flags.DEFINE_bool(f.name, default, help_, flag_values=flag_values)
        elif "int" in t:
            flags.DEFINE_integer(f.name, default, help_, flag_values=flag_values)
        elif t == "float":
            flags.DEFINE_float(f.name, default, help_, flag_values=flag_values)
        else:
            flags.DEFINE_string(f.name, default, help_, flag_values=flag_values)
    define = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer, "float": flags.DEFINE_float,
              "str": flags.DEFINE_string}
    for f in auxloss.flags():
        define[f.kind](f.name, f.default, f.help, flag_values=flag_values)


define_flags()


def config_from_flags(flag_values=FLAGS) -> Tuple[TrainConfig, Dict[str, Any]]:
    """``(TrainConfig, loss_params)`` from parsed flags (raises ConfigError on bad list values)."""
    kw: Dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        v = flag_values[f.name].value
        if str(f.type) == "List[int]":  # --mlp_units, --cm_units, --din_units, --intent_units
            try:
                v = [int(x) for x in v]
            except ValueError:
                raise ConfigError(f"--{f.name} must be a comma list of ints, got {v}") from None
        elif f.name == "aux_losses":
            v = models.parse_aux_list(v)
        kw[f.name] = v
    lp = {f.name: flag_values[f.name].value for f in auxloss.flags()}
    cfg = TrainConfig(**kw)
    cfg.model_dir = expand_model_dir(cfg.model_dir, cfg)
    return cfg, lp


def expand_model_dir(path: str, cfg: TrainConfig) -> str:
    """``{seed}``, ``{model}`` and ``{run_key}`` in --model_dir are replaced by their values, so
    one flag file serves every seed (``--model_dir=runs/synthetic/ccn/seed{seed}``)."""
    if not path:
        return path
    key = models.run_key(cfg.model, cfg.aux_losses) if cfg.model in models.MODELS else cfg.model
    return (path.replace("{seed}", str(cfg.seed)).replace("{model}", cfg.model)
            .replace("{run_key}", key))


def validate_all(cfg: TrainConfig, lp: Dict[str, Any], check_data: bool = True):
    """All checks (generic, model, data); returns ``(spec, stats)`` when data was checked."""
    errors: List[str] = []
    try:
        cfg.validate(check_data=check_data)
    except ConfigError as e:
        errors.append(str(e))
    spec = stats = None
    if check_data and not errors:
        from ctrcore import schema
        spec = schema.load_spec(cfg.data_dir)
        stats = schema.load_stats(cfg.data_dir)
    try:
        models.validate(cfg, lp, spec, stats)
    except ConfigError as e:
        errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors))
    return spec, stats


def run_info(cfg: TrainConfig, lp: Dict[str, Any], argv: Optional[List[str]] = None) -> Dict[str, Any]:
    mdef = models.MODELS[cfg.model]
    argv = list(sys.argv[1:] if argv is None else argv)
    key = models.run_key(cfg.model, cfg.aux_losses)
    return {"run_key": key, "display": models.display_name(key), "backbone": mdef.backbone,
            "all_aux_losses": models.all_aux(cfg.model, cfg.aux_losses), "loss_params": lp,
            "command": shlex.join(["python", "-m", "ccn.train"] + argv), "argv": argv}


def try_export(model, spec, cfg: TrainConfig, extra_info: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Export the serving graph with :func:`serving.export.export_model` to
    ``--export_base/--model_name/VERSION`` (nothing without ``--export_base``); returns the path."""
    if not cfg.export_base:
        return None
    from serving import export as serving_export

    path = serving_export.export_model(model, spec, cfg.export_base, cfg.model_name,
                                       extra_info=extra_info)
    logging.info("exported to %s", path)
    return path


def run(cfg: TrainConfig, lp: Dict[str, Any], argv: Optional[List[str]] = None, callbacks=(),
        evaluate: bool = True, export: bool = True) -> Dict[str, Any]:
    """Validate, train (or resume / skip), evaluate, export. Returns a summary dict."""
    spec, stats = validate_all(cfg, lp)
    from ccn import evaluate as evaluate_lib
    from ctrcore import record, runtime, trainer

    t0 = time.time()
    info = run_info(cfg, lp, argv)
    prepared = record.prepare(cfg, info)
    result = trainer.train(cfg, models.model_factory(cfg, lp), run_info=info, callbacks=callbacks,
                           prepared=prepared)
    summary: Dict[str, Any] = {"model_dir": cfg.model_dir, "best": result.best, "skipped": result.skipped,
                               "train_wall_seconds": time.time() - t0}
    if evaluate:
        summary["metrics"] = evaluate_lib.evaluate_run(
            cfg.model_dir, split=cfg.eval_split, model=result.model, spec=result.spec,
            stats=result.stats, predict_fn=result.predict_fn)
    if export and cfg.export_base and runtime.is_chief():
        m = summary.get("metrics") or {}
        summary["export"] = try_export(result.model, result.spec, cfg, extra_info={
            "model_dir": cfg.model_dir, "run_key": info["run_key"], "seed": cfg.seed,
            "best": result.best, f"{cfg.eval_split}_auc": m.get("auc")})
    summary["model"] = result.model
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    logging.getLogger("ctrcore.trainer").setLevel(logging.INFO)
    try:
        cfg, lp = config_from_flags()
        validate_all(cfg, lp)
    except (ConfigError, FileNotFoundError) as e:
        print(f"ccn.train: {e}", file=sys.stderr)
        sys.exit(2)
    s = run(cfg, lp)
    m = s.get("metrics") or {}
    print(f"ccn.train: {cfg.model_dir}: {cfg.eval_split} AUC {m.get('auc')}, GAUC {m.get('gauc')}, "
          f"logloss {m.get('logloss')} (best val AUC {(s['best'] or {}).get('val_auc')} at epoch "
          f"{(s['best'] or {}).get('epoch')})" + (f"; exported to {s['export']}" if s.get("export") else ""))


if __name__ == "__main__":
    app.run(main)
