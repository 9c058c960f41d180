r"""AutoML search of the AQCL alpha-adaptation curve (AQCL paper, Sec. 4.2.2, Eq. 6-7).

Search space (Eq. 6)::

    alpha_j = R(L_j) = exp(-w1 * (L_j / L_bar) ** w2),   w1 > 0, w2 > 0

(``L_j`` the user's history length, ``L_bar`` the mean history length of the training set, from
``stats.json``). Objective (Eq. 7): the Logloss on the *validation* split of the model trained on
the training split with that ``R``; minimised with Optuna's TPE sampler (seeded), ``w1`` and
``w2`` sampled log-uniformly from ``--w1_range`` / ``--w2_range``.

Usage::

    python -m aqcl.search --model_dir=out/beauty/search_din_aqcl --trainer_module=TRAINER \
        --train_flags=configs/din_aqcl_beauty.flags --n_trials=20 [-- extra trainer flags]

Each trial trains in its own process (``python -m <--trainer_module> --flagfile=<--train_flags>
<extra flags> --aqcl_w1=.. --aqcl_w2=.. --model_dir=MODEL_DIR/trials/trial_NNN``) and the
objective is read from that run's ``history.json``: the validation logloss of the epoch whose
weights the run keeps (``--objective_metric``, see :func:`read_objective`); the test split is
never looked at.
Processes isolate trials (no graph/memory build-up, a crash fails one trial) and keep this
module free of any model package: the trainer is whatever ``--trainer_module`` names (required;
``configs/search_din_aqcl_beauty.flags`` gives it), ``aqcl`` neither imports nor names one.

Resumability / distribution:

* the study lives in an Optuna RDB storage, SQLite ``MODEL_DIR/search.db`` by default
  (``--storage`` takes any SQLAlchemy URL, e.g. PostgreSQL/MySQL, to spread trials over
  machines: start the same command on every machine);
* ``load_if_exists=True``: a restarted search continues the same study; only COMPLETE trials
  count toward ``--n_trials`` (trials still RUNNING elsewhere are counted as in flight so that
  concurrent workers do not overshoot the budget);
* a trial left RUNNING by a dead process is failed and re-enqueued with the same (w1, w2)
  (``RetryHeartbeatStaleTrialCallback``): immediately when it was started on this host by a process
  that no longer exists, otherwise through Optuna's heartbeat (``--heartbeat_s``) after its
  grace period. The retried trial reuses the directory of the original one, so the trainer's
  own ``BackupAndRestore`` resumes the interrupted training, and a run whose ``metrics.json``
  is already written is not trained again.

Outputs in ``MODEL_DIR``: ``best.json`` (best w1, w2, value, trial), ``alpha_curve.png`` (the
found R(L) vs L/L_bar, like Fig. 4/5 left, with the top trials in grey), ``trials.csv`` and
``trials.md`` (all trials).
"""
from __future__ import annotations

import csv
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ctrcore.rundir import RunDir

ObjectiveFn = Callable[[Dict[str, float], str], float]

TRIALS_SUBDIR = "trials"
BEST_FILENAME = "best.json"
CURVE_FILENAME = "alpha_curve.png"
TABLE_CSV = "trials.csv"
TABLE_MD = "trials.md"


# ---------------------------------------------------------------------------------------------
# Eq. 6 (numpy; the training-time implementation is aqcl.alpha.alpha_of_length)
# ---------------------------------------------------------------------------------------------
def alpha_curve(ratio, w1: float, w2: float):
    """R(L) = exp(-w1 * (L / L_bar) ** w2) evaluated at ``ratio = L / L_bar`` (array-like >= 0)."""
    import numpy as np

    r = np.maximum(np.asarray(ratio, dtype=np.float64), 0.0)
    return np.exp(-w1 * np.power(r, w2))


# ---------------------------------------------------------------------------------------------
# Objective: train one model in a subprocess and read its validation logloss
# ---------------------------------------------------------------------------------------------
def get_metric(metrics: dict, path: str):
    """``metrics['a']['b']`` for ``path='a.b'``; also accepts a flat key containing dots."""
    if path in metrics:
        return metrics[path]
    cur = metrics
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(f"metric {path!r} not found (top-level keys: {sorted(metrics)})")
        cur = cur[part]
    return cur


#: default objective: the validation logloss of the epoch whose weights the run keeps (the
#: trainer keeps the best-by-validation-AUC epoch), read from the run's history.json
BEST_VAL_LOGLOSS = "history:best.val.logloss"


def run_completed(trial_dir: str) -> bool:
    """True once the trainer marked the run completed (``history.json`` ``completed``)."""
    return RunDir(trial_dir).completed()


