"""Training throughput of every ``--model`` (+ aux-loss variants) and the aux-loss overheads.

    python -m benchmarks.train --data_dir=out/bench/data [--models=all] [--batch_size=1024]
        [--epochs=6] [--steps_per_epoch=10] [--warmup_epochs=1] [--optimizer=adagrad]
        [--jit_compile] [--steps_per_execution=1] [--json=PATH]

Every configuration is trained in its own subprocess (``--worker``), inside ONE long ``fit()``
(``warmup_epochs + epochs`` epochs of ``steps_per_epoch`` steps) on the trainer's own input
(``ctrcore.data.make_dataset``: shuffled, repeated, parsed after batching) and the trainer's own
model/optimizer construction (``ctrcore.trainer.build_compiled``). A callback takes a
``perf_counter`` timestamp at the end of every batch (eager ``tf.function`` calls are synchronous,
so consecutive timestamps bracket one step). The warm-up epochs (tracing, first allocations) are
dropped; reported are the median step time, the median of the per-epoch mean step times, p10 /
p90 of the step times, and a ``bimodal`` flag when p90 / p10 > 1.6 (PITFALLS: a 2x-slower mode
with one core idle; ``cpu_util`` = process CPU seconds / wall seconds over the timed epochs tells
it apart: ~2.0 = both cores busy). That mode is the hypervisor's: ``steal_frac`` (the machine's
``/proc/stat`` steal share over the timed epochs) is 0.13-0.26 in the stalled workers and
0.03-0.06 in the others (session 12), so a configuration measured while the host stole more than
``--max_steal`` (default 8 %) is measured again, up to ``--steal_retries`` times, and the
least-stolen attempt is kept; the JSON lists the others under ``discarded``.
``thread_cpu_s_per_step`` gives each thread's CPU per step.

Aux-loss overheads (ratios of median step times measured in the same run):
``ccn`` = CCN / TAN, ``aqcl`` = DIN+AQCL / DIN, ``ccn_aqcl`` = CCN+AQCL / TAN.
With ``--rounds=2`` the configurations of the three ratios are measured twice in alternating
order and the ratios use the per-configuration median over rounds (load drift cancels better).
``--baseline_root=DIR`` (a frozen copy of another tree, e.g. ``git archive`` of the commit before
a change) runs every configuration from that tree too, right before or after this tree's (in
alternating order): the JSON then holds the baseline's results under ``"baseline"`` and
``after_over_baseline`` per configuration (issue 15 item 3, benchmarks/RESULTS.md section 2).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_MODELS = ("wide_deep", "deepfm", "din", "sim", "dihn", "dian", "tan_base", "tan", "ccn_notsi",
              "ccn_no_attraction", "ccn_no_repulsion", "ccn")
#: (run key, model, aux_losses, loss-param overrides): the aux-loss variants of the overhead
#: ratios; ``_vN`` = AQCL's contrastive term on N rows of the batch (``--aqcl_view_rows``)
EXTRA = (("din+aqcl", "din", "aqcl", {}), ("ccn+aqcl", "ccn", "aqcl", {}),
         ("din+aqcl_v256", "din", "aqcl", {"aqcl_view_rows": 256}),
         ("din+aqcl_v128", "din", "aqcl", {"aqcl_view_rows": 128}))
QUICK_MODELS = ("wide_deep", "din", "tan", "ccn")
RATIOS = {"ccn": ("ccn", "tan"), "aqcl": ("din+aqcl", "din"), "ccn_aqcl": ("ccn+aqcl", "tan"),
          "aqcl_view_rows_256": ("din+aqcl_v256", "din"),
          "aqcl_view_rows_128": ("din+aqcl_v128", "din")}
#: the targets of the ratios (issue 6: every aux loss <= 1.15; issue 15 item 3: DIN+AQCL <= 2.3,
#: its second view being a whole backbone forward and backward)
TARGETS = {"aqcl": 2.3}


# ---------------------------------------------------------------------------------------------
# shared helpers (used by the other benchmarks too)
# ---------------------------------------------------------------------------------------------
def machine_info() -> Dict[str, object]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    mem = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    info = {"cpu_model": cpu, "cores": os.cpu_count(), "memory_gib": mem,
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        import importlib.metadata as md
        for pkg in ("tensorflow", "tf-keras", "tensorflow-recommenders", "apache-beam", "deepctr"):
            try:
                info[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                info[pkg] = None
    except ImportError:
        pass
    return info


def load_average() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_cpu_ticks() -> Optional[List[int]]:
    """The machine-wide ``cpu`` line of ``/proc/stat`` (user, nice, system, idle, iowait, irq,
    softirq, steal, in clock ticks; None off Linux)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def steal_fraction(t0: Optional[List[int]], t1: Optional[List[int]]) -> Optional[float]:
    """Share of the machine's CPU time between two :func:`machine_cpu_ticks` readings that the
    hypervisor gave to other guests (``steal``). On a shared VM a worker that runs while the host
    steals a core is timed on ~1 core (the "stalled mode", benchmarks/RESULTS.md section 11)."""
    if t0 is None or t1 is None or len(t0) < 8 or len(t1) < 8:
        return None
    d = [b - a for a, b in zip(t0, t1)]
    total = sum(d[:8])
    return d[7] / total if total > 0 else None


