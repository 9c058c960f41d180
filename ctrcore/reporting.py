"""Results over seeds, and the Markdown tables of both papers: the one reporting stack.

``python -m ccn.report`` (any set of evaluated runs, either paper's table),
``scripts/reproduce_aqcl.py`` and ``scripts/reproduce_ccn.py`` (the reproduction drivers) and
the analysis scripts aggregate and render with this module; the paper tables themselves are
data beside each paper's code (``ccn/tables.py``: CCN Table 2; ``aqcl/tables.py``: AQCL
Tables 2 and 3 and the Fig. 5 ablation).

* Aggregation over seeds: :func:`mean_std` (mean, sample std, n over the values that are there:
  ``None`` / nan are left out), :func:`trimmed_mean` (the CCN paper's protocol),
  :func:`summarise` (run records -> one summary per row), :func:`convergence` (one run's best
  epoch against its epoch cap).
* Comparisons with a base row: :func:`paired_wins` (per seed), :func:`relaimpr` (AQCL Eq. 9,
  defined in :mod:`ctrcore.metrics` beside the other metrics and used from here),
  :func:`compare` (both, overall and per activeness group).
* Seeds: :func:`seed_order` (sort key of a row's seeds, unknown seeds last).
* Formatting: :func:`fmt_ms`, :func:`fmt_pct`, :func:`fmt_seconds`.
* Tables as data: :class:`Row`, :class:`TableLayout` (title, rows with display names, metric
  columns named from :data:`COLUMNS`, RelaImpr base, activeness groups);
  :func:`render_table` / :func:`render_section` turn a layout and the summaries into Markdown.

A *run record* is ``{"dir", "key", "seed", "metrics", "record", "history"}``: the row it belongs
to (``key``), its seed, and the contents of its ``metrics.json``, ``train_config.json`` and
``history.json`` (``{}`` when absent). Reading them is the caller's business; nothing here opens
a file. Pure Python and NumPy (no TensorFlow).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ctrcore.metrics import GROUP_NAMES, RELAIMPR_MIN_BASE_LIFT, relaimpr  # noqa: F401 (RelaImpr)

__all__ = ["mean_std", "trimmed_mean", "summarise", "convergence", "paired_wins", "relaimpr", "compare",
           "add_comparisons", "seed_order", "fmt_ms", "fmt_pct", "fmt_seconds",
           "group_label", "OWN_BACKBONE", "Row", "TableLayout", "Cell", "Column", "COLUMNS",
           "render_table", "render_section", "RELAIMPR_MIN_BASE_LIFT"]


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------
def seed_order(seed: Optional[int]) -> Tuple[bool, int]:
    """Sort key of seeds: ascending, unknown (None) seeds last."""
    return (seed is None, 0 if seed is None else seed)


# ---------------------------------------------------------------------------------------------
# aggregation over seeds
# ---------------------------------------------------------------------------------------------
def _present(values: Iterable[Optional[float]]) -> List[float]:
    """The values that are there: ``None`` and nan left out, as floats."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def mean_std(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    """``{"mean", "std", "n"}`` over the values that are there (``None`` / nan left out).

    ``std`` is the sample standard deviation (ddof=1), None for fewer than two values; ``mean``
    is None (and ``n`` 0) when no value is there.
    """
    vals = _present(values)
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "n": len(vals)}


def trimmed_mean(values: Sequence[Optional[float]]) -> Optional[float]:
    """The CCN paper's protocol (Sec. 4.1): repeat 5 times, drop the best and the worst value,
    average the rest. Defined for 3 or more values (one best and one worst dropped); else None."""
    vals = sorted(_present(values))
    if len(vals) < 3:
        return None
    return float(np.mean(vals[1:-1]))


_RUNTIME_KEYS = ("train_seconds", "wall_seconds", "steps", "examples_per_second",
                 "median_steady_examples_per_second")
_DATA_KEYS = ("source", "stats_sha256", "feature_spec_sha256")


def _best_epoch(run: Mapping[str, Any]) -> Optional[float]:
    """The kept epoch: ``metrics.json``'s ``best_epoch``, else ``history.json``'s best epoch."""
    v = run["metrics"].get("best_epoch")
    return v if v is not None else (run["history"].get("best") or {}).get("epoch")


def convergence(run: Mapping[str, Any]) -> Dict[str, Any]:
    """Whether a run was trained out: ``{best_epoch, cap, stopped_early, at_cap}``.

    ``cap``: the epochs the run was allowed (``train_config.json``'s plan, else its ``epochs``
    option; None when unknown); ``stopped_early``: early stopping on validation AUC ended it
    (``history.json``); ``at_cap``: its best epoch is its last allowed one, i.e. it was still
    improving when the cap ended it (not converged).
    """
    rec = run.get("record") or {}
    cap = (rec.get("plan") or {}).get("epochs") or (rec.get("config") or {}).get("epochs")
    best = _best_epoch(run)
    return {"best_epoch": best, "cap": cap, "stopped_early": bool(run["history"].get("stopped_early")),
            "at_cap": best is not None and cap is not None and best >= cap}


def summarise(runs: Sequence[Mapping[str, Any]],
              groups: Sequence[str] = GROUP_NAMES) -> Dict[str, Dict[str, Any]]:
    """One summary per row (run records grouped by ``key``), every number over the row's seeds.

    ``{key: {n_seeds, seeds, dirs, auc/gauc/page_auc/logloss: {mean, std, n}, auc_per_seed
    {seed: auc}, auc_trimmed, n_examples, groups: {g: {auc, gauc: {mean, std, n}, n}},
    runtime: {train_seconds, wall_seconds, steps, examples_per_second,
    median_steady_examples_per_second: {mean, std, n}}, best_epoch, best_val_auc: {mean, std,
    n}, convergence: {caps, best_epoch_max, at_cap_seeds, n_stopped_early} (:func:`convergence`),
    commands, data, data_dirs}}``; seeds ascending (unknown last).
    """
    by_key: Dict[str, List[Mapping[str, Any]]] = {}
    for r in runs:
        by_key.setdefault(r["key"], []).append(r)
    out = {}
    for key, rs in by_key.items():
        rs = sorted(rs, key=lambda r: seed_order(r["seed"]))
        ms = [r["metrics"] for r in rs]
        g: Dict[str, Any] = {"n_seeds": len(rs), "seeds": [r["seed"] for r in rs], "dirs": [r["dir"] for r in rs]}
        for k in ("auc", "gauc", "page_auc", "logloss"):
            g[k] = mean_std([m.get(k) for m in ms])
        g["auc_per_seed"] = {r["seed"]: r["metrics"].get("auc") for r in rs}
        g["auc_trimmed"] = trimmed_mean([m.get("auc") for m in ms])
        g["n_examples"] = sorted({m.get("n") for m in ms if m.get("n") is not None})
        g["groups"] = {}
        for grp in groups:
            gm = [(m.get("groups") or {}).get(grp, {}) for m in ms]
            g["groups"][grp] = {"auc": mean_std([x.get("auc") for x in gm]),
                                "gauc": mean_std([x.get("gauc") for x in gm]),
                                "n": sorted({x.get("n") for x in gm if x.get("n") is not None})}
        rts = [r["history"].get("runtime") or {} for r in rs]
        g["runtime"] = {k: mean_std([rt.get(k) for rt in rts]) for k in _RUNTIME_KEYS}
        g["best_epoch"] = mean_std([_best_epoch(r) for r in rs])
        g["best_val_auc"] = mean_std([m.get("best_val_auc") for m in ms])
        conv = [convergence(r) for r in rs]
        g["convergence"] = {
            "caps": sorted({c["cap"] for c in conv if c["cap"] is not None}),
            "best_epoch_max": max((c["best_epoch"] for c in conv if c["best_epoch"] is not None), default=None),
            "at_cap_seeds": [r["seed"] for r, c in zip(rs, conv) if c["at_cap"]],
            "n_stopped_early": sum(c["stopped_early"] for c in conv)}
        g["commands"] = sorted({(r["record"].get("run_info") or {}).get("command", "") for r in rs} - {""})
        g["data"] = sorted({json.dumps({k: (m.get("data") or {}).get(k) for k in _DATA_KEYS}, sort_keys=True)
                            for m in ms})
        g["data_dirs"] = sorted({m.get("data_dir", "") for m in ms})
        out[key] = g
    return out


# ---------------------------------------------------------------------------------------------
# comparisons with a base row
# ---------------------------------------------------------------------------------------------
def paired_wins(row: Mapping[Any, Optional[float]], base: Mapping[Any, Optional[float]]) -> Dict[str, Any]:
    """Per-seed comparison of two rows of runs (``{seed: auc}`` each): on how many of the seeds
    both have a value the row's AUC is above the base's. ``{"seeds", "n", "wins"}``."""
    common = sorted(s for s in set(row) & set(base)
                    if s is not None and row[s] is not None and base[s] is not None)
    return {"seeds": common, "n": len(common), "wins": int(sum(row[s] > base[s] for s in common))}


def compare(row: Mapping[str, Any], base: Mapping[str, Any],
            groups: Sequence[str] = GROUP_NAMES) -> Dict[str, Any]:
    """A row's summary against its base's (both from :func:`summarise`).

    ``{"relaimpr": {"auc", "gauc", "groups": {g: ...}}, "paired": paired_wins(...)}``: RelaImpr
    (AQCL Eq. 9, percent; nan where undefined, see :func:`relaimpr`) of the *mean* AUCs, and the
    per-seed wins of the row's AUC over the base's.
    """
    return {"relaimpr": {"auc": relaimpr(row["auc"]["mean"], base["auc"]["mean"]),
                         "gauc": relaimpr(row["gauc"]["mean"], base["gauc"]["mean"]),
                         "groups": {g: relaimpr(row["groups"][g]["auc"]["mean"], base["groups"][g]["auc"]["mean"])
                                    for g in groups}},
            "paired": paired_wins(row["auc_per_seed"], base["auc_per_seed"])}


def add_comparisons(summaries: Dict[str, Dict[str, Any]], base_of: Callable[[str], Optional[str]],
                    groups: Sequence[str] = GROUP_NAMES) -> None:
    """Store in every summary its base (``relaimpr_base``: None when the base has no runs),
    ``relaimpr`` and ``paired_vs_base`` (:func:`compare`), or None for both without a base."""
    for key, g in summaries.items():
        base_key = base_of(key)
        b = summaries.get(base_key) if base_key else None
        g["relaimpr_base"] = base_key if b else None
        c = compare(g, b, groups) if b else None
        g["relaimpr"] = c["relaimpr"] if c else None
        g["paired_vs_base"] = c["paired"] if c else None


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def fmt_ms(ms: Optional[Mapping[str, Any]], digits: int = 4) -> str:
    """``mean ± std`` of a :func:`mean_std` result (``mean`` alone without a std; ``-`` without
    a mean)."""
    if not ms or ms.get("mean") is None:
        return "-"
    s = f"{ms['mean']:.{digits}f}"
    if ms.get("std") is not None:
        s += f" ± {ms['std']:.{digits}f}"
    return s


def fmt_pct(v: Optional[float]) -> str:
    """A signed percentage (``+6.24%``); ``-`` for None / nan."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}%"