def read_objective(trial_dir: str, metric: str = BEST_VAL_LOGLOSS) -> float:
    """The objective of a finished run.

    * ``history:best.<path>`` - ``<path>`` in the ``history.json`` epoch entry of the best epoch
      (``history["best"]["epoch"]``), e.g. ``history:best.val.logloss`` (Eq. 7's L_val of the
      kept weights theta*); ``history:min.<path>`` - the minimum of ``<path>`` over epochs;
    * ``<file>.json:<path>`` - ``<path>`` in ``trial_dir/<file>.json``;
    * ``<path>`` - ``<path>`` in ``metrics.json`` (never the test split for a search!).
    """
    run = RunDir(trial_dir)
    if metric.startswith("history:"):
        hist = run.read_history()
        how, _, path = metric[len("history:"):].partition(".")
        epochs = hist.get("epochs") or []
        if not epochs:
            raise KeyError(f"no epochs in {run.history_path}")
        if how == "best":
            best = (hist.get("best") or {}).get("epoch")
            entry = [e for e in epochs if e.get("epoch") == best] if best is not None else []
            if not entry:
                raise KeyError(f"best epoch {best!r} not in {run.history_path}")
            return float(get_metric(entry[0], path))
        if how == "min":
            return float(min(get_metric(e, path) for e in epochs))
        raise ValueError(f"bad history metric {metric!r} (history:best.<path> | history:min.<path>)")
    fname, sep, path = metric.partition(":")
    if not sep:
        return float(get_metric(run.read_metrics(), metric))
    return float(get_metric(run.read_json(fname), path))


class SubprocessObjective:
    """Objective that trains ``python -m <module>`` with the trial's (w1, w2) and returns the metric.

    ``flagfile``: the trainer flagfile (the model, data, epochs, ...). ``extra_flags``: more
    trainer flags (appended after the flagfile so they override it). The trial's flags
    ``--aqcl_w1 --aqcl_w2 --model_dir`` come last. stdout/stderr go to ``trial_dir/train.log``.
    ``metric``: see :func:`read_objective` (default: validation logloss of the kept epoch).
    A run already completed (a retried trial whose training had finished) is not retrained.
    """

    def __init__(self, module: str, flagfile: Optional[str] = None,
                 extra_flags: Sequence[str] = (), metric: str = BEST_VAL_LOGLOSS,
                 python: str = sys.executable, timeout_s: Optional[float] = None,
                 w1_flag: str = "aqcl_w1", w2_flag: str = "aqcl_w2"):
        self.module, self.flagfile, self.extra_flags = module, flagfile, list(extra_flags)
        self.metric, self.python, self.timeout_s = metric, python, timeout_s
        self.w1_flag, self.w2_flag = w1_flag, w2_flag

    def command(self, params: Dict[str, float], trial_dir: str) -> List[str]:
        cmd = [self.python, "-m", self.module]
        if self.flagfile:
            cmd.append(f"--flagfile={self.flagfile}")
        cmd += self.extra_flags
        cmd += [f"--{self.w1_flag}={params['w1']!r}", f"--{self.w2_flag}={params['w2']!r}",
                f"--model_dir={trial_dir}"]
        return cmd

    def __call__(self, params: Dict[str, float], trial_dir: str) -> float:
        if not run_completed(trial_dir):
            os.makedirs(trial_dir, exist_ok=True)
            cmd = self.command(params, trial_dir)
            with open(os.path.join(trial_dir, "train.log"), "a") as log:
                log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
                log.flush()
                rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     timeout=self.timeout_s)
            if rc != 0:
                raise RuntimeError(f"trial training failed (exit {rc}); see "
                                   f"{os.path.join(trial_dir, 'train.log')}")
        value = read_objective(trial_dir, self.metric)
        if not math.isfinite(value):
            raise ValueError(f"non-finite objective {value} in {trial_dir}")
        return value


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry_callback(max_retry: Optional[int]):
    import warnings

    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
        or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        return cls(max_retry=max_retry)


def _root_number(trial) -> int:
    """Number of the first trial of a retry chain (so retries reuse its directory).

    Reads the ``failed_trial`` system attribute set by Optuna's retry callback, from a
    ``FrozenTrial`` or from a live ``Trial``.
    """
    attrs = getattr(trial, "system_attrs", None)
    if attrs is None:
        attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    n = attrs.get("failed_trial")
    return trial.number if n is None else int(n)