def thread_cpu_seconds() -> Dict[str, float]:
    """CPU seconds (user + system) of each of this process's threads, keyed ``name/tid``
    (``/proc/self/task/*/stat``; Linux only, else {}). A diagnostic of the stalled mode
    (benchmarks/RESULTS.md section 11): how many threads share a step's CPU. Most of
    TensorFlow's threads keep the name ``python``; the Eigen pool's are ``tf_Compute``."""
    out: Dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def summarize_steps(step_s: List[float], epoch_means: List[float]) -> Dict[str, float]:
    s = sorted(step_s)
    q = lambda p: s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]
    p10, p50, p90 = q(0.1), statistics.median(s), q(0.9)
    return {"step_s_median": p50, "step_s_p10": p10, "step_s_p90": p90,
            "epoch_mean_step_s_median": statistics.median(epoch_means),
            "epoch_mean_step_s": epoch_means, "bimodal": bool(p90 / p10 > 1.6), "n_steps": len(s)}


def run_worker(module: str, args: List[str], timeout: int = 1200, root: str = ROOT) -> dict:
    """Run ``python -m module --worker args`` (the code of the tree ``root``, default this one)
    and return the JSON of its last stdout line."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", module, "--worker", *args],
                       cwd=os.getcwd() if root == ROOT else root, env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {' '.join(args)} failed (rc {p.returncode}):\n"
                           f"{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return json.loads(lines[-1])


def run_steady(a, args: List[str], label: str, root: str = ROOT,
               discarded: Optional[List[dict]] = None, module: str = "benchmarks.train") -> dict:
    """:func:`run_worker` of ``module`` (a worker that reports ``steal_frac``, as
    :func:`time_fit` does), measured again (up to ``--steal_retries``
    times) while the hypervisor stole more than ``--max_steal`` of the machine over the timed
    epochs (``steal_frac``): returns the least-stolen attempt (its ``attempts`` = how many ran)
    and appends the others, labelled, to ``discarded``, so that the JSON keeps every measurement."""
    tries = []
    for _ in range(1 + max(0, a.steal_retries)):
        r = run_worker(module, args, root=root)
        tries.append(r)
        st = r.get("steal_frac")
        if st is None or st <= a.max_steal:
            break
        print(f"{label}: the host stole {100 * st:.0f}% of the machine (> --max_steal "
              f"{100 * a.max_steal:.0f}%), {1e3 * r['step_s_median']:.1f} ms/step: measured again",
              flush=True)
    best = min(tries, key=lambda r: r.get("steal_frac") or 0.0)
    best["attempts"] = len(tries)
    if discarded is not None:
        discarded.extend(dict(label=label, steal_frac=r.get("steal_frac"), cpu_util=r.get("cpu_util"),
                              step_s_median=r.get("step_s_median"),
                              cpu_s_per_step_median=r.get("cpu_s_per_step_median"))
                         for r in tries if r is not best)
    return best


# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------
def make_config(data_dir: str, model: str, aux: str = "", batch_size: int = 1024,
                optimizer: str = "adagrad", jit_compile: bool = False, steps_per_execution: int = 1,
                steps_per_epoch: int = 10, epochs: int = 7, **overrides):
    from ctrcore.config import TrainConfig

    return TrainConfig(data_dir=data_dir, model_dir="", model=model,
                       aux_losses=[a for a in aux.split(",") if a], batch_size=batch_size,
                       optimizer=optimizer, jit_compile=jit_compile,
                       steps_per_execution=steps_per_execution, steps_per_epoch=steps_per_epoch,
                       epochs=epochs, verbose=0, **overrides)


class StepTimer:
    """Keras callback: a timestamp at the end of every batch, grouped by epoch."""

    def __new__(cls, *a, **kw):  # a keras Callback created lazily (keras imported in the worker)
        import tf_keras as keras

        class _StepTimer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.epochs: List[List[float]] = []
                self.cpu: List[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self.epochs.append([time.perf_counter()])
                self.cpu.append(cpu_seconds())

            def on_train_batch_end(self, batch, logs=None):
                self.epochs[-1].append(time.perf_counter())

            def on_epoch_end(self, epoch, logs=None):
                self.cpu[-1] = cpu_seconds() - self.cpu[-1]

        return _StepTimer()


def time_fit(model, dataset, epochs: int, warmup_epochs: int, steps_per_epoch: int,
             steps_per_execution: int = 1) -> dict:
    """One long fit(); per-step times of the epochs after the warm-up ones."""
    timer = StepTimer()
    threads0: Dict[str, float] = {}  # thread CPU at the first timed epoch's start
    ticks0: list = []  # and the machine's /proc/stat

    import tf_keras as keras

    class _ThreadMark(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == warmup_epochs:
                threads0.update(thread_cpu_seconds())
                ticks0.append(machine_cpu_ticks())

    t0 = time.perf_counter()
    model.fit(dataset, epochs=warmup_epochs + epochs, steps_per_epoch=steps_per_epoch,
              callbacks=[_ThreadMark(), timer], verbose=0)
    total = time.perf_counter() - t0
    threads1, ticks1 = thread_cpu_seconds(), machine_cpu_ticks()
    steps, means, cpu, wall, cpu_per_step = [], [], 0.0, 0.0, []
    for ts, c in list(zip(timer.epochs, timer.cpu))[warmup_epochs:]:
        d = [(b - a) / steps_per_execution for a, b in zip(ts[:-1], ts[1:])]
        cpu_per_step.append(c / (len(d) * steps_per_execution))
        d = d[1:] if len(d) > 1 else d  # the first batch of an epoch carries the epoch start
        steps += d
        means.append(statistics.mean(d))
        wall += ts[-1] - ts[0]
        cpu += c
    out = summarize_steps(steps, means)
    # CPU seconds per step (process user+sys, all threads): robust to other processes' load
    out["cpu_s_per_step_median"] = statistics.median(cpu_per_step)
    out["fit_seconds"] = total
    out["warmup_seconds"] = sum(ts[-1] - ts[0] for ts in timer.epochs[:warmup_epochs])
    out["cpu_util"] = cpu / wall if wall else None
    # the hypervisor's share of the machine over the timed epochs
    out["steal_frac"] = steal_fraction(ticks0[0] if ticks0 else None, ticks1)
    n_timed = epochs * steps_per_epoch * steps_per_execution
    # per-step CPU seconds of each thread over the timed epochs, busiest first (0.5 ms and up)
    per = {k: (v - threads0.get(k, 0.0)) / n_timed for k, v in threads1.items()}
    out["thread_cpu_s_per_step"] = {k: round(v, 5) for k, v in sorted(per.items(), key=lambda kv: -kv[1])
                                    if v >= 5e-4}
    return out


def build_model(args, model_name: str, aux: str, loss_params: Optional[dict], train_input: str,
                spec, stats, setup_runtime: bool = True):
    """``(config, compiled model)`` of one configuration as the trainer builds it
    (``trainer.build_compiled``, the loss flags ``ccn.models.default_loss_params()`` updated by
    ``loss_params``); ``setup_runtime`` once per process."""
    from ccn import models
    from ctrcore import trainer

    cfg = make_config(args.data_dir, model_name, aux, args.batch_size, args.optimizer,
                      args.jit_compile, args.steps_per_execution, args.steps_per_epoch,
                      args.epochs, lookup_in_input=bool(args.lookup_in_input), train_input=train_input)
    if setup_runtime:
        trainer.setup_runtime(cfg)
    lp = models.default_loss_params()
    lp.update(loss_params or {})
    return cfg, trainer.build_compiled(cfg, models.model_factory(cfg, lp), spec, stats)


def worker(args) -> dict:
    import tensorflow as tf

    from ctrcore import schema, trainer

    spec, stats = schema.load_spec(args.data_dir), schema.load_stats(args.data_dir)
    cfg, model = build_model(args, args.model, args.aux, json.loads(args.loss_params or "{}"),
                             args.train_input, spec, stats)
    ds = trainer.make_train_input(cfg, spec, model)  # exactly the trainer's input
    load0 = load_average()
    res = time_fit(model, ds, args.epochs, args.warmup_epochs, args.steps_per_epoch,
                   args.steps_per_execution)
    res.update(model=args.model, aux=args.aux, batch_size=args.batch_size, optimizer=args.optimizer,
               jit_compile=args.jit_compile, steps_per_execution=args.steps_per_execution,
               loss_params=json.loads(args.loss_params or "{}"), lookup_in_input=bool(args.lookup_in_input),
               examples_per_second=args.batch_size / res["step_s_median"],
               load_average_start=load0, load_average_end=load_average(),
               trainable_parameters=int(sum(tf.size(v).numpy() for v in model.trainable_variables)),
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return res


def ab_worker(args, variants: List[tuple]) -> dict:
    """The in-process A/B worker (``--compare_inputs --in_process``, ``--in_process``): each
    variant ``(label, model, aux, loss-param overrides, train_input)`` gets its model's compiled
    train step (``make_train_function``; variants of the same model and losses share ONE model
    and step, e.g. the memory and ids inputs) and its input (the trainer's own
    ``make_train_input``), and all run in this one process in alternating blocks of
    ``steps_per_epoch`` steps (the order reversed every other block): ``warmup_epochs`` untimed
    blocks each, then ``epochs`` timed blocks each. Same process, thread pools and data, so the
    worker-to-worker spread of separate processes (10-20 % on this VM) cancels out of a ratio.
    Per variant (``variants[label]``): median step time (the first step of each block dropped),
    CPU seconds per step (process), examples per second, cpu_util; ``steal_frac`` over the whole
    timed part. An idle input's prefetch buffer fills while another is timed (a few batches per
    block, under 1 % of a block's input work here)."""
    import dataclasses

    import tensorflow as tf

    from ctrcore import schema, trainer

    spec, stats = schema.load_spec(args.data_dir), schema.load_stats(args.data_dir)
    built: Dict[str, tuple] = {}  # (model, aux, loss params) -> (config, model, train step)
    its, steps_fn = {}, {}
    for label, model_name, aux, lp_over, train_input in variants:
        key = json.dumps([model_name, aux, lp_over], sort_keys=True)
        if key not in built:
            cfg, m = build_model(args, model_name, aux, lp_over, train_input, spec, stats,
                                 setup_runtime=not built)
            built[key] = (cfg, m, m.make_train_function())
        cfg, m, fn = built[key]
        its[label] = iter(trainer.make_train_input(dataclasses.replace(cfg, train_input=train_input), spec, m))
        steps_fn[label] = fn

    def block(label):
        """One block: per-step wall times, CPU seconds, wall seconds."""
        c0, times = cpu_seconds(), [time.perf_counter()]
        for _ in range(args.steps_per_epoch):
            logs = steps_fn[label](its[label])
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, logs)  # done
            times.append(time.perf_counter())
        return [b - a for a, b in zip(times[:-1], times[1:])], cpu_seconds() - c0, times[-1] - times[0]

    labels = [v[0] for v in variants]
    for _ in range(max(1, args.warmup_epochs)):  # tracing, first allocations, shuffle buffers
        for lab in labels:
            block(lab)
    steps = {lab: [] for lab in labels}
    cpu = {lab: [] for lab in labels}
    busy = {lab: [0.0, 0.0] for lab in labels}  # CPU and wall seconds of the timed blocks
    ticks0, load0 = machine_cpu_ticks(), load_average()
    for b in range(args.epochs):
        for lab in (labels if b % 2 == 0 else labels[::-1]):
            d, c, w = block(lab)
            steps[lab] += d[1:]  # the first step of a block waits for the switch
            cpu[lab].append(c / len(d))
            busy[lab][0] += c
            busy[lab][1] += w
    steal = steal_fraction(ticks0, machine_cpu_ticks())
    out = {"batch_size": args.batch_size, "variants": {}, "steal_frac": steal,
           "load_average_start": load0, "load_average_end": load_average()}
    for (lab, model_name, aux, lp_over, train_input) in variants:
        med = statistics.median(steps[lab])
        out["variants"][lab] = {
            "model": model_name, "aux": aux, "loss_params": lp_over or {}, "train_input": train_input,
            "step_s_median": med, "cpu_s_per_step_median": statistics.median(cpu[lab]),
            "examples_per_second": args.batch_size / med, "n_steps": len(steps[lab]),
            "cpu_util": busy[lab][0] / max(1e-9, busy[lab][1]), "steal_frac": steal,
            "load_average_start": load0}
    # run_steady's fields: the first variant's (the block order alternates, so either will do)
    out["step_s_median"] = out["variants"][labels[0]]["step_s_median"]
    out["cpu_util"] = out["variants"][labels[0]]["cpu_util"]
    return out


