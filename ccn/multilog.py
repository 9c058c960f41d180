"""TAN vs CCN (and its ablations) on several synthetic logs (issue 14, item 4): one table, one
convergence plot.

    python -m ccn.multilog --logs=synthetic_g0_r200000,synthetic_g11_r200000 --tag=conv --base=tan \\
        --output=results/ccn_synthetic_multilog_conv.md --json=results/ccn_synthetic_multilog_conv.json \\
        --png=results/ccn_synthetic_multilog_conv_curves.png

A *log* is one synthetic exposure log, :class:`SyntheticLog` (generator seed, rows): its files
live in ``out/<name>/`` and its runs in ``runs/<name>[_<tag>]/<model>/seed<s>``, where ``name`` is
``synthetic_g<seed>_r<rows>``, or ``synthetic`` for the default log (seed 0, 100,000 rows, whose
paths predate the grid). ``scripts/reproduce_ccn.py --gen_seeds=... --rows_list=...`` trains the
grid and calls this module.

Everything is read from the run directories (through :func:`ccn.report.find_runs`, i.e.
:class:`ctrcore.rundir.RunDir`) and the logs' ``stats.json``; aggregation, RelaImpr and paired
wins are :mod:`ctrcore.reporting`'s. Per (log, model): n seeds, mean ± std test AUC, RelaImpr
of the mean AUC against the base (TAN), paired wins over the seeds both have, mean and max best
epoch against the epoch cap, how many runs early stopping ended, and whether any run's best
epoch is its cap (not converged). The PNG has one panel per log: validation AUC against epoch
(``history.json``), mean over the seeds that reached each epoch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app, flags

from ccn import models
from ccn import report
from ccn import tables
from ccn.cli import checked_call
from ctrcore import metrics as metrics_lib
from ctrcore import reporting

#: the default log of ``scripts/reproduce_ccn.py`` (``out/synthetic``, ``runs/synthetic``)
DEFAULT_GEN_SEED, DEFAULT_ROWS = 0, 100_000
_NAME = re.compile(r"^synthetic_g(\d+)_r(\d+)$")


@dataclasses.dataclass(frozen=True)
class SyntheticLog:
    """One synthetic log: ``python -m pipelines.synthetic --seed=gen_seed --rows=rows``,
    preprocessed with the fixed ``--seed=0`` (so two logs differ by the generator only)."""
    gen_seed: int
    rows: int

    @property
    def is_default(self) -> bool:
        return (self.gen_seed, self.rows) == (DEFAULT_GEN_SEED, DEFAULT_ROWS)

    @property
    def name(self) -> str:
        return "synthetic" if self.is_default else f"synthetic_g{self.gen_seed}_r{self.rows}"

    @property
    def data_dir(self) -> str:
        return f"out/{self.name}/data"

    @property
    def log_file(self) -> str:
        return f"out/{self.name}/log/exposures.csv"

    def runs_name(self, tag: str = "") -> str:
        """``runs/<this>/<model>/seed<s>``; ``results/ccn_<this>.md``."""
        return f"{self.name}_{tag}" if tag else self.name

    def prep_commands(self) -> List[List[str]]:
        """The ``python -m`` argument lists that write the log and preprocess it."""
        return [["pipelines.synthetic", f"--output={self.log_file}", f"--rows={self.rows}",
                 f"--seed={self.gen_seed}"],
                ["pipelines.preprocess", "--source=synthetic", f"--input={self.log_file}",
                 f"--output_dir={self.data_dir}", "--seed=0", "--runner=DirectRunner"]]

    @classmethod
    def from_name(cls, name: str) -> "SyntheticLog":
        if name == "synthetic":
            return cls(DEFAULT_GEN_SEED, DEFAULT_ROWS)
        m = _NAME.match(name)
        if not m:
            raise ValueError(f"not a synthetic log name: {name!r} (synthetic | synthetic_g<seed>_r<rows>)")
        return cls(int(m.group(1)), int(m.group(2)))


# ---------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------
def val_curves(runs: Sequence[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Per run key: ``[{epoch, mean, std, n}]``, validation AUC at each epoch over the runs that
    reached it (``history.json``'s epochs; a run that stopped early adds nothing after its last
    epoch)."""
    by_key: Dict[str, Dict[int, List[Optional[float]]]] = {}
    for r in runs:
        per_epoch = by_key.setdefault(r["key"], {})
        for e in r["history"].get("epochs") or []:
            per_epoch.setdefault(int(e["epoch"]), []).append((e.get("val") or {}).get("auc"))
    return {k: [dict(reporting.mean_std(v), epoch=ep) for ep, v in sorted(per_epoch.items())]
            for k, per_epoch in by_key.items()}


def _order(keys) -> List[str]:
    """Run keys in CCN Table 2 order, others after it, sorted."""
    known = tables.TABLE2.keys
    return [k for k in known if k in keys] + sorted(k for k in keys if k not in known)