def fmt_seconds(ms: Optional[Mapping[str, Any]]) -> str:
    """The mean of a :func:`mean_std` result in whole seconds (``123s``); ``-`` without one."""
    if not ms or ms.get("mean") is None:
        return "-"
    return f"{ms['mean']:.0f}s"


def group_label(group: str) -> str:
    """``non_active`` -> ``non-active``."""
    return group.replace("_", "-")


# ---------------------------------------------------------------------------------------------
# table layouts (data) and their rendering
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Cell:
    """What a column sees of one row: its key, summary, RelaImpr base and comparison with it
    (:func:`compare`; None without a base that has runs), and the activeness group of a
    per-group column."""
    key: str
    summary: Mapping[str, Any]
    base: Optional[str]
    vs_base: Optional[Mapping[str, Any]]
    group: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Column:
    """A metric column: its header (``{group}`` is replaced by the group's label in a per-group
    column) and how a cell is written."""
    header: str
    cell: Callable[[Cell], str]


def _relaimpr_cell(c: Cell) -> str:
    if not c.vs_base:
        return "-"
    ri = c.vs_base["relaimpr"]
    return fmt_pct(ri["groups"][c.group] if c.group else ri["auc"])


def _wins_cell(c: Cell) -> str:
    pv = c.vs_base["paired"] if c.vs_base else None
    return "-" if not pv or not pv["n"] or c.key == c.base else f"{pv['wins']}/{pv['n']}"