def _worker_variants(a) -> List[tuple]:
    """The worker's A/B variants from ``--ab_inputs`` (one model, several inputs) or
    ``--ab_keys`` (several run keys of :func:`configurations`, ``--train_input`` each)."""
    if a.ab_inputs:
        lp = json.loads(a.loss_params or "{}")
        return [(m, a.model, a.aux, lp, m) for m in a.ab_inputs.split(",") if m]
    confs = {key: (model, aux, lp) for key, model, aux, lp in configurations(a.ab_keys, False)}
    return [(k, *confs[k], a.train_input) for k in a.ab_keys.split(",") if k]


def pieces(a) -> dict:
    """CPU time per forward+backward (``CTRModel._grads``, no optimizer) of the same TAN backbone
    with no aux loss, with CCN, with AQCL, with both, on raw string features and on ids looked
    up beforehand (separates the in-step StringLookup cost). Batch ``--batch_size``."""
    import tensorflow as tf

    from ccn import models
    from ctrcore import schema
    from ctrcore.backbones import build_backbone
    from ctrcore.data import make_dataset
    from ctrcore.model import CTRModel

    spec, stats = schema.load_spec(a.data_dir), schema.load_stats(a.data_dir)
    cfg = make_config(a.data_dir, "ccn", "")
    bb = build_backbone("tan", spec, **cfg.backbone_hparams())
    lp = models.default_loss_params()
    mdef = models.MODELS["ccn"]
    variants = {"tan": [], "tan+ccn": ["ccn"], "tan+aqcl": ["aqcl"], "tan+ccn+aqcl": ["ccn", "aqcl"]}
    batch = next(iter(make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=False, repeat=True)))
    ids = bb.lookup(batch)
    out = {}
    for name, aux in variants.items():
        m = CTRModel(spec, bb, aux_losses=[models.make_aux_loss(x, mdef, lp, stats) for x in aux])
        for inp_name, inp in (("strings", batch), ("ids", ids)):
            f = tf.function(m._grads)
            f(inp)
            f(inp)
            c0, t0 = cpu_seconds(), time.perf_counter()
            for _ in range(a.pieces_reps):
                f(inp)
            out[f"{name}/{inp_name}"] = {"cpu_s": (cpu_seconds() - c0) / a.pieces_reps,
                                         "wall_s": (time.perf_counter() - t0) / a.pieces_reps}
            print(f"{name:14s} {inp_name:7s} cpu {1e3 * out[f'{name}/{inp_name}']['cpu_s']:7.1f} ms "
                  f"wall {1e3 * out[f'{name}/{inp_name}']['wall_s']:7.1f} ms", file=sys.stderr, flush=True)
    out["load_average"] = load_average()
    return out


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def configurations(models_arg: str, quick: bool):
    """``[(run key, model, aux, loss-param overrides)]``: the models, then :data:`EXTRA`."""
    names = QUICK_MODELS if quick else ALL_MODELS
    if models_arg and models_arg != "all":
        names = [m for m in models_arg.split(",") if "+" not in m]
        extra = [e for e in EXTRA if e[0] in models_arg.split(",")]
    else:
        extra = list(EXTRA)
    return [(m, m, "", {}) for m in names] + extra


