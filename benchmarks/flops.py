"""FLOPs of a train step and the machine's dense matmul FLOP/s (fraction of the machine's limit).

    python -m benchmarks.flops --data_dir=out/bench/data [--models=din,tan,ccn] [--batch_size=1024]
                               [--matmul_n=2048] [--step_seconds=JSON]

FLOPs per train step are counted on the graph of the concrete function of the forward +
backward pass (``CTRModel._grads``: backbone, CE, aux losses, ``tape.gradient``; no optimizer
update) traced on one real batch of ``batch_size`` (static shapes):

* ``matmul_flops``: analytic count over every MatMul / BatchMatMul* / Einsum op of that graph
  from its static shapes (MatMul: 2·M·N·K; BatchMatMul: 2·batch·M·N·K; Einsum with two operands:
  2·Π(size of every distinct index)). These are the ops a dense matmul peak is comparable to.
* ``profiler_flops``: ``tf.compat.v1.profiler`` ``float_operation()`` on the same graph (counts
  only op types with a registered FLOPs statistic: MatMul, elementwise ops, ... but not Einsum
  / BatchMatMulV2), printed for reference.

The machine's limit: ``tf.matmul`` of two ``matmul_n`` x ``matmul_n`` float32 matrices, median of
10 timed runs after 3 warm-up runs, in the same process: 2·n³ / t FLOP/s (also per CPU second).
Fraction = matmul_flops / step_seconds / peak, with step seconds from benchmarks.train of the
same run_all run (``--step_seconds`` JSON ``{model: seconds}``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

from benchmarks.train import cpu_seconds, load_average, make_config, run_worker

MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")


def _dims(t):
    s = t.shape
    if s.rank is None or not s.is_fully_defined():
        return None
    return [int(d) for d in s]


def op_flops(op) -> Optional[int]:
    """Analytic FLOPs of one matmul-class op (None when shapes are not static)."""
    if op.type == "MatMul":
        a, out = _dims(op.inputs[0]), _dims(op.outputs[0])
        if a is None or out is None:
            return None
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return 2 * out[0] * out[1] * k
    if op.type.startswith("BatchMatMul"):
        a, out = _dims(op.inputs[0]), _dims(op.outputs[0])
        if a is None or out is None:
            return None
        adj = op.get_attr("adj_x")
        k = a[-2] if adj else a[-1]
        n = 1
        for d in out:
            n *= d
        return 2 * n * k
    if op.type == "Einsum":
        eq = op.get_attr("equation").decode()
        ins = eq.split("->")[0].split(",")
        if "." in eq or len(ins) != 2:
            return None
        sizes = {}
        for sub, t in zip(ins, op.inputs):
            d = _dims(t)
            if d is None or len(d) != len(sub):
                return None
            sizes.update(zip(sub, d))
        n = 1
        for v in sizes.values():
            n *= v
        return 2 * n
    return None


def graph_matmul_flops(graph) -> Dict[str, object]:
    total, unknown, by_type, seen = 0, 0, {}, set()

    def walk(g):
        nonlocal total, unknown
        for op in g.get_operations():
            if op.type in MATMUL_OPS:
                f = op_flops(op)
                if f is None:
                    unknown += 1
                else:
                    total += f
                    by_type[op.type] = by_type.get(op.type, 0) + f
        for name, fn in getattr(g, "_functions", {}).items():  # nested functions (if any)
            if name not in seen and hasattr(fn, "graph"):
                seen.add(name)
                walk(fn.graph)

    walk(graph)
    return {"matmul_flops": total, "matmul_flops_by_op": by_type, "matmul_ops_unknown_shape": unknown}


def step_flops(data_dir: str, model_name: str, aux: str, batch_size: int) -> dict:
    import tensorflow as tf

    from ccn import models
    from ctrcore import schema, trainer
    from ctrcore.data import make_dataset

    spec, stats = schema.load_spec(data_dir), schema.load_stats(data_dir)
    cfg = make_config(data_dir, model_name, aux, batch_size)
    trainer.setup_runtime(cfg)
    model = trainer.build_compiled(cfg, models.model_factory(cfg), spec, stats)
    batch = next(iter(make_dataset(data_dir, "train", batch_size, spec=spec, shuffle=False, repeat=True)))
    cf = tf.function(model._grads).get_concrete_function(batch)
    out = graph_matmul_flops(cf.graph)
    try:
        opts = (tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build())
        prof = tf.compat.v1.profiler.profile(graph=cf.graph, options=opts)
        out["profiler_flops"] = int(prof.total_float_ops)
    except Exception as e:  # the v1 profiler is best effort
        out["profiler_flops"] = None
        out["profiler_error"] = repr(e)[:300]
    out.update(model=model_name, aux=aux, batch_size=batch_size)
    return out


def matmul_peak(n: int = 2048, reps: int = 10) -> dict:
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    for _ in range(3):
        f(a, b).numpy()
    ts, cs = [], []
    for _ in range(reps):
        c0, t0 = cpu_seconds(), time.perf_counter()
        f(a, b).numpy()
        ts.append(time.perf_counter() - t0)
        cs.append(cpu_seconds() - c0)
    t, c = statistics.median(ts), statistics.median(cs)
    return {"n": n, "seconds_median": t, "seconds_min": min(ts), "flops_per_second": 2 * n ** 3 / t,
            "flops_per_second_best": 2 * n ** 3 / min(ts), "flops_per_cpu_second": 2 * n ** 3 / c,
            "load_average": load_average()}


def worker(a) -> dict:
    out = {"peak": matmul_peak(a.matmul_n), "models": {}}
    for key in a.models.split(","):
        model, _, aux = key.partition("+")
        out["models"][key] = step_flops(a.data_dir, model, aux, a.batch_size)
    out["peak_after"] = matmul_peak(a.matmul_n)
    return out


def run(a, step_seconds: Optional[Dict[str, float]] = None,
        cpu_seconds_per_step: Optional[Dict[str, float]] = None) -> dict:
    r = run_worker("benchmarks.flops", [f"--data_dir={a.data_dir}", f"--models={a.models}",
                                        f"--batch_size={a.batch_size}", f"--matmul_n={a.matmul_n}"])
    peak = max(r["peak"]["flops_per_second"], r["peak_after"]["flops_per_second"])
    peak_cpu = max(r["peak"]["flops_per_cpu_second"], r["peak_after"]["flops_per_cpu_second"])
    print(f"dense matmul {a.matmul_n}^2 fp32: {r['peak']['flops_per_second'] / 1e9:.1f} GFLOP/s before, "
          f"{r['peak_after']['flops_per_second'] / 1e9:.1f} after the graphs "
          f"({peak_cpu / 1e9:.1f} GFLOP per CPU-second); load {r['peak']['load_average'][0]:.1f}", flush=True)
    fractions = {}
    for key, m in r["models"].items():
        line = (f"{key:12s} train step: {m['matmul_flops'] / 1e9:7.2f} GFLOP matmul-class "
                f"(profiler: {(m.get('profiler_flops') or 0) / 1e9:.2f} GFLOP registered ops)")
        if step_seconds and key in step_seconds:
            fps = m["matmul_flops"] / step_seconds[key]
            fr = {"model_flops_per_second": fps, "fraction": fps / peak}
            if cpu_seconds_per_step and key in cpu_seconds_per_step:
                fr["fraction_per_cpu_second"] = m["matmul_flops"] / cpu_seconds_per_step[key] / peak_cpu
            fractions[key] = fr
            line += (f" | {fps / 1e9:.2f} GFLOP/s = {100 * fr['fraction']:.1f}% of the matmul peak"
                     + (f" ({100 * fr['fraction_per_cpu_second']:.1f}% per CPU-second)"
                        if "fraction_per_cpu_second" in fr else ""))
        print(line, flush=True)
    return {"peak_flops_per_second": peak, "peak_flops_per_cpu_second": peak_cpu, "matmul_peak": [r["peak"], r["peak_after"]],
            "step_flops": r["models"], "fractions": fractions}


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--models", default="din,tan,ccn")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--matmul_n", type=int, default=2048)
    ap.add_argument("--step_seconds", default="", help='JSON {"model": seconds per step}')
    return ap


def main(argv: Optional[List[str]] = None):
    a = parser().parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a)), flush=True)
        return
    res = run(a, json.loads(a.step_seconds) if a.step_seconds else None)
    print(json.dumps({k: v for k, v in res.items() if k != "matmul_peak"}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