def _stats(root: str, log: SyntheticLog) -> Optional[dict]:
    path = os.path.join(root, log.data_dir, "stats.json")  # the dataset's file, not a run file
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def collect(logs: Sequence[SyntheticLog], tag: str = "", base: str = "tan", root: str = ".",
            runs_dir: str = "runs", split: str = "test") -> Dict[str, Any]:
    """``{log name: {gen_seed, rows, runs_glob, stats, groups (reporting.summarise + compare
    with base), curves (val_curves), skipped}}`` over the runs of each log."""
    out = {}
    for log in logs:
        rel_glob = os.path.join(runs_dir, log.runs_name(tag), "*", "seed*")
        runs, skipped = report.find_runs(os.path.join(root, rel_glob), split)
        agg = reporting.summarise(runs, report.GROUPS)
        reporting.add_comparisons(agg, lambda k: base, report.GROUPS)
        out[log.name] = {"gen_seed": log.gen_seed, "rows": log.rows, "runs_glob": rel_glob,
                         "data_dir": log.data_dir, "stats": _stats(root, log), "groups": agg,
                         "curves": val_curves(runs), "skipped": skipped,
                         "hyperparameters": report.hyperparameters(runs)}
    return out


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def _digests(g: Dict[str, Any]) -> List[str]:
    return sorted({json.loads(d).get("stats_sha256") or "?" for d in g["data"]})


def _row(name: str, key: str, g: Dict[str, Any], base: str) -> str:
    conv = g["convergence"]
    caps = conv["caps"]
    cap = "?" if not caps else "/".join(str(c) for c in caps)
    best_max = "-" if conv["best_epoch_max"] is None else f"{conv['best_epoch_max']:g}"
    pv = g.get("paired_vs_base")
    wins = "-" if key == base or not pv or not pv["n"] else f"{pv['wins']}/{pv['n']}"
    ri = reporting.fmt_pct(g["relaimpr"]["auc"]) if g.get("relaimpr") else "-"
    if conv["at_cap_seeds"]:
        converged = f"**no**: seeds {conv['at_cap_seeds']} at cap"
    else:
        converged = "yes" if caps else "?"
    return (f"| {name} | {models.display_name(key)} (`{key}`) | {g['n_seeds']} | {reporting.fmt_ms(g['auc'])} | "
            f"{ri} | {wins} | {reporting.fmt_ms(g['best_epoch'], 1)} | {best_max} / {cap} | "
            f"{conv['n_stopped_early']}/{g['n_seeds']} | {converged} |")