def worker_args(a, model, aux, loss_params=None, **over) -> List[str]:
    o = dict(data_dir=a.data_dir, model=model, aux=aux, batch_size=a.batch_size, epochs=a.epochs,
             warmup_epochs=a.warmup_epochs, steps_per_epoch=a.steps_per_epoch,
             optimizer=a.optimizer, steps_per_execution=a.steps_per_execution,
             train_input=a.train_input,
             loss_params=json.dumps(loss_params or {}, separators=(",", ":")))
    o.update(over)
    args = [f"--{k}={v}" for k, v in o.items()]
    if over.get("jit_compile", a.jit_compile):
        args.append("--jit_compile")
    return args


def run(a) -> dict:
    """The configurations, ``--rounds`` times (alternate rounds in reverse order, ratio pairs
    only). With ``--baseline_root`` every configuration runs twice in a row, from that tree and
    from this one (in alternating order), and the result holds both: the baseline's under
    ``"baseline"``, this tree's at the top level, and ``"after_over_baseline"`` per configuration."""
    if a.baseline_root:
        data_dir = os.path.abspath(a.data_dir)  # the baseline's worker runs in its own tree
        a.data_dir = data_dir
    confs = configurations(a.models, a.quick)
    results: Dict[str, List[dict]] = {}
    base_results: Dict[str, List[dict]] = {}
    errors: Dict[str, str] = {}
    discarded: List[dict] = []  # the measurements taken while the host stole CPU (run_steady)
    order = list(confs)
    ratio_keys = {k for pair in RATIOS.values() for k in pair}
    for rnd in range(a.rounds):
        seq = order if rnd % 2 == 0 else [c for c in reversed(order) if c[0] in ratio_keys]
        for i, (key, model, aux, lp) in enumerate(seq):
            trees = [("", ROOT)]
            if a.baseline_root:
                trees = [("baseline ", os.path.abspath(a.baseline_root)), ("", ROOT)]
                if (rnd + i) % 2:
                    trees.reverse()
            for tag, root in trees:
                try:
                    r = run_steady(a, worker_args(a, model, aux, lp), f"round {rnd} {tag}{key}",
                                   root=root, discarded=discarded)
                except Exception as e:  # record and go on: one broken model must not lose the run
                    print(f"{tag}{key}: FAILED {str(e)[-600:]}", flush=True)
                    errors[tag + key] = str(e)[-3000:]
                    continue
                (base_results if tag else results).setdefault(key, []).append(r)
                _print_run(tag + key, r)
    out = summarise_runs(a, results, errors)
    out.update(max_steal=a.max_steal, discarded=discarded)
    if a.baseline_root:
        base = summarise_runs(a, base_results, {}, "baseline: ")
        out["baseline"] = dict(base, root=os.path.abspath(a.baseline_root))
        out["after_over_baseline"] = {
            k: {"wall": out["step_seconds"][k] / base["step_seconds"][k],
                "cpu": out["cpu_seconds_per_step"][k] / base["cpu_seconds_per_step"][k]}
            for k in out["step_seconds"] if k in base["step_seconds"]}
        for k, v in out["after_over_baseline"].items():
            print(f"this tree / baseline {k:10s} = {v['wall']:.3f} wall, {v['cpu']:.3f} cpu-s", flush=True)
    return out


