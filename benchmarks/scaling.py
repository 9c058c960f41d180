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
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from typing import List, Optional

from benchmarks.train import load_average, make_config, run_worker, time_fit


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(a) -> dict:
    import tensorflow as tf

    from ccn import models
    from ctrcore import schema, trainer
    from ctrcore.data import make_dataset
    from ctrcore.schema import SpecConfig
    from ctrcore.testing import write_fake_dataset

    rss0 = _rss_mib()
    with tempfile.TemporaryDirectory() as d:
        write_fake_dataset(d, n_examples=3000, seed=0, n_items=max(200, min(a.n_items, 2000)),
                           spec_config=SpecConfig(short_len=a.short, long_len=a.long, max_context=a.context),
                           splits=("train", "valid"))
        spec, stats = schema.load_spec(d), schema.load_stats(d)
        vocab = spec.vocab_path("item_id")
        with open(vocab) as fh:
            have = sum(1 for _ in fh)
        if a.n_items > have:
            with open(vocab, "a") as fh:
                fh.writelines(f"ix{k}\n" for k in range(a.n_items - have))
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
    out = {"vocab": [], "context": [], "long": [], "batch_size": a.batch_size, "model": a.model}
    for n in [int(float(x)) for x in a.vocab.split(",") if x]:
        r = run_worker("benchmarks.scaling", _args(a, n_items=n, short=5, long=12, context=4))
        out["vocab"].append(r)
        print(f"vocab {n:>8d}: peak RSS {r['peak_rss_mib']:7.0f} MiB (built {r['rss_built_mib']:.0f}, "
              f"start {r['rss_start_mib']:.0f}); tables+Adagrad {r['all_tables_bytes_with_adagrad'] / 2 ** 20:.0f} MiB; "
              f"step {1e3 * r['step_s_median']:.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms "
              f"| load {r['load_average_start'][0]:.1f}", flush=True)
    for c in [int(x) for x in a.context.split(",") if x]:
        r = run_worker("benchmarks.scaling", _args(a, context=c))
        out["context"].append(r)
        print(f"context {c:>4d}: step {1e3 * r['step_s_median']:7.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms"
              f"{' BIMODAL' if r['bimodal'] else ''} | load {r['load_average_start'][0]:.1f}", flush=True)
    for L in [int(x) for x in a.long.split(",") if x]:
        r = run_worker("benchmarks.scaling", _args(a, long=L))
        out["long"].append(r)
        print(f"long {L:>5d}: step {1e3 * r['step_s_median']:7.0f} ms, cpu {1e3 * r['cpu_s_per_step_median']:.0f} ms, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB{' BIMODAL' if r['bimodal'] else ''} "
              f"| load {r['load_average_start'][0]:.1f}", flush=True)
    return out


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
        ax.plot(x, [1e3 * r["cpu_s_per_step_median"] for r in pts], "o-", color="C0")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CPU ms / step", color="C0")
        ax.set_ylim(bottom=0)
        if logx:
            ax.set_xscale("log")
        if rss:
            ax2 = ax.twinx()
            ax2.plot(x, [r["peak_rss_mib"] for r in pts], "s--", color="C1")
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
    ap.add_argument("--json", default="", help="write the result here")
    ap.add_argument("--png", default="", help="PNG prefix: PREFIX_{vocab,context,long}.png")
    ap.add_argument("--from_json", default="", help="only draw the PNGs of this earlier --json")
    # worker-only
    ap.add_argument("--n_items", type=int, default=2000)
    ap.add_argument("--short", type=int, default=20)
    return ap


def main(argv: Optional[List[str]] = None):
    ap = parser()
    a = ap.parse_args(argv)
    if a.worker:
        a.long, a.context = int(a.long), int(a.context)
        print(json.dumps(worker(a)), flush=True)
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
    if a.png:
        for p in plot(out, a.png):
            print(f"wrote {p}")


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
