"""Scaling: peak RSS vs item vocabulary, step time vs context items and vs long-sequence length.

    python -m benchmarks.scaling [--vocab=10000,100000,1000000] [--context=5,10,20,50]
                                 [--long=100,500,1000] [--batch_size=256] [--model=ccn]

Every point is a subprocess (``--worker``) that writes a small fake dataset
(``ctrcore.testing.write_fake_dataset``, 3000 examples, learnable) with the requested
``SpecConfig`` and trains ``--model`` (default ``ccn``: TAN backbone with two long-sequence
searches + the CCN context loss) in one long ``fit()`` (``benchmarks.train.time_fit``).

* vocabulary: the item vocabulary file is extended to ``n`` ids (ids that never occur in the
  data; every table is sized by its vocabulary, as with a real catalogue) with
  short 5 / long 12 / context 4; peak RSS (``ru_maxrss``) of the process, RSS after the model
  is built, the table bytes ``rows x dim x 4 x (1 + 1 Adagrad slot)`` and the step time
  (sparse Adagrad row updates: should not grow with the vocabulary);
* context: short 20 / long 100 / ``max_context`` C;
* long sequence: short 20 / context 20 / ``long_len`` L.

``--ps_vocab=N[,M]``: the vocabulary points again under ``--distribution=parameter_server`` on a
local cluster (the worker is the chief; ``--ps_shards`` parameter servers and one worker, each a
``tf.distribute.Server`` subprocess of it, every table split over the ps by
``FixedShardsPartitioner``, the input a ``DatasetCreator``). Keras' parameter-server training has
no batch-level callbacks, so its step time is the wall time of each timed epoch / its steps
(median over epochs), CPU the chief's and servers' user+sys per step, and the peak RSS is
reported per process (``VmHWM``): the tables live on the ps.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from benchmarks.train import load_average, make_config, run_steady, run_worker, time_fit


def _status_mib(pid="self", field: str = "VmRSS") -> float:
    """A memory field of ``/proc/<pid>/status`` in MiB (``VmRSS`` now, ``VmHWM`` the peak)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    return _status_mib()


def _hwm_mib(pid) -> float:
    """Peak RSS (``VmHWM``) of a live process."""
    return _status_mib(pid, "VmHWM")