def aux_in_process(a) -> dict:
    """The aux-loss overheads (:data:`RATIOS` whose two run keys are in ``--models``) measured
    in-process: per ratio and round ONE worker holds both models (e.g. DIN+AQCL and DIN) and
    runs their train steps in alternating blocks (:func:`ab_worker`, the order reversed every
    round). A ratio is the median over rounds of numerator / denominator step time of the same
    worker (and of CPU seconds per step)."""
    keys = {k for k, *_ in configurations(a.models, a.quick)}
    pairs = {name: nd for name, nd in RATIOS.items() if nd[0] in keys and nd[1] in keys}
    if not pairs:
        raise SystemExit(f"--in_process: --models={a.models!r} holds no ratio pair of {dict(RATIOS)}")
    discarded: List[dict] = []
    workers: Dict[str, List[dict]] = {}
    for rnd in range(max(1, a.rounds)):
        for name, (num, den) in pairs.items():
            order = [num, den] if rnd % 2 == 0 else [den, num]
            r = run_steady(a, worker_args(a, num, "", None, ab_keys=",".join(order)),
                           f"round {rnd} {name} in-process", discarded=discarded)
            workers.setdefault(name, []).append(r)
            v = r["variants"]
            print(f"round {rnd} {name:9s} {num} {1e3 * v[num]['step_s_median']:.1f} ms / {den} "
                  f"{1e3 * v[den]['step_s_median']:.1f} ms = {v[num]['step_s_median'] / v[den]['step_s_median']:.3f} "
                  f"wall, {v[num]['cpu_s_per_step_median'] / v[den]['cpu_s_per_step_median']:.3f} cpu-s "
                  f"(steal {100 * (r.get('steal_frac') or 0):.0f}%)", flush=True)
    wall, cpu = {}, {}
    for name, (num, den) in pairs.items():
        ws = workers[name]
        wall[name] = statistics.median(w["variants"][num]["step_s_median"] / w["variants"][den]["step_s_median"]
                                       for w in ws)
        cpu[name] = statistics.median(w["variants"][num]["cpu_s_per_step_median"]
                                      / w["variants"][den]["cpu_s_per_step_median"] for w in ws)
        print(f"aux overhead {name:9s} = {wall[name]:.3f} wall, {cpu[name]:.3f} cpu-s in-process "
              f"({'OK' if wall[name] <= TARGETS.get(name, 1.15) else 'OVER'} target {TARGETS.get(name, 1.15)})",
              flush=True)
    return {"in_process": True, "rounds": max(1, a.rounds), "aux_overhead": wall, "aux_overhead_cpu": cpu,
            "pairs": {n: list(nd) for n, nd in pairs.items()}, "workers": workers,
            "max_steal": a.max_steal, "discarded": discarded}