def _throughput_cell(c: Cell) -> str:
    eps = c.summary["runtime"]["median_steady_examples_per_second"]
    if eps["mean"] is None:
        eps = c.summary["runtime"]["examples_per_second"]
    return "-" if eps["mean"] is None else f"{eps['mean']:.0f}"


#: The columns a :class:`TableLayout` may name. ``group_*`` columns are per activeness group and
#: appear in a layout inside a tuple: ``("group_auc", "group_relaimpr")`` gives, for each group,
#: its AUC then its RelaImpr.
COLUMNS: Dict[str, Column] = {
    "n": Column("n", lambda c: str(c.summary["n_seeds"])),
    "auc": Column("AUC", lambda c: fmt_ms(c.summary["auc"])),
    "auc_trimmed": Column("AUC trimmed", lambda c: "-" if c.summary["auc_trimmed"] is None
                          else f"{c.summary['auc_trimmed']:.4f}"),
    "relaimpr": Column("RelaImpr", _relaimpr_cell),
    "wins": Column("> base", _wins_cell),
    "gauc": Column("GAUC", lambda c: fmt_ms(c.summary["gauc"])),
    "page_auc": Column("page AUC", lambda c: fmt_ms(c.summary["page_auc"])),
    "logloss": Column("LogLoss", lambda c: fmt_ms(c.summary["logloss"])),
    "best_epoch": Column("best epoch", lambda c: fmt_ms(c.summary["best_epoch"], 1)),
    "best_val_auc": Column("best val AUC", lambda c: fmt_ms(c.summary["best_val_auc"])),
    "train_time": Column("train time", lambda c: fmt_seconds(c.summary["runtime"]["train_seconds"])),
    "ex_per_s": Column("ex/s", _throughput_cell),
    "group_auc": Column("{group} AUC", lambda c: fmt_ms(c.summary["groups"][c.group]["auc"])),
    "group_relaimpr": Column("RelaImpr", _relaimpr_cell),
}