def render(res: Dict[str, Any], base: str, tag: str, commands: Sequence[str], title: Optional[str] = None,
           png: Optional[str] = None) -> str:
    n_runs = sum(g["n_seeds"] for lg in res.values() for g in lg["groups"].values())
    L = [f"# {title or 'TAN vs CCN on several synthetic logs'}", "",
         f"* generated on {time.strftime('%Y-%m-%d %H:%M')} from {n_runs} evaluated runs "
         f"({len(res)} log{'s' if len(res) != 1 else ''}{f', tag `{tag}`' if tag else ''}); every number is read from the run directories",
         "* commands: " + "; ".join(f"`{c}`" for c in commands),
         "* logs (generator `python -m pipelines.synthetic --seed=G --rows=R`, preprocessed with `--seed=0`):"]
    for name, lg in res.items():
        digests = sorted({d for g in lg["groups"].values() for d in _digests(g)})
        st = lg["stats"] or {}
        ex = st.get("examples") or {}
        line = (f"  * `{name}`: generator seed {lg['gen_seed']}, {lg['rows']} rows; data `{lg['data_dir']}` "
                f"(stats digest {', '.join(digests) or '-'}; examples train / valid / test "
                f"{ex.get('train', '?')} / {ex.get('valid', '?')} / {ex.get('test', '?')}); runs "
                f"`{lg['runs_glob']}`")
        if st.get("rows_read") is not None and st["rows_read"] != lg["rows"]:
            line += f" **(stats.json: {st['rows_read']} input rows, not {lg['rows']})**"
        if len(digests) > 1:
            line += f" **(the runs use {len(digests)} different datasets: not comparable)**"
        L.append(line)
    L += [f"* AUC: test AUC, mean ± sample std over seeds (n = #seeds); RelaImpr = ((AUC - 0.5) / "
          f"(AUC_{base} - 0.5) - 1) x 100% on the mean AUCs (AQCL Eq. 9); > {base}: on how many of the "
          f"seeds both rows have run the row's test AUC is above {base}'s of the same seed",
          "* best epoch: the epoch kept (best validation AUC), mean ± std; max / cap: the largest best "
          "epoch against the epoch cap (`--epochs`); stopped early: runs ended by early stopping on "
          "validation AUC; converged: **no** where a run's best epoch is its cap (still improving "
          "when the cap ended it)", ""]
    L += [f"| Log | Model | n | AUC | RelaImpr vs {base} | > {base} | best epoch | max / cap | stopped early | converged |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, lg in res.items():
        if not lg["groups"]:
            L.append(f"| {name} | (no evaluated runs) | 0 | | | | | | | |")
        for key in _order(lg["groups"]):
            L.append(_row(name, key, lg["groups"][key], base))
    if png:
        L += ["", f"Convergence: `{png}`: validation AUC against epoch, one panel per log, mean over "
              "seeds per model. A run that stopped early contributes only to the epochs it ran: the "
              "mean at epoch e is over the runs that reached e (solid while every seed of the row is "
              "there, dashed after; the legend gives the last epoch every seed reached)."]
    L += [""] + report.hyperparameter_lines(report.merge_hyperparameters(
        [lg["hyperparameters"] for lg in res.values() if lg["groups"]]))
    L += ["## Runs", ""]
    for name, lg in res.items():
        for key in _order(lg["groups"]):
            g = lg["groups"][key]
            per_seed = ", ".join(f"{s}: {a:.4f}" for s, a in g["auc_per_seed"].items() if a is not None)
            L.append(f"* `{name}` {key} (test AUC per seed {per_seed}):")
            L += [f"  * `{c}`" for c in g["commands"]]
        L += [f"* `{name}`: matched but not evaluated: {s}" for s in lg["skipped"]]
    return "\n".join(L) + "\n"


def plot_curves(res: Dict[str, Any], path: str, title: str = "") -> str:
    """The PNG: one panel per log, validation AUC against epoch, mean over seeds per model (solid
    while every seed is there, dashed where fewer runs reached the epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(res)
    ncols = min(3, max(1, len(names)))
    nrows = math.ceil(max(1, len(names)) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), dpi=110, squeeze=False)
    keys = _order({k for lg in res.values() for k in lg["curves"]})
    colour = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    for ax, name in zip(axes.flat, names):
        lg = res[name]
        for key in _order(lg["curves"]):
            pts = [p for p in lg["curves"][key] if p["mean"] is not None]
            if not pts:
                continue
            n_all = lg["groups"][key]["n_seeds"] if key in lg["groups"] else max(p["n"] for p in pts)
            full = [p for p in pts if p["n"] >= n_all]
            last_full = full[-1]["epoch"] if full else 0
            xs, ys = [p["epoch"] for p in pts], [p["mean"] for p in pts]
            i = len(full)
            ax.plot(xs[:i], ys[:i], color=colour[key], lw=1.6, marker="o", ms=2.5,
                    label=f"{models.display_name(key)} (n={n_all}, all to ep {last_full})")
            if i < len(xs):
                ax.plot(xs[max(0, i - 1):], ys[max(0, i - 1):], color=colour[key], lw=1.0, ls="--", alpha=0.7)
        ax.set_title(f"{name}: gen seed {lg['gen_seed']}, {lg['rows']:,} rows", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation AUC (mean over seeds)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle((title + "\n" if title else "") + "mean at epoch e over the runs that reached e "
                 "(dashed: fewer than all seeds)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def build(logs: Sequence[SyntheticLog], tag: str = "", base: str = "tan", root: str = ".",
          runs_dir: str = "runs", commands: Sequence[str] = (), title: Optional[str] = None,
          png: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    """``(markdown, data)``; with ``png`` also writes the convergence plot (path relative to
    ``root``)."""
    res = collect(logs, tag, base, root, runs_dir)
    if not any(lg["groups"] for lg in res.values()):
        raise FileNotFoundError("no evaluated runs in " + ", ".join(lg["runs_glob"] for lg in res.values()))
    if png:
        plot_curves(res, os.path.join(root, png), title or "")
    md = render(res, base, tag, commands, title, png)
    return md, {"base": base, "tag": tag, "commands": list(commands), "png": png, "logs": res}


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_list("logs", [], "Log names: synthetic (the default log) or synthetic_g<seed>_r<rows>.")
    flags.DEFINE_string("tag", "", "Runs of runs/<log>_<tag>/ (empty: runs/<log>/).")
    flags.DEFINE_string("runs_dir", "runs", "Folder of the run directories.")
    flags.DEFINE_string("base", "tan", "Run key every row is compared with (RelaImpr, paired wins).")
    flags.DEFINE_string("output", None, "Markdown file to write (stdout if not given).")
    flags.DEFINE_string("json", None, "Also write the numbers (and the curves) as JSON here.")
    flags.DEFINE_string("png", None, "Write the convergence plot here.")
    flags.DEFINE_string("title", None, "Title of the report.")
    flags.DEFINE_string("command", "", "The driver's command line, listed in the header.")


def main(argv):
    def call():
        logs = [SyntheticLog.from_name(n) for n in FLAGS.logs]
        own = "python -m ccn.multilog " + shlex.join(a for a in sys.argv[1:] if not a.startswith("--command"))
        cmds = [c for c in (FLAGS.command, own.strip()) if c]
        return build(logs, FLAGS.tag, FLAGS.base, ".", FLAGS.runs_dir, cmds, FLAGS.title, FLAGS.png)

    md, data = checked_call("ccn.multilog", argv, {"logs": FLAGS.logs}, call, (FileNotFoundError, ValueError))
    for path, text in ((FLAGS.output, md),
                       (FLAGS.json, json.dumps(metrics_lib.to_jsonable(data), indent=1, sort_keys=True,
                                               allow_nan=False))):
        if path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text)
            print(f"wrote {path}")
    if not FLAGS.output:
        print(md)
    if FLAGS.png:
        print(f"wrote {FLAGS.png}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