def _print_run(key: str, r: dict) -> None:
    print(f"{key:18s} {r['examples_per_second']:9.0f} ex/s  step {1e3 * r['step_s_median']:7.1f} ms "
          f"(p10 {1e3 * r['step_s_p10']:.1f}, p90 {1e3 * r['step_s_p90']:.1f}) "
          f"cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms/step cpu_util {r['cpu_util']:.2f} "
          f"steal {100 * (r.get('steal_frac') or 0):.0f}%"
          f"{' BIMODAL' if r['bimodal'] else ''} "
          f"load {r['load_average_start'][0]:.1f}->{r['load_average_end'][0]:.1f}", flush=True)


def summarise_runs(a, results: Dict[str, List[dict]], errors: Dict[str, str], label: str = "") -> dict:
    """Medians over rounds per configuration, and the aux-loss overhead ratios."""
    med = {k: statistics.median(r["step_s_median"] for r in v) for k, v in results.items()}
    cpu = {k: statistics.median(r["cpu_s_per_step_median"] for r in v) for k, v in results.items()}
    eps = {k: a.batch_size / s for k, s in med.items()}
    ratios = {name: med[num] / med[den] for name, (num, den) in RATIOS.items()
              if num in med and den in med}
    cpu_ratios = {name: cpu[num] / cpu[den] for name, (num, den) in RATIOS.items()
                  if num in cpu and den in cpu}
    for name, val in ratios.items():
        num, den = RATIOS[name]
        print(f"{label}aux overhead {name:9s} = step({num}) / step({den}) = {val:.3f} wall, "
              f"{cpu_ratios[name]:.3f} cpu-s ({'OK' if val <= TARGETS.get(name, 1.15) else 'OVER'} "
              f"target {TARGETS.get(name, 1.15)})")
    return {"train_examples_per_second": eps, "step_seconds": med, "cpu_seconds_per_step": cpu,
            "examples_per_cpu_second": {k: a.batch_size / c for k, c in cpu.items()},
            "aux_overhead": ratios, "aux_overhead_cpu": cpu_ratios, "runs": results, "errors": errors,
            "cpu_util": {k: statistics.median(r["cpu_util"] for r in v) for k, v in results.items()},
            "bimodal": sorted(k for k, v in results.items() if any(r["bimodal"] for r in v))}