def _cpu_s(pid) -> float:
    """user + sys seconds of a live process."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _free_ports(n: int) -> List[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _fake_data(d: str, a):
    """The point's fake dataset in ``d`` (3000 examples, ``a``'s sequence lengths and context),
    its item vocabulary file extended to ``a.n_items`` ids; returns ``(spec, stats)``."""
    from ctrcore import schema
    from ctrcore.schema import SpecConfig
    from ctrcore.testing import write_fake_dataset

    write_fake_dataset(d, n_examples=3000, seed=0, n_items=max(200, min(a.n_items, 2000)),
                       spec_config=SpecConfig(short_len=a.short, long_len=a.long, max_context=a.context),
                       splits=("train", "valid"))
    spec = schema.load_spec(d)
    vocab = spec.vocab_path("item_id")
    with open(vocab) as fh:
        have = sum(1 for _ in fh)
    if a.n_items > have:
        with open(vocab, "a") as fh:
            fh.writelines(f"ix{k}\n" for k in range(a.n_items - have))
    return spec, schema.load_stats(d)


def server_main(job: str, index: int) -> None:
    """A ps / worker task of the local cluster (TF_CONFIG from the chief); exits with its parent."""
    import tensorflow as tf

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    tf.distribute.Server(resolver.cluster_spec(), job_name=job, task_index=index, protocol="grpc",
                         start=True).join()


def ps_worker(a) -> dict:
    """The chief of a local parameter-server cluster (``--ps_shards`` ps + 1 worker): one
    vocabulary point, timed per epoch."""
    import dataclasses

    from ccn import models
    from ctrcore import trainer
    from ctrcore.data import make_dataset

    ports = _free_ports(a.ps_shards + 2)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"],
               "ps": [f"127.0.0.1:{p}" for p in ports[2:]]}
    servers: Dict[str, subprocess.Popen] = {}
    env = dict(os.environ)
    try:
        for job, n in (("ps", a.ps_shards), ("worker", 1)):
            for i in range(n):
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": job, "index": i}})
                servers[f"{job}{i}"] = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.scaling", f"--server={job}:{i}"], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
        import tensorflow as tf
        import tf_keras as keras

        rss0 = _rss_mib()
        with tempfile.TemporaryDirectory() as d:
            spec, stats = _fake_data(d, a)
            cfg = dataclasses.replace(make_config(d, a.model, "", a.batch_size, steps_per_epoch=a.steps_per_epoch),
                                      distribution="parameter_server", lookup_in_input=False)
            trainer.setup_runtime(cfg)
            strategy = trainer.make_strategy(
                cfg, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(a.ps_shards))
            t0 = time.perf_counter()
            model = trainer.build_compiled(cfg, models.model_factory(cfg), spec, stats, strategy)
            build_s = time.perf_counter() - t0
            table = model.backbone.tables["item_id"].embeddings
            shards = [v.device for v in getattr(table, "variables", [table])]
            rows = int(table.shape[0])
            ds = keras.utils.experimental.DatasetCreator(lambda ctx: make_dataset(
                d, "train", ctx.get_per_replica_batch_size(a.batch_size), spec=spec, shuffle=True, repeat=True))
            pids = [os.getpid()] + [p.pid for p in servers.values()]
            marks = []

            class EpochTimer(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    marks.append([time.perf_counter(), sum(_cpu_s(p) for p in pids)])

                def on_epoch_end(self, epoch, logs=None):
                    marks[-1] += [time.perf_counter(), sum(_cpu_s(p) for p in pids)]

            load0 = load_average()
            t0 = time.perf_counter()
            model.fit(ds, epochs=1 + a.epochs, steps_per_epoch=a.steps_per_epoch, callbacks=[EpochTimer()],
                      verbose=0)
            fit_s = time.perf_counter() - t0
        timed = marks[1:]
        step = sorted((m[2] - m[0]) / a.steps_per_epoch for m in timed)
        cpu = sorted((m[3] - m[1]) / a.steps_per_epoch for m in timed)
        peak = {k: _hwm_mib(p.pid) for k, p in servers.items()}
        peak["chief"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"model": a.model, "n_items": a.n_items, "item_table_rows": rows, "distribution": "parameter_server",
                "ps_shards": a.ps_shards, "item_table_shards": shards,
                "server_pids": [p.pid for p in servers.values()], "short_len": a.short, "long_len": a.long,
                "max_context": a.context, "batch_size": a.batch_size,
                "step_s_median": step[len(step) // 2], "cpu_s_per_step_median": cpu[len(cpu) // 2],
                "epoch_step_s": step, "timing": "epoch wall / steps (no batch callbacks under PS)",
                "cpu_of": "chief + ps + worker processes", "peak_rss_mib_per_process": peak,
                "peak_rss_mib": max(peak.values()), "build_seconds": build_s, "fit_seconds": fit_s,
                "rss_start_mib": rss0, "load_average_start": load0, "load_average_end": load_average()}
    finally:
        for p in servers.values():
            p.kill()
            p.wait()


def worker(a) -> dict:
    import tensorflow as tf

    from ccn import models
    from ctrcore import trainer
    from ctrcore.data import make_dataset

    rss0 = _rss_mib()
    with tempfile.TemporaryDirectory() as d:
        spec, stats = _fake_data(d, a)
        cfg = make_config(d, a.model, "", a.batch_size, steps_per_epoch=a.steps_per_epoch)
        trainer.setup_runtime(cfg)
        model = trainer.build_compiled(cfg, models.model_factory(cfg), spec, stats)
        rss_built = _rss_mib()
        table = model.backbone.tables["item_id"].embeddings
        rows, dim = int(table.shape[0]), int(table.shape[1])
        ds = make_dataset(d, "train", a.batch_size, spec=spec, shuffle=True, repeat=True)
        load0 = load_average()
        res = time_fit(model, ds, a.epochs, 1, a.steps_per_epoch)
    res.update(model=a.model, n_items=a.n_items, item_table_rows=rows, short_len=a.short, long_len=a.long,
               max_context=a.context, batch_size=a.batch_size,
               item_table_bytes_with_adagrad=rows * dim * 4 * 2,
               all_tables_bytes_with_adagrad=sum(int(v.shape[0]) * int(v.shape[1]) * 4 * 2
                                                 for v in model.embedding_variables()),
               rss_start_mib=rss0, rss_built_mib=rss_built,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               load_average_start=load0, load_average_end=load_average())
    del tf
    return res


def _args(a, **kw):
    o = dict(model=a.model, batch_size=a.batch_size, epochs=a.epochs, steps_per_epoch=a.steps_per_epoch,
             n_items=2000, short=20, long=100, context=20)
    o.update(kw)
    return [f"--{k}={v}" for k, v in o.items()]


def run(a) -> dict:
    out = {"vocab": [], "context": [], "long": [], "batch_size": a.batch_size, "model": a.model,
           "max_steal": a.max_steal, "discarded": []}

    def steady(args, label):  # measured again while the host steals (benchmarks.train.run_steady)
        return run_steady(a, args, label, discarded=out["discarded"], module="benchmarks.scaling")

    for n in [int(float(x)) for x in a.vocab.split(",") if x]:
        r = steady(_args(a, n_items=n, short=5, long=12, context=4), f"vocab {n}")
        out["vocab"].append(r)
        print(f"vocab {n:>8d}: peak RSS {r['peak_rss_mib']:7.0f} MiB (built {r['rss_built_mib']:.0f}, "
              f"start {r['rss_start_mib']:.0f}); tables+Adagrad {r['all_tables_bytes_with_adagrad'] / 2 ** 20:.0f} MiB; "
              f"step {1e3 * r['step_s_median']:.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms "
              f"| load {r['load_average_start'][0]:.1f}", flush=True)
    for c in [int(x) for x in a.context.split(",") if x]:
        r = steady(_args(a, context=c), f"context {c}")
        out["context"].append(r)
        print(f"context {c:>4d}: step {1e3 * r['step_s_median']:7.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms"
              f"{' BIMODAL' if r['bimodal'] else ''} | steal {100 * (r.get('steal_frac') or 0):.0f}% "
              f"load {r['load_average_start'][0]:.1f}", flush=True)
    for L in [int(x) for x in a.long.split(",") if x]:
        r = steady(_args(a, long=L), f"long {L}")
        out["long"].append(r)
        print(f"long {L:>5d}: step {1e3 * r['step_s_median']:7.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB{' BIMODAL' if r['bimodal'] else ''} "
              f"| steal {100 * (r.get('steal_frac') or 0):.0f}% load {r['load_average_start'][0]:.1f}", flush=True)
    for n in [int(float(x)) for x in a.ps_vocab.split(",") if x]:
        r = run_worker("benchmarks.scaling", _args(a, n_items=n, short=5, long=12, context=4) +
                       ["--ps_point", f"--ps_shards={a.ps_shards}"], timeout=a.ps_timeout)
        out.setdefault("vocab_parameter_server", []).append(r)
        print(f"vocab {n:>8d} parameter_server ({a.ps_shards} ps): peak RSS per process "
              f"{ {k: round(v) for k, v in r['peak_rss_mib_per_process'].items()} } MiB; "
              f"step {1e3 * r['step_s_median']:.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms "
              f"(all processes) | load {r['load_average_start'][0]:.1f}", flush=True)
    return out


def vocab_table(out: dict) -> str:
    """Markdown: the vocabulary points, one process and (when run) under parameter_server."""
    rows = ["| items | table rows | all tables + Adagrad slots | distribution | peak RSS (MiB) | ms/step | CPU ms/step |",
            "|---:|---:|---:|---|---|---:|---:|"]
    for r in sorted(out.get("vocab") or [], key=lambda r: r["n_items"]):
        rows.append(f"| {r['n_items']:,} | {r['item_table_rows']:,} | "
                    f"{r['all_tables_bytes_with_adagrad'] / 2 ** 20:,.0f} MiB | one process | "
                    f"{r['peak_rss_mib']:,.0f} | {1e3 * r['step_s_median']:.0f} | {1e3 * r['cpu_s_per_step_median']:.0f} |")
    for r in sorted(out.get("vocab_parameter_server") or [], key=lambda r: r["n_items"]):
        per = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r["peak_rss_mib_per_process"].items()))
        rows.append(f"| {r['n_items']:,} | {r['item_table_rows']:,} | - | parameter_server, "
                    f"{r['ps_shards']} ps + 1 worker | {per} | {1e3 * r['step_s_median']:.0f} (epoch wall / steps) "
                    f"| {1e3 * r['cpu_s_per_step_median']:.0f} (all processes) |")
    return "\n".join(rows)


def curves_table(out: dict) -> str:
    """Markdown: the context and long-sequence points of a :func:`run` result (step and CPU per
    step, peak RSS, the host's steal share over the timed epochs)."""
    def steal(r):
        return "-" if r.get("steal_frac") is None else f"{100 * r['steal_frac']:.0f} %"

    blocks = []
    for key, field, title in (("context", "max_context", "context items"),
                              ("long", "long_len", "long-sequence length")):
        pts = sorted(out.get(key) or [], key=lambda r: r[field])
        if pts:
            blocks.append("\n".join(
                [f"| {title} | ms/step | CPU ms/step | peak RSS (MiB) | steal |", "|---:|---:|---:|---:|---:|"]
                + [f"| {r[field]:,} | {1e3 * r['step_s_median']:.0f} | {1e3 * r['cpu_s_per_step_median']:.0f} "
                   f"| {r['peak_rss_mib']:,.0f} | {steal(r)} |" for r in pts]))
    return "\n\n".join(blocks)


def plot(out: dict, prefix: str) -> List[str]:
    """One PNG per curve of a :func:`run` result: ``PREFIX_vocab.png`` (peak RSS and CPU ms/step
    against the items in the vocabulary, log x), ``PREFIX_context.png`` (CPU ms/step against the
    context items) and ``PREFIX_long.png`` (CPU ms/step and peak RSS against the long-sequence
    length). Returns the paths written (a curve without points is skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = (("vocab", "n_items", "items in the vocabulary", True, True),
              ("context", "max_context", "context items per example", False, False),
              ("long", "long_len", "long-sequence length", False, True))
    paths = []
    for key, xfield, xlabel, logx, rss in curves:
        pts = sorted(out.get(key) or [], key=lambda r: r[xfield])
        if not pts:
            continue
        x = [r[xfield] for r in pts]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot(x, [1e3 * r["cpu_s_per_step_median"] for r in pts], "o-", color="C0", label="one process")
        ps = sorted(out.get(f"{key}_parameter_server") or [], key=lambda r: r[xfield])
        if ps:  # CPU of all the cluster's processes; RSS: the largest process
            ax.plot([r[xfield] for r in ps], [1e3 * r["cpu_s_per_step_median"] for r in ps], "^:",
                    color="C2", label=f"parameter_server ({ps[0].get('ps_shards')} ps)")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CPU ms / step", color="C0")
        ax.set_ylim(bottom=0)
        if logx:
            ax.set_xscale("log")
        if rss:
            ax2 = ax.twinx()
            ax2.plot(x, [r["peak_rss_mib"] for r in pts], "s--", color="C1")
            if ps:
                ax2.plot([r[xfield] for r in ps], [r["peak_rss_mib"] for r in ps], "v:", color="C3")
            ax2.set_ylabel("peak RSS (MiB)", color="C1")
            ax2.set_ylim(bottom=0)
        ax.set_title(f"{out.get('model')}, batch {out.get('batch_size')}: {xlabel}", fontsize=9)
        fig.tight_layout()
        path = f"{prefix}_{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="ccn")
    ap.add_argument("--batch_size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps_per_epoch", type=int, default=6)
    ap.add_argument("--vocab", default="10000,100000,1000000")
    ap.add_argument("--context", default="5,10,20,50")
    ap.add_argument("--long", default="100,500,1000")
    ap.add_argument("--ps_vocab", default="", help="vocabulary points under parameter_server (e.g. 10000000)")
    ap.add_argument("--ps_shards", type=int, default=2, help="parameter servers of --ps_vocab's cluster")
    ap.add_argument("--ps_timeout", type=int, default=900, help="seconds before a --ps_vocab point is killed")
    ap.add_argument("--server", default="", help=argparse.SUPPRESS)  # job:index of the local cluster
    ap.add_argument("--max_steal", type=float, default=0.08,
                    help="measure a one-process point again when the hypervisor stole more than "
                         "this share of the machine over its timed epochs")
    ap.add_argument("--steal_retries", type=int, default=2)
    ap.add_argument("--json", default="", help="write the result here")
    ap.add_argument("--png", default="", help="PNG prefix: PREFIX_{vocab,context,long}.png")
    ap.add_argument("--from_json", default="", help="only draw the PNGs of this earlier --json")
    # worker-only
    ap.add_argument("--n_items", type=int, default=2000)
    ap.add_argument("--short", type=int, default=20)
    ap.add_argument("--ps_point", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: Optional[List[str]] = None):
    ap = parser()
    a = ap.parse_args(argv)
    if a.server:
        job, index = a.server.split(":")
        server_main(job, int(index))
        return
    if a.worker:
        a.long, a.context = int(a.long), int(a.context)
        print(json.dumps(ps_worker(a) if a.ps_point else worker(a)), flush=True)
        return
    if a.from_json:
        with open(a.from_json) as fh:
            out = json.load(fh)
    else:
        out = run(a)
        out["command"] = "python -m benchmarks.scaling " + " ".join(argv if argv is not None else sys.argv[1:])
        print(json.dumps(out, indent=1, default=str)[:4000])
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(out, fh, indent=1, default=str)
    if out.get("vocab"):
        print(vocab_table(out))
    if out.get("context") or out.get("long"):
        print(curves_table(out))
    if a.png:
        for p in plot(out, a.png):
            print(f"wrote {p}")


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
