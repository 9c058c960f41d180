"""Serving latency / throughput of the exported CCN, TAN and DIN SavedModels (one run).

Each model is trained briefly (trainer model factory + optimizer, ``--train_steps``) on the fake
dataset (``ctrcore.testing.write_fake_dataset``) or on ``--data_dir`` (a preprocessed dir, e.g.
the synthetic source), exported with ``serving.export.export_model`` and loaded back with
``tf.saved_model.load``. Requests are real validation examples through the ``serving_default``
signature (serialized tf.Example, the TF Serving path) and, with ``--signatures=both``, the
``predict`` signature (named tensors). Per batch size (default 1 and 128): p50 / p99 latency over
``--iters`` timed calls after ``--warmup`` calls, and throughput (examples/s at that batch size).

CCN = the ``tan`` backbone trained with the CCN loss; its export holds the backbone only, so its
latency should equal TAN's (ratio ~1.0): the evidence that the training branch is not served.
Models are timed interleaved (round-robin, one call each) so load changes hit all alike.

    python -m benchmarks.serving [--data_dir=DIR] [--batch_sizes=1,128] [--iters=300]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

MODELS = {"CCN": ("ccn", []), "TAN": ("tan", []), "DIN": ("din", [])}


def train_and_export(name, data_dir, out, args):
    from ccn import models
    from ctrcore import schema, trainer
    from ctrcore.config import TrainConfig
    from ctrcore.data import make_dataset
    from serving import export

    model, aux = MODELS[name]
    spec, stats = schema.load_spec(data_dir), schema.load_stats(data_dir)
    cfg = TrainConfig(data_dir=data_dir, model_dir=os.path.join(out, "run_" + name), model=model,
                      aux_losses=aux, emb_dim=args.emb_dim, batch_size=256, seed=0)
    t0 = time.time()
    m = trainer.build_compiled(cfg, models.model_factory(cfg), spec, stats)
    m.fit(make_dataset(data_dir, "train", 256, spec=spec, repeat=True, seed=0),
          steps_per_epoch=args.train_steps, epochs=1, verbose=0)
    t1 = time.time()
    path = export.export_model(m, spec, os.path.join(out, "export"), name.lower(), keep_versions=1)
    t2 = time.time()
    info = {"train_s": t1 - t0, "export_s": t2 - t1, "path": path,
            "backbone_variables": len(m.backbone.variables),
            "model_variables": len(m.variables) + len(m.optimizer.variables()),
            "saved_model_mb": sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path)
                                  for f in fs) / 2 ** 20}
    return spec, info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", default=None, help="preprocessed data dir (default: fake data)")
    ap.add_argument("--batch_sizes", default="1,128")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--train_steps", type=int, default=30)
    ap.add_argument("--emb_dim", type=int, default=16)
    ap.add_argument("--signatures", choices=["serving_default", "both"], default="serving_default")
    ap.add_argument("--out", default=None, help="work dir (default: a temporary dir)")
    args = ap.parse_args()

    from serving import warmup

    out = args.out or tempfile.mkdtemp(prefix="bench_serving_")
    data_dir = args.data_dir
    if not data_dir:
        from ctrcore.testing import write_fake_dataset

        data_dir = os.path.join(out, "data")
        write_fake_dataset(data_dir, n_examples=6000, seed=0)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    infos, loaded = {}, {}
    for name in MODELS:
        spec, infos[name] = train_and_export(name, data_dir, out, args)
        loaded[name] = tf.saved_model.load(infos[name]["path"])
    ex = warmup.to_serving_examples(warmup.read_examples(data_dir, "valid", max(sizes)), spec)
    while len(ex) < max(sizes):
        ex = ex + ex
    sigs = ["serving_default"] + (["predict"] if args.signatures == "both" else [])

    print(f"# serving benchmark: tf {tf.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, data={'fake' if not args.data_dir else args.data_dir}, "
          f"iters={args.iters} (interleaved), load average before timing {os.getloadavg()[0]:.1f}")
    for name, i in infos.items():
        print(f"#   {name}: export {i['path']} ({i['saved_model_mb']:.2f} MiB), backbone variables "
              f"{i['backbone_variables']} (training model + optimizer: {i['model_variables']}), "
              f"train {i['train_s']:.1f}s, export+verify {i['export_s']:.1f}s")
    results = {}
    for sig in sigs:
        for b in sizes:
            batch = ex[:b]
            if sig == "serving_default":
                feeds = {"examples": tf.constant(batch)}
            else:
                feeds = {k: tf.constant(v) for k, v in warmup.parse_serving_arrays(batch, spec).items()}
            fns = {n: loaded[n].signatures[sig] for n in MODELS}
            for n, fn in fns.items():
                for _ in range(args.warmup):
                    fn(**feeds)["probabilities"].numpy()
            times = {n: [] for n in MODELS}
            for _ in range(args.iters):
                for n, fn in fns.items():  # interleaved
                    t = time.perf_counter()
                    fn(**feeds)["probabilities"].numpy()
                    times[n].append(time.perf_counter() - t)
            for n in MODELS:
                a = np.array(times[n]) * 1e3
                results[(sig, b, n)] = {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
                                        "mean_ms": float(a.mean()), "throughput": b / (a.mean() / 1e3)}
    print(f"# load average after timing {os.getloadavg()[0]:.1f}")
    print()
    print("| signature | batch | model | p50 ms | p99 ms | throughput (examples/s) |")
    print("|---|---:|---|---:|---:|---:|")
    for (sig, b, n), r in results.items():
        print(f"| {sig} | {b} | {n} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput']:,.0f} |")
    print()
    for sig in sigs:
        for b in sizes:
            c, t = results[(sig, b, "CCN")], results[(sig, b, "TAN")]
            print(f"CCN/TAN latency ratio ({sig}, batch {b}): p50 {c['p50_ms'] / t['p50_ms']:.3f}, "
                  f"p99 {c['p99_ms'] / t['p99_ms']:.3f}, throughput TAN/CCN {t['throughput'] / c['throughput']:.3f}")
    with open(os.path.join(out, "serving_benchmark.json"), "w") as fh:
        json.dump({"infos": infos, "results": {"/".join(map(str, k)): v for k, v in results.items()}},
                  fh, indent=1)


if __name__ == "__main__":
    main()