#: the models of issue 15's streamed / in-memory ratio (run keys of configurations())
STREAMED_MODELS = "ccn,tan,din,din+aqcl"


def compare_inputs(a) -> dict:
    """End-to-end training examples/s of each model with the streamed inputs over the in-memory
    one (``--train_input=memory``: parsed and looked up once), in one run, each in its own
    worker, the inputs alternating per model: ``ids`` (the id shards of
    ``python -m pipelines.id_shards``: int32 id blocks read, shuffled and decoded every epoch; what
    ``auto`` streams when they exist) and ``stream`` (the GZIP string records, looked up every
    epoch). ``streamed_over_memory`` = ex/s with ids / ex/s in memory (issue 15 target >= 0.9),
    ``strings_over_memory`` the same for the string records; each a ratio of the means over
    ``--rounds`` rounds (the order of the inputs reversed every other round). ``--inputs``
    leaves out ``ids`` or ``stream``."""
    from ctrcore import idshards, schema

    modes = tuple(["memory"] + [m for m in ("ids", "stream") if m in a.inputs.split(",")])
    if len(modes) < 2:
        raise SystemExit(f"--inputs={a.inputs!r}: name ids and/or stream")
    problem = idshards.check(a.data_dir, schema.load_spec(a.data_dir), "train")
    if "ids" in modes and problem is not None:
        raise SystemExit(f"--compare_inputs: {problem}")
    runs: Dict[str, Dict[str, List[dict]]] = {}
    discarded: List[dict] = []  # the measurements taken while the host stole CPU (run_steady)
    for rnd in range(max(1, a.rounds)):
        for key, model, aux, lp in configurations(a.models, a.quick):
            if a.in_process:  # one worker per model and round: both inputs in alternating blocks
                order = modes if rnd % 2 == 0 else modes[::-1]
                r = run_steady(a, worker_args(a, model, aux, lp, ab_inputs=",".join(order)),
                               f"round {rnd} {key} in-process", discarded=discarded)
                for mode in modes:
                    runs.setdefault(key, {}).setdefault(mode, []).append(r["variants"][mode])
                    m = r["variants"][mode]
                    print(f"round {rnd} {key:10s} {mode:7s} {m['examples_per_second']:9.0f} ex/s  step "
                          f"{1e3 * m['step_s_median']:7.1f} ms  cpu {1e3 * m['cpu_s_per_step_median']:.0f} "
                          f"ms/step  cpu_util {m['cpu_util']:.2f}  steal {100 * (r.get('steal_frac') or 0):.0f}% "
                          f"(in-process)", flush=True)
                continue
            for mode in (modes if rnd % 2 == 0 else modes[::-1]):  # alternate the order per round
                r = run_steady(a, worker_args(a, model, aux, lp, train_input=mode),
                               f"round {rnd} {key} {mode}", discarded=discarded)
                runs.setdefault(key, {}).setdefault(mode, []).append(r)
                print(f"round {rnd} {key:10s} {mode:7s} {r['examples_per_second']:9.0f} ex/s  step "
                      f"{1e3 * r['step_s_median']:7.1f} ms  cpu {1e3 * r['cpu_s_per_step_median']:.0f} "
                      f"ms/step  cpu_util {r['cpu_util']:.2f}  steal {100 * (r.get('steal_frac') or 0):.0f}%  "
                      f"load {r['load_average_start'][0]:.1f}  "
                      f"threads (CPU-ms/step) " + ", ".join(
                          f"{n.split('/')[0]} {1e3 * c:.1f}" for n, c in list(r.get("thread_cpu_s_per_step", {}).items())[:6]),
                      flush=True)

    def mean(rs, field):
        return sum(r[field] for r in rs) / len(rs)

    def ratios(mode):
        wall = {k: mean(v[mode], "examples_per_second") / mean(v["memory"], "examples_per_second")
                for k, v in runs.items()}
        cpu = {k: mean(v["memory"], "cpu_s_per_step_median") / mean(v[mode], "cpu_s_per_step_median")
               for k, v in runs.items()}
        return wall, cpu

    res = {"inputs": list(modes), "rounds": max(1, a.rounds), "runs": runs, "in_process": bool(a.in_process),
           "max_steal": a.max_steal, "discarded": discarded}
    for mode, key in (("ids", "streamed_over_memory"), ("stream", "strings_over_memory")):
        if mode in modes:
            res[key], res[key + "_cpu"] = ratios(mode)
            for k, r in res[key].items():
                print(f"{mode} / in-memory {k:10s} = {r:.3f} wall, {res[key + '_cpu'][k]:.3f} cpu-s"
                      + (f" ({'OK' if r >= 0.9 else 'BELOW'} target 0.9)" if mode == "ids" else ""),
                      flush=True)
    res["table_md"] = inputs_table(res)
    print(res["table_md"], flush=True)
    return res