def make_storage(url: str, heartbeat_s: Optional[int] = 60, max_retry: int = 2):
    import optuna

    if not url.startswith(("sqlite", "postgresql", "mysql", "oracle", "mssql")):
        return url  # e.g. an in-memory study (url "") or a JournalStorage object passed through
    kw = {}
    if heartbeat_s:
        kw = dict(heartbeat_interval=int(heartbeat_s), grace_period=int(3 * heartbeat_s),
                  heartbeat_stale_trial_callback=_retry_callback(max_retry))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kw)


def _fail_dead_local_trials(study, max_retry: int) -> int:
    """Fail (and re-enqueue) RUNNING trials started on this host by processes that are gone."""
    from optuna.trial import TrialState

    retry = _retry_callback(max_retry)
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and pid is not None and pid != os.getpid() \
                and not _pid_alive(int(pid)):
            try:
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except Exception:  # another worker finished/failed it first
                continue
            retry(study, study._storage.get_trial(t._trial_id))
            n += 1
    return n


def run_search(objective: ObjectiveFn, *, out_dir: str, n_trials: int,
               storage: Optional[str] = None, study_name: str = "aqcl_alpha",
               w1_range: Tuple[float, float] = (0.01, 10.0),
               w2_range: Tuple[float, float] = (0.1, 10.0), seed: int = 0,
               n_startup_trials: int = 5, max_failures: int = 5, heartbeat_s: Optional[int] = 60,
               max_retry: int = 2, mean_history_length: Optional[float] = None,
               activeness_thresholds: Optional[Sequence[float]] = None, write_outputs: bool = True,
               log: Callable[[str], None] = print):
    """Run (or resume) the TPE search until ``n_trials`` trials are COMPLETE; returns the study.

    ``objective(params, trial_dir) -> float`` (minimised; ``params = {"w1": .., "w2": ..}``);
    ``trial_dir = out_dir/trials/trial_NNN`` (NNN = the trial number, or the number of the trial
    a retry re-runs). ``storage``: SQLAlchemy URL, default ``sqlite:///out_dir/search.db``.
    Stops early after ``max_failures`` failed trials in this call.
    """
    import optuna
    from optuna.trial import TrialState

    os.makedirs(out_dir, exist_ok=True)
    if storage is None:
        storage = "sqlite:///" + os.path.abspath(os.path.join(out_dir, "search.db"))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    study = optuna.create_study(study_name=study_name,
                                storage=make_storage(storage, heartbeat_s, max_retry),
                                sampler=sampler, direction="minimize", load_if_exists=True)
    study.set_user_attr("w1_range", list(w1_range))
    study.set_user_attr("w2_range", list(w2_range))
    _fail_dead_local_trials(study, max_retry)

    def _objective(trial):
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        w1 = trial.suggest_float("w1", w1_range[0], w1_range[1], log=True)
        w2 = trial.suggest_float("w2", w2_range[0], w2_range[1], log=True)
        trial_dir = os.path.join(out_dir, TRIALS_SUBDIR, f"trial_{_root_number(trial):03d}")
        trial.set_user_attr("trial_dir", trial_dir)
        t0 = time.time()
        value = objective({"w1": w1, "w2": w2}, trial_dir)
        trial.set_user_attr("seconds", round(time.time() - t0, 1))
        return value

    failures = 0
    while True:
        trials = study.get_trials(deepcopy=False)
        n_done = sum(t.state == TrialState.COMPLETE for t in trials)
        n_running = sum(t.state == TrialState.RUNNING for t in trials)
        if n_done >= n_trials:
            break
        if n_done + n_running >= n_trials:
            # the rest of the budget is in flight on other workers (or stale: heartbeat fails it)
            optuna.storages.fail_stale_trials(study)
            _fail_dead_local_trials(study, max_retry)
            time.sleep(max(1, (heartbeat_s or 10) // 2))
            continue
        # A sampler seeded by the trial count: a process that joins a study (a resumed search,
        # a second worker on the same storage) would otherwise replay the start-up draws of the
        # first process with the same --seed, i.e. re-run trials already made; a fresh
        # single-process search stays reproducible (same seed, same sequence).
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(trials),
                                                   n_startup_trials=n_startup_trials)
        before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        study.optimize(_objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        after = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        if after > before:
            failures += 1
            log(f"[aqcl.search] trial failed ({failures}/{max_failures})")
            if failures >= max_failures:
                log("[aqcl.search] too many failed trials, stopping")
                break
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if write_outputs:  # after every trial, so a long search can be watched / used early
            write_search_outputs(study, out_dir, mean_history_length=mean_history_length,
                                 activeness_thresholds=activeness_thresholds)
        if done:
            b = min(done, key=lambda t: t.value)
            log(f"[aqcl.search] {len(done)}/{n_trials} complete; best #{b.number}: "
                f"w1={b.params['w1']:.4g} w2={b.params['w2']:.4g} value={b.value:.6f}")
    if write_outputs:
        write_search_outputs(study, out_dir, mean_history_length=mean_history_length,
                             activeness_thresholds=activeness_thresholds)
    return study


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def trial_rows(study) -> List[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "w1": t.params.get("w1"),
            "w2": t.params.get("w2"),
            "value": t.value,
            "retry_of": _root_number(t) if _root_number(t) != t.number else None,
            "seconds": t.user_attrs.get("seconds"),
            "trial_dir": t.user_attrs.get("trial_dir"),
        })
    return rows


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_search_outputs(study, out_dir: str, mean_history_length: Optional[float] = None,
                         activeness_thresholds: Optional[Sequence[float]] = None) -> Optional[dict]:
    """Write trials.csv/.md always, best.json and alpha_curve.png once a trial is COMPLETE."""
    rows = trial_rows(study)
    cols = ["number", "state", "w1", "w2", "value", "retry_of", "seconds", "trial_dir"]
    with open(os.path.join(out_dir, TABLE_CSV), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    done = sorted((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: r["value"])
    with open(os.path.join(out_dir, TABLE_MD), "w") as fh:
        fh.write(f"# AQCL alpha search: study `{study.study_name}`\n\n")
        fh.write("alpha = R(L) = exp(-w1 (L/L_bar)^w2) (Eq. 6); objective = validation logloss "
                 "(Eq. 7), lower is better. Sorted by value; failed/running trials last.\n\n")
        fh.write("| " + " | ".join(cols[:-1]) + " |\n|" + "---|" * (len(cols) - 1) + "\n")
        rest = [r for r in rows if r["state"] != "COMPLETE"]
        for r in done + rest:
            fh.write("| " + " | ".join(_fmt(r[c]) for c in cols[:-1]) + " |\n")
    if not done:
        return None
    best_t = study.best_trial
    best = {
        "w1": best_t.params["w1"], "w2": best_t.params["w2"], "value": best_t.value,
        "objective": "validation logloss (AQCL Eq. 7)",
        "trial": best_t.number, "trial_dir": best_t.user_attrs.get("trial_dir"),
        "n_complete": len(done), "n_trials_total": len(rows), "study_name": study.study_name,
        "alpha_at": {f"{r:g}": float(alpha_curve(r, best_t.params["w1"], best_t.params["w2"]))
                     for r in (0.0, 0.5, 1.0, 2.0, 4.0)},
    }
    if mean_history_length:
        best["mean_history_length"] = mean_history_length
    with open(os.path.join(out_dir, BEST_FILENAME), "w") as fh:
        json.dump(best, fh, indent=1, sort_keys=True)
    plot_alpha_curve(os.path.join(out_dir, CURVE_FILENAME), best["w1"], best["w2"],
                     others=[(r["w1"], r["w2"]) for r in done[1:6]],
                     mean_history_length=mean_history_length,
                     activeness_thresholds=activeness_thresholds,
                     title=f"{study.study_name}: best of {len(done)} trials "
                           f"(val logloss {best['value']:.4f})")
    return best


def plot_alpha_curve(path: str, w1: float, w2: float, others: Sequence[Tuple[float, float]] = (),
                     mean_history_length: Optional[float] = None,
                     activeness_thresholds: Optional[Sequence[float]] = None,
                     title: str = "", x_max: float = 3.0) -> str:
    """PNG of R(L) vs L/L_bar (like AQCL Fig. 4 / Fig. 5 left); ``others`` drawn in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.linspace(0.0, x_max, 301)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for i, (a, b) in enumerate(others):
        ax.plot(x, alpha_curve(x, a, b), color="0.7", lw=1,
                label="next best trials" if i == 0 else None)
    ax.plot(x, alpha_curve(x, w1, w2), color="C0", lw=2.2,
            label=f"best: w1={w1:.3g}, w2={w2:.3g}")
    if mean_history_length and activeness_thresholds:
        for t, name in zip(activeness_thresholds, ("t1 (slightly-active)", "t2 (highly-active)")):
            ax.axvline(float(t) / mean_history_length, color="C3", ls=":", lw=1)
            ax.text(float(t) / mean_history_length, 1.02, name, fontsize=7, color="C3",
                    rotation=0, ha="center", transform=ax.get_xaxis_transform())
    ax.set_xlabel(r"$L_j/\bar{L}$" + (f"  ($\\bar{{L}}$={mean_history_length:.2f})"
                                      if mean_history_length else ""))
    ax.set_ylabel(r"$\alpha = R(L_j)$")
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=8, pad=14)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _define_flags():
    from absl import flags

    flags.DEFINE_string("model_dir", None, "Search directory (study DB, trials, best.json, plot).")
    flags.DEFINE_string("storage", None, "Optuna storage URL; default sqlite:///MODEL_DIR/search.db. "
                        "Any SQLAlchemy RDB URL shares one study between machines.")
    flags.DEFINE_string("study_name", "aqcl_alpha", "Optuna study name.")
    flags.DEFINE_integer("n_trials", 20, "Budget: number of COMPLETE trials (resumed ones count).")
    flags.DEFINE_list("w1_range", ["0.01", "10"], "Log-uniform range of w1 (> 0).")
    flags.DEFINE_list("w2_range", ["0.1", "10"], "Log-uniform range of w2 (> 0).")
    flags.DEFINE_integer("seed", 0, "TPE sampler seed.")
    flags.DEFINE_integer("n_startup_trials", 5, "Random trials before TPE kicks in.")
    flags.DEFINE_integer("max_failures", 5, "Stop after this many failed trials in one call.")
    flags.DEFINE_integer("heartbeat_s", 60, "Trial heartbeat (s); 0 disables stale-trial retry.")
    flags.DEFINE_string("train_flags", None, "Trainer flagfile of every trial (model, data, ...).")
    flags.DEFINE_multi_string("train_flag", [], "Extra trainer flag(s), e.g. --train_flag=--epochs=3.")
    flags.DEFINE_string("trainer_module", None, "Module run as `python -m` for each trial (the "
                        "trainer of the --train_flags file); required: aqcl names no trainer.")
    flags.DEFINE_string("objective_metric", BEST_VAL_LOGLOSS,
                        "Minimised metric of a trial run (aqcl.search.read_objective): default the "
                        "validation logloss of the kept (best val AUC) epoch from history.json.")
    flags.DEFINE_float("trial_timeout_s", None, "Kill a trial's training after this many seconds.")
    flags.DEFINE_string("data_dir", None, "Optional: read stats.json (L_bar, activeness "
                        "thresholds) to annotate the plot. Default: --data_dir of --train_flags.")
    flags.mark_flag_as_required("model_dir")
    flags.mark_flag_as_required("trainer_module")


def _flag_from_flagfile(path: Optional[str], name: str) -> Optional[str]:
    """Value of ``--name=`` in a flagfile (last one wins; nested --flagfile followed)."""
    if not path or not os.path.exists(path):
        return None
    val = None
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("--flagfile="):
                v = _flag_from_flagfile(line.split("=", 1)[1], name)
                val = v if v is not None else val
            elif line.startswith(f"--{name}="):
                val = line.split("=", 1)[1]
    return val


def main(argv):
    from absl import flags

    FLAGS = flags.FLAGS
    extra = list(FLAGS.train_flag) + list(argv[1:])
    objective = SubprocessObjective(module=FLAGS.trainer_module, flagfile=FLAGS.train_flags,
                                    extra_flags=extra, metric=FLAGS.objective_metric,
                                    timeout_s=FLAGS.trial_timeout_s)
    data_dir = FLAGS.data_dir
    for f in reversed(extra):
        if f.startswith("--data_dir=") and not data_dir:
            data_dir = f.split("=", 1)[1]
    data_dir = data_dir or _flag_from_flagfile(FLAGS.train_flags, "data_dir")
    l_bar = thresholds = None
    if data_dir and os.path.exists(os.path.join(data_dir, "stats.json")):
        with open(os.path.join(data_dir, "stats.json")) as fh:
            st = json.load(fh)
        l_bar, thresholds = st.get("mean_history_length"), st.get("activeness_thresholds")
    study = run_search(
        objective, out_dir=FLAGS.model_dir, n_trials=FLAGS.n_trials, storage=FLAGS.storage,
        study_name=FLAGS.study_name, w1_range=tuple(float(v) for v in FLAGS.w1_range),
        w2_range=tuple(float(v) for v in FLAGS.w2_range), seed=FLAGS.seed,
        n_startup_trials=FLAGS.n_startup_trials, max_failures=FLAGS.max_failures,
        heartbeat_s=FLAGS.heartbeat_s or None, mean_history_length=l_bar,
        activeness_thresholds=thresholds)
    path = os.path.join(FLAGS.model_dir, BEST_FILENAME)
    if os.path.exists(path):
        with open(path) as fh:
            print(fh.read())
    else:
        print(f"[aqcl.search] no complete trial in study {study.study_name}")
        return 1
    return 0


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