ColumnSpec = Union[str, Tuple[str, ...]]


#: :attr:`TableLayout.base` of a table whose rows are each compared with their own backbone: the
#: row ``din+aqcl`` with ``din`` (the run key's model, before the first ``+``); a row without
#: ``+`` is a base, compared with nothing (AQCL Table 3).
OWN_BACKBONE = "<own backbone>"


@dataclasses.dataclass(frozen=True)
class Row:
    """A row of a paper table: the run key (or run name) whose runs it aggregates and its
    display name."""
    key: str
    label: str


@dataclasses.dataclass(frozen=True)
class TableLayout:
    """A paper table as data.

    ``name``: its id (``ccn.report --layout``); ``title``: its heading; ``rows``: in the paper's
    order; ``columns``: ids of :data:`COLUMNS` in order, a tuple of ``group_*`` ids standing for
    those columns repeated per activeness group; ``base``: the run key every row's RelaImpr and
    wins are computed against, :data:`OWN_BACKBONE` (each row against its own backbone) or None
    (no comparison);
    ``groups``: the activeness groups of the per-group columns; ``note``: a sentence printed
    above the table by :func:`render_section`.
    """
    name: str
    title: str
    rows: Tuple[Row, ...]
    columns: Tuple[ColumnSpec, ...]
    base: Optional[str] = None
    groups: Tuple[str, ...] = GROUP_NAMES
    note: str = ""

    def __post_init__(self):
        keys = [r.key for r in self.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"layout {self.name!r}: duplicated row keys {keys}")
        for spec in self.columns:
            for cid in (spec if isinstance(spec, tuple) else (spec,)):
                if cid not in COLUMNS:
                    raise ValueError(f"layout {self.name!r}: unknown column {cid!r}; "
                                     f"choose from {sorted(COLUMNS)}")
                per_group = cid.startswith("group_")
                if per_group != isinstance(spec, tuple):
                    raise ValueError(f"layout {self.name!r}: column {cid!r} must {'' if per_group else 'not '}"
                                     "be inside a per-group tuple")

    @property
    def keys(self) -> List[str]:
        """The row keys, in order."""
        return [r.key for r in self.rows]

    @property
    def fixed_base(self) -> Optional[str]:
        """The one base of every row (None when there is none, or each row has its own)."""
        return None if self.base == OWN_BACKBONE else self.base

    def base_of(self, key: str, override: Optional[str] = None) -> Optional[str]:
        """The RelaImpr base of row ``key`` (any run key, in the table or not): ``override``
        (e.g. ``--base``) if given, else the table's (:data:`OWN_BACKBONE`: the key's model when
        the key has an aux loss, else None)."""
        if override:
            return override
        if self.base == OWN_BACKBONE:
            return key.split("+")[0] if "+" in key else None
        return self.base

    def header(self) -> List[str]:
        """The column headers (without the first, "Model")."""
        out = []
        for spec in self.columns:
            if isinstance(spec, tuple):
                out += [COLUMNS[c].header.format(group=group_label(g)) for g in self.groups for c in spec]
            else:
                out.append(COLUMNS[spec].header)
        return out

    def cells(self, key: str, summary: Mapping[str, Any], base: Optional[str],
              vs_base: Optional[Mapping[str, Any]]) -> List[str]:
        """The cells of one row (without its label)."""
        out = []
        for spec in self.columns:
            if isinstance(spec, tuple):
                out += [COLUMNS[c].cell(Cell(key, summary, base, vs_base, g)) for g in self.groups for c in spec]
            else:
                out.append(COLUMNS[spec].cell(Cell(key, summary, base, vs_base)))
        return out