def inputs_table(res: dict) -> str:
    """The Markdown table of a ``--compare_inputs`` result (benchmarks/RESULTS.md section 11)."""
    def eps(v, mode):
        return sum(r["examples_per_second"] for r in v[mode]) / len(v[mode])

    cols = [(m, t, key) for m, t, key in (("ids", "id shards", "streamed_over_memory"),
                                          ("stream", "string records", "strings_over_memory"))
            if key in res]
    head = "| model | in memory ex/s | " + "".join(f"{t} ex/s | " for _, t, _ in cols)
    head += "".join(f"{m if m == 'ids' else 'strings'} / memory (wall) | (CPU-s) | " for m, _, _ in cols)
    rows = [head.rstrip(), "|---|" + "---:|" * (1 + 3 * len(cols))]
    for k, v in res["runs"].items():
        cells = [k, f"{eps(v, 'memory'):,.0f}"] + [f"{eps(v, m):,.0f}" for m, _, _ in cols]
        for m, _, key in cols:
            r = f"{res[key][k]:.2f}"
            cells += [f"**{r}**" if m == "ids" else r, f"{res[key + '_cpu'][k]:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--models", default="all", help="comma list of run keys (din, din+aqcl, ...) or all")
    ap.add_argument("--model", default="din")
    ap.add_argument("--aux", default="")
    ap.add_argument("--loss_params", default="", help="worker: JSON overrides of the loss flags (ccn.models.default_loss_params())")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=6, help="timed epochs")
    ap.add_argument("--warmup_epochs", type=int, default=1)
    ap.add_argument("--steps_per_epoch", type=int, default=10)
    ap.add_argument("--optimizer", default="adagrad")
    ap.add_argument("--jit_compile", action="store_true")
    ap.add_argument("--steps_per_execution", type=int, default=1)
    ap.add_argument("--lookup_in_input", type=int, default=1,
                    help="1: string -> id lookups in the tf.data map (trainer default); 0: in the step")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--train_input", default="auto", choices=("auto", "stream", "ids", "cache", "memory"),
                    help="the trainer's --train_input (auto: in memory when it fits)")
    ap.add_argument("--inputs", default="ids,stream",
                    help="--compare_inputs: the streamed inputs beside memory (ids, stream)")
    ap.add_argument("--in_process", action="store_true",
                    help="A/B in ONE worker, in alternating blocks of --steps_per_epoch steps: with "
                         "--compare_inputs both inputs feed the same compiled step (one worker per model "
                         "and round); otherwise each aux-overhead ratio's two models (one worker per "
                         "ratio and round)")
    ap.add_argument("--ab_inputs", default="", help=argparse.SUPPRESS)  # worker: the inputs of --in_process
    ap.add_argument("--ab_keys", default="", help=argparse.SUPPRESS)  # worker: the run keys of --in_process
    ap.add_argument("--compare_inputs", action="store_true",
                    help=f"streamed (id shards, string records) / in-memory ex/s per model (default "
                         f"models {STREAMED_MODELS}; the id shards must exist: python -m pipelines.id_shards)")
    ap.add_argument("--baseline_root", default="",
                    help="a frozen copy of another tree (e.g. the commit before a change): each "
                         "configuration also runs from it, alternating with this tree")
    ap.add_argument("--max_steal", type=float, default=0.08,
                    help="measure a configuration again when the hypervisor stole more than this "
                         "share of the machine over its timed epochs (/proc/stat steal)")
    ap.add_argument("--steal_retries", type=int, default=2,
                    help="at most this many re-measurements per configuration (the least-stolen is kept)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--pieces", action="store_true", help="CPU time of TAN fwd+bwd with/without CCN/AQCL")
    ap.add_argument("--pieces_reps", type=int, default=8)
    return ap


def main(argv: Optional[List[str]] = None):
    a = parser().parse_args(argv)
    if a.worker:
        ab = a.ab_inputs or a.ab_keys
        print(json.dumps(pieces(a) if a.pieces else ab_worker(a, _worker_variants(a)) if ab else worker(a)),
              flush=True)
        return
    if a.pieces:
        r = run_worker("benchmarks.train", [f"--data_dir={a.data_dir}", f"--batch_size={a.batch_size}",
                                            "--pieces", f"--pieces_reps={a.pieces_reps}"])
        print(json.dumps(r, indent=1))
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(r, fh, indent=1)
        return
    print(f"machine: {json.dumps(machine_info())}; load {load_average()}", flush=True)
    if a.compare_inputs and a.models == "all":
        a.models = STREAMED_MODELS
    res = compare_inputs(a) if a.compare_inputs else aux_in_process(a) if a.in_process else run(a)
    res["command"] = "python -m benchmarks.train " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
