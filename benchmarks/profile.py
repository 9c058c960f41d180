"""Where a train step's time goes: a TensorFlow profiler trace of the trainer's own step,
summarised by op and by layer.

    python -m benchmarks.profile --model=ccn [--aux=aqcl] [--steps=10] [--top=25]
                                 [--data_dir=out/bench/data] [--logdir=out/bench/profile]

Builds the model and the training input exactly as ``ccn.train`` does
(``trainer.build_compiled`` + ``trainer.make_train_input``), runs a few warm-up steps, then traces
``--steps`` steps with ``tf.profiler.experimental`` (the trace stays in ``--logdir`` for
TensorBoard's profile plugin) and reads the ``xplane.pb`` it wrote: every TF op executed on the
executor's threads (``tf_Compute``), its time (from start to end, the intra-op parallel work
inside it included) summed over the traced steps, grouped (a) by op type and (b) by the layer
that owns it (the first name-scope components of the op name, e.g. ``ccn/collaborative_module``).
Times are per step. Printed and, with ``--json``, written.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import time
from typing import Dict, List, Optional


def _scope(op_name: str, depth: int) -> str:
    """``model/backbone/mhta_target_long/...:Einsum`` -> the first ``depth`` scope components
    (gradient ops are grouped under ``gradients`` + the scope they differentiate)."""
    name = op_name.split(":")[0]
    parts = [p for p in name.split("/") if p]
    grad = False
    if parts and parts[0].startswith("gradient"):
        grad, parts = True, parts[1:]
    parts = [p for p in parts if p not in ("ctr_model", "StatefulPartitionedCall")]
    key = "/".join(parts[:depth]) or "(top)"
    return ("grad: " if grad else "") + key


def summarise(logdir: str, steps: int, depth: int = 2) -> Dict[str, object]:
    """Self time per op type and per scope from the newest ``*.xplane.pb`` under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")),
                   key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"no xplane.pb under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as fh:
        space.ParseFromString(fh.read())
    by_type: Dict[str, float] = collections.Counter()
    by_scope: Dict[str, float] = collections.Counter()
    count: Dict[str, int] = collections.Counter()
    total = 0.0
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's inter-op threads
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if ":" not in name or "::" in name:  # op events are "scope/name:OpType"
                    continue
                dur = ev.duration_ps / 1e9  # ms
                op_type = name.rsplit(":", 1)[-1] if ":" in name else name
                by_type[op_type] += dur
                count[op_type] += 1
                by_scope[_scope(name, depth)] += dur
                total += dur
    per = lambda c: {k: v / steps for k, v in sorted(c.items(), key=lambda kv: -kv[1])}
    return {"op_ms_per_step": total / steps, "ops_per_step": sum(count.values()) / steps,
            "by_op_type": per(by_type), "by_scope": per(by_scope),
            "ops_by_type": {k: v / steps for k, v in count.most_common()}, "xplane": files[-1]}


def run(a) -> dict:
    import tensorflow as tf

    from benchmarks.train import cpu_seconds, make_config
    from ccn import models
    from ctrcore import schema, trainer

    spec, stats = schema.load_spec(a.data_dir), schema.load_stats(a.data_dir)
    cfg = make_config(a.data_dir, a.model, a.aux, a.batch_size)
    trainer.setup_runtime(cfg)
    lp = models.default_loss_params()
    lp.update(json.loads(a.loss_params or "{}"))
    model = trainer.build_compiled(cfg, models.model_factory(cfg, lp), spec, stats)
    it = iter(trainer.make_train_input(cfg, spec, model))
    step = model.make_train_function()
    for _ in range(a.warmup):
        step(it)
    c0, t0 = cpu_seconds(), time.perf_counter()
    tf.profiler.experimental.start(a.logdir)
    for _ in range(a.steps):
        out = step(it)
    tf.nest.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else x, out)
    tf.profiler.experimental.stop()
    wall, cpu = (time.perf_counter() - t0) / a.steps, (cpu_seconds() - c0) / a.steps
    res = summarise(a.logdir, a.steps, a.depth)
    res.update(model=a.model, aux=a.aux, batch_size=a.batch_size, steps=a.steps,
               wall_ms_per_step_traced=1e3 * wall, cpu_ms_per_step_traced=1e3 * cpu)
    return res


def report(res: dict, top: int) -> None:
    print(f"{res['model']}{'+' + res['aux'] if res['aux'] else ''}: {res['op_ms_per_step']:.1f} ms of "
          f"op self time in {res['ops_per_step']:.0f} ops per step (traced step: "
          f"{res['wall_ms_per_step_traced']:.1f} ms wall, "
          f"{res['cpu_ms_per_step_traced']:.1f} ms CPU, tracing included)")
    for title, key in (("by op type", "by_op_type"), ("by layer (scope)", "by_scope")):
        print(f"-- {title}")
        for k, v in list(res[key].items())[:top]:
            print(f"{v:8.2f} ms  {100 * v / res['op_ms_per_step']:5.1f} %  {k}")


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--model", default="ccn")
    ap.add_argument("--aux", default="")
    ap.add_argument("--loss_params", default="", help="JSON overrides of the loss flags (ccn.models.default_loss_params())")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--depth", type=int, default=2, help="scope components kept in 'by layer'")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--logdir", default="out/bench/profile")
    ap.add_argument("--json", default="")
    return ap


def main(argv: Optional[List[str]] = None):
    a = parser().parse_args(argv)
    res = run(a)
    report(res, a.top)
    if a.json:  # the top entries only (the trace itself stays in --logdir)
        keep = dict(res, command="python -m benchmarks.profile " + " ".join(argv if argv is not None else sys.argv[1:]))
        for k in ("by_op_type", "by_scope", "ops_by_type"):
            keep[k] = dict(list(res[k].items())[:60])
        with open(a.json, "w") as fh:
            json.dump(keep, fh, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
