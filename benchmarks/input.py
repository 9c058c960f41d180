"""Input headroom: tf.data read-and-parse throughput of the training TFRecords.

    python -m benchmarks.input --data_dir=out/bench/data [--batch_size=1024] [--batches=80]
                               [--train_eps=N] [--model=wide_deep] [--aux=] [--per_example]

Times, by iterating each (``--batches`` after 5 warm-up batches) in a subprocess with nothing
else running in it:

* ``trainer_input``: ``ctrcore.trainer.make_train_input`` with the default configuration
  (``--train_input=auto``) - exactly what ``ccn.train`` feeds ``--model``; which mode auto chose
  and why is recorded (``mode``, ``why``), and the one-time load of the memory mode is timed
  apart (``load_seconds``);
* ``parse_after_batch``: the streamed input (``--train_input=stream``):
  ``ctrcore.data.make_dataset(data_dir, "train", batch_size, shuffle=True, repeat=True,
  features=model.train_feature_names())`` (GZIP read, shuffle, batch, ``parse_example`` of the
  features that model's step reads, after batching, prefetch), without the lookups. The same pipeline parsing *every* spec feature is timed too
(``parse_all_features``: what any model paid before the trainer parsed per model).
``stream_looked_up`` / ``id_shards_looked_up``: the streamed input with the lookups mapped, from
the string records and from the id shards (``python -m pipelines.id_shards``; skipped, with the
reason, when they are missing or stale). ``--per_example`` also times the same pipeline parsing each
record before batching (``parse_single_example`` map, then ``batch``), the alternative that
"parse after batching" replaced. Headroom = input examples/s / ``--train_eps`` (the fastest
model's training examples/s, from benchmarks.train in the same run_all run): ``headroom`` of the
trainer's default input, ``headroom_streamed`` of the streamed one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from benchmarks.train import cpu_seconds, load_average, run_worker


def _time(ds, batches: int, batch_size: int, warmup: int = 5) -> dict:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += int((next(iter(b.values())) if isinstance(b, dict) else b).shape[0])
    dt, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"examples_per_second": n / dt, "examples_per_cpu_second": n / cpu, "seconds": dt,
            "cpu_seconds": cpu, "examples": n, "cpu_util": cpu / dt}


def _values(spec, names) -> int:
    """Scalar values per example parsed for ``names`` (None = every feature)."""
    n = 0
    for name, fd in spec.features.items():
        if names is None or name in names:
            k = 1
            for d in fd.shape:
                k *= d
            n += k
    return n


def worker(a) -> dict:
    import tensorflow as tf

    from ctrcore import data, schema

    spec = schema.load_spec(a.data_dir)
    load0 = load_average()
    out = {"batch_size": a.batch_size, "load_average_start": load0}
    names, model = None, None
    if a.model:
        from ccn import models
        from benchmarks.train import make_config

        cfg = make_config(a.data_dir, a.model, a.aux)
        model = models.model_factory(cfg)(spec, schema.load_stats(a.data_dir))
        names = model.train_feature_names()
    out.update(model=a.model, aux=a.aux, features=names,
               values_per_example={"model": _values(spec, names), "all": _values(spec, None)})
    mode = None
    if model is not None:  # the trainer's own input, default configuration (auto)
        from ctrcore import trainer

        mode, why = trainer.resolve_train_input(cfg, spec, names, model.backbone.lookup)
        t0 = time.perf_counter()
        ds = trainer.make_train_input(cfg, spec, model)
        load_s = time.perf_counter() - t0
        out["trainer_input"] = _time(ds, a.batches, a.batch_size)
        out["trainer_input"].update(mode=mode, why=why, load_seconds=load_s)
        del ds
    ds = data.make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=True, repeat=True,
                           features=names)
    out["parse_after_batch"] = _time(ds, a.batches, a.batch_size)
    if names is not None:
        ds = data.make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=True, repeat=True)
        out["parse_all_features"] = _time(ds, a.batches, a.batch_size)
    if model is not None:
        # the streamed input with the lookups, from the string records (--train_input=stream)
        # and from the id shards (--train_input=ids), when they are there
        from ctrcore import idshards

        lk = model.backbone.lookup
        ds = data.make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=True,
                               repeat=True, features=names).map(lk, num_parallel_calls=tf.data.AUTOTUNE)
        out["stream_looked_up"] = _time(ds, a.batches, a.batch_size)
        problem = idshards.check(a.data_dir, spec, "train")
        if problem is None:
            ds = data.make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=True,
                                   repeat=True, features=names, id_shards=True
                                   ).map(lk, num_parallel_calls=tf.data.AUTOTUNE)
            out["id_shards_looked_up"] = _time(ds, a.batches, a.batch_size)
        else:
            out["id_shards_looked_up"] = {"skipped": problem}
    # --train_input=cache: serialized records in memory after the first pass (warmed here by
    # one full pass), so later epochs skip reading + GZIP; still reshuffled per example
    n_train = int(schema.load_stats(a.data_dir)["examples"]["train"])
    ds = data.make_dataset(a.data_dir, "train", a.batch_size, spec=spec, shuffle=True, repeat=True,
                           features=names, cache=True)
    out["parse_cached_records"] = _time(ds, a.batches, a.batch_size,
                                        warmup=-(-n_train // a.batch_size) + 2)
    # --train_input=memory (when auto did not choose it): the split parsed and looked up once
    # (timed), then every batch is a gather from a fresh permutation of all rows
    if model is not None and mode != "memory":
        t0 = time.perf_counter()
        cols = data.load_columns(a.data_dir, "train", spec=spec, features=names, map_fn=model.backbone.lookup)
        load_s = time.perf_counter() - t0
        out["in_memory"] = _time(data.in_memory_dataset(cols, a.batch_size, seed=0), a.batches, a.batch_size)
        out["in_memory"].update(load_seconds=load_s, megabytes=sum(v.nbytes for v in cols.values()) / 2 ** 20,
                                rows=int(len(next(iter(cols.values())))))
        del cols
    # the floor of the uncached pipeline: reading + GZIP decompression alone, no parse
    raw = (tf.data.TFRecordDataset(data.list_shards(a.data_dir, "train"), compression_type="GZIP",
                                   buffer_size=1 << 20).repeat().batch(a.batch_size))
    out["read_gunzip_only"] = _time(raw, a.batches, a.batch_size)
    if a.per_example:
        feats = data.parse_spec(spec)
        files = data.list_shards(a.data_dir, "train")
        pe = (tf.data.TFRecordDataset(files, compression_type="GZIP", buffer_size=1 << 20)
              .shuffle(10_000, seed=0).repeat()
              .map(lambda x: tf.io.parse_single_example(x, feats), num_parallel_calls=tf.data.AUTOTUNE)
              .batch(a.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
        out["parse_per_example"] = _time(pe, max(10, a.batches // 4), a.batch_size)
        out["parse_after_batch_speedup"] = (out["parse_after_batch"]["examples_per_second"]
                                            / out["parse_per_example"]["examples_per_second"])
    out["load_average_end"] = load_average()
    return out


def run(a) -> dict:
    args = [f"--data_dir={a.data_dir}", f"--batch_size={a.batch_size}", f"--batches={a.batches}",
            f"--model={a.model}", f"--aux={a.aux}"]
    if a.per_example:
        args.append("--per_example")
    r = run_worker("benchmarks.input", args)
    eps = r["parse_after_batch"]["examples_per_second"]
    if "trainer_input" in r:
        ti = r["trainer_input"]
        print(f"input (trainer default, --train_input=auto -> {ti['mode']}: {ti['why']}): "
              f"{ti['examples_per_second']:9.0f} ex/s, {ti['examples_per_cpu_second']:9.0f} ex/cpu-s "
              f"(built in {ti['load_seconds']:.1f}s)", flush=True)
    print(f"input (streamed, parse after batching): {eps:9.0f} ex/s, "
          f"{r['parse_after_batch']['examples_per_cpu_second']:9.0f} ex/cpu-s, "
          f"cpu_util {r['parse_after_batch']['cpu_util']:.2f} | load {r['load_average_start'][0]:.1f} "
          f"| {r['values_per_example']['model']} values/example ({a.model or 'all features'})", flush=True)
    if "parse_all_features" in r:
        print(f"input (every spec feature, {r['values_per_example']['all']} values/example): "
              f"{r['parse_all_features']['examples_per_second']:9.0f} ex/s", flush=True)
    if "skipped" in r.get("id_shards_looked_up", {}):
        print(f"input (id shards): not timed: {r['id_shards_looked_up']['skipped']}")
    for key, what in (("stream_looked_up", "streamed string records + lookups (--train_input=stream)"),
                      ("id_shards_looked_up", "streamed id shards + cast (--train_input=ids)"),
                      ("parse_cached_records", "cached serialized records (--train_input=cache), epochs 2+"),
                      ("in_memory", "parsed + looked-up columns in memory (--train_input=memory)"),
                      ("read_gunzip_only", "read + GZIP only, no parse (floor of the uncached input)")):
        if key in r:
            print(f"input ({what}): {r[key]['examples_per_second']:9.0f} ex/s, "
                  f"{r[key]['examples_per_cpu_second']:9.0f} ex/cpu-s", flush=True)
    if "parse_per_example" in r:
        print(f"input (parse per example):    {r['parse_per_example']['examples_per_second']:9.0f} ex/s "
              f"-> parse after batching is {r['parse_after_batch_speedup']:.1f}x faster", flush=True)
    if a.train_eps:
        r["train_examples_per_second"] = a.train_eps
        r["headroom_streamed"] = eps / a.train_eps
        rows = [("streamed", r["headroom_streamed"], eps)]
        if "trainer_input" in r:
            ti = r["trainer_input"]["examples_per_second"]
            r["headroom"] = ti / a.train_eps
            rows.insert(0, (f"trainer default ({r['trainer_input']['mode']})", r["headroom"], ti))
            if r["trainer_input"]["mode"] == "memory":
                r["headroom_in_memory"] = r["headroom"]
        else:
            r["headroom"] = r["headroom_streamed"]
        if "in_memory" in r:
            r["headroom_in_memory"] = r["in_memory"]["examples_per_second"] / a.train_eps
            rows.append(("--train_input=memory", r["headroom_in_memory"], r["in_memory"]["examples_per_second"]))
        for what, h, x in rows:
            print(f"input headroom, {what} = {x:.0f} / {a.train_eps:.0f} = {h:.1f}x "
                  f"({'OK' if h >= 10 else 'BELOW'} target 10x)", flush=True)
    return r


def parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=80)
    ap.add_argument("--per_example", action="store_true")
    ap.add_argument("--train_eps", type=float, default=0.0)
    ap.add_argument("--model", default="wide_deep",
                    help="parse what this --model's train step reads ('' = every feature)")
    ap.add_argument("--aux", default="", help="aux losses of that model (as benchmarks.train)")
    return ap


def main(argv: Optional[List[str]] = None):
    a = parser().parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a)), flush=True)
        return
    print(json.dumps(run(a), indent=1))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