def render_table(layout: TableLayout, summaries: Mapping[str, Mapping[str, Any]], *,
                 base: Optional[str] = None, extra_rows: Sequence[Row] = (), show_keys: bool = True,
                 show_missing: bool = True) -> List[str]:
    """The Markdown lines of ``layout`` over ``summaries`` (:func:`summarise`).

    ``base`` overrides every row's RelaImpr base (:meth:`TableLayout.base_of`); ``extra_rows``
    follow the layout's rows (runs found outside it); ``show_keys``: a row is labelled
    ``Label (`key`)`` instead of ``Label``; ``show_missing``: a row without runs is listed as
    "not run" instead of left out.
    """
    hdr = ["Model"] + layout.header()
    lines = ["| " + " | ".join(hdr) + " |", "|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|"]
    for row in list(layout.rows) + list(extra_rows):
        label = f"{row.label} (`{row.key}`)" if show_keys else row.label
        s = summaries.get(row.key)
        if s is None:
            if show_missing:
                lines.append(f"| {label} | 0 | not run |" + " |" * (len(hdr) - 3))
            continue
        base_key = layout.base_of(row.key, base)
        b = summaries.get(base_key) if base_key else None
        vs = compare(s, b, layout.groups) if b else None
        lines.append("| " + " | ".join([label] + layout.cells(row.key, s, base_key if b else None, vs)) + " |")
    return lines


def render_section(layout: TableLayout, summaries: Mapping[str, Mapping[str, Any]], *,
                   level: int = 2, **table_kw) -> List[str]:
    """A Markdown section: ``## title``, the layout's note, and its table of the rows that have
    runs (``(no finished runs yet)`` when none has). ``table_kw`` go to :func:`render_table`."""
    lines = [f"{'#' * level} {layout.title}", ""]
    if not any(k in summaries for k in layout.keys):
        return lines + ["(no finished runs yet)", ""]
    if layout.note:
        lines += [layout.note, ""]
    table_kw.setdefault("show_missing", False)
    return lines + render_table(layout, summaries, **table_kw) + [""]
