"""Run every training-side benchmark and write ``benchmarks/results.json``.

    python -m benchmarks.run_all [--quick] [--data_dir=out/bench/data] [--out=benchmarks/results.json]
        [--fuxictr]

Data (made once, see benchmarks/RESULTS.md)::

    python -m pipelines.synthetic --output=out/bench/log.csv --rows=300000 --seed=0
    python -m pipelines.preprocess --source=synthetic --input=out/bench/log.csv \\
        --output_dir=out/bench/data --runner=DirectRunner

Order: training throughput of every model (benchmarks.train) -> input headroom
(benchmarks.input, vs the fastest model) -> FLOPs fraction of the matmul peak (benchmarks.flops,
with the step times just measured) -> DeepCTR DIN peer (benchmarks.peer_din) -> with
``--fuxictr`` (opt-in: 9 trainings of full passes, needs the ``bench`` extra) ours vs FuxiCTR
and DeepCTR, ex/s and test AUC (benchmarks.peer_fuxictr) -> scaling (benchmarks.scaling).
``--quick``: 4 models + the aux variants, fewer/shorter epochs, smaller sweeps (a smoke run,
~10 min on an idle 2-core machine; not for the record).

Keys of results.json: ``aux_overhead`` {ccn, aqcl, ccn_aqcl} (wall step-time ratios; the
``_cpu`` variant uses CPU seconds per step), ``input_headroom``, ``vs_peer_din``,
``vs_peer_{din,deepfm,sim}_fuxictr`` and ``vs_peer_{din,deepfm}_deepctr`` (``--fuxictr``),
``matmul_fraction``, ``train_examples_per_second`` {run key: ex/s}, ``machine``, ``command``,
``load_average`` (start / end and per benchmark), ``preprocess`` (by reference), and the full
outputs of each benchmark under ``details``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

from benchmarks import flops as flops_b
from benchmarks import input as input_b
from benchmarks import peer_din as peer_b
from benchmarks import peer_fuxictr as fuxictr_b
from benchmarks import scaling as scaling_b
from benchmarks import train as train_b
from benchmarks.train import load_average, machine_info

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: Optional[List[str]] = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data_dir", default="out/bench/data")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--skip", default="", help="comma list of: train,input,flops,peer,fuxictr,scaling")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the aux-overhead configurations")
    ap.add_argument("--fuxictr", action="store_true",
                    help="also run benchmarks.peer_fuxictr (ours vs FuxiCTR / DeepCTR, ex/s and test AUC)")
    a = ap.parse_args(argv)
    skip = set(a.skip.split(","))
    q = a.quick
    argv_s = " ".join(argv if argv is not None else sys.argv[1:])
    res = {"command": f"python -m benchmarks.run_all {argv_s}".strip(), "quick": q,
           "machine": machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "load_average": {"start": load_average()}, "details": {}}
    print(f"machine: {json.dumps(res['machine'])}\nload {res['load_average']['start']}", flush=True)
    epochs, spe = (3, 6) if q else (3, 8)

    def save():
        res["load_average"]["end"] = load_average()
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1, sort_keys=True, default=str)

    tr = None
    if "train" not in skip:
        targs = train_b.parser().parse_args([f"--data_dir={a.data_dir}", f"--epochs={epochs}",
                                             f"--steps_per_epoch={spe}", f"--rounds={a.rounds or (1 if q else 2)}"]
                                            + (["--quick"] if q else []))
        tr = train_b.run(targs)
        res["train_examples_per_second"] = tr["train_examples_per_second"]
        res["train_examples_per_cpu_second"] = tr["examples_per_cpu_second"]
        res["aux_overhead"] = tr["aux_overhead"]
        res["aux_overhead_cpu"] = tr["aux_overhead_cpu"]
        res["bimodal"] = tr["bimodal"]
        res["details"]["train"] = tr
        res["load_average"]["after_train"] = load_average()
        save()
    if "input" not in skip:
        fastest = max(tr["train_examples_per_second"].items(), key=lambda kv: kv[1]) if tr else (None, 0.0)
        fm, _, faux = (fastest[0] or "wide_deep").partition("+")  # its input, as the trainer builds it
        iargs = input_b.parser().parse_args([f"--data_dir={a.data_dir}", "--per_example",
                                             f"--batches={40 if q else 120}", f"--train_eps={fastest[1]}",
                                             f"--model={fm}", f"--aux={faux}"])
        ir = input_b.run(iargs)
        ir["fastest_model"] = fastest[0]
        if tr:
            per_cpu = tr["examples_per_cpu_second"][fastest[0]]
            ir["headroom_cpu"] = (ir.get("trainer_input", ir["parse_after_batch"])["examples_per_cpu_second"]
                                  / per_cpu)
            ir["headroom_streamed_cpu"] = ir["parse_after_batch"]["examples_per_cpu_second"] / per_cpu
        res["input_headroom"] = ir.get("headroom")  # the trainer's default input (auto)
        res["input_headroom_mode"] = (ir.get("trainer_input") or {}).get("mode")
        res["input_headroom_streamed"] = ir.get("headroom_streamed")
        if fastest[1] and "parse_cached_records" in ir:
            res["input_headroom_cached"] = ir["parse_cached_records"]["examples_per_second"] / fastest[1]
        if ir.get("headroom_in_memory") is not None:
            res["input_headroom_in_memory"] = ir["headroom_in_memory"]
        res["input_headroom_cpu"] = ir.get("headroom_cpu")
        res["input_headroom_streamed_cpu"] = ir.get("headroom_streamed_cpu")
        res["details"]["input"] = ir
        save()
    if "flops" not in skip:
        fmodels = "din,tan,ccn" if q else "wide_deep,deepfm,din,sim,tan_base,tan,ccn,din+aqcl,ccn+aqcl"
        fargs = flops_b.parser().parse_args([f"--data_dir={a.data_dir}", f"--models={fmodels}"])
        fr = flops_b.run(fargs, tr["step_seconds"] if tr else None, tr["cpu_seconds_per_step"] if tr else None)
        res["details"]["flops"] = fr
        if fr["fractions"]:
            res["matmul_fraction"] = {k: v["fraction"] for k, v in fr["fractions"].items()}
            res["matmul_fraction_per_cpu_second"] = {k: v.get("fraction_per_cpu_second")
                                                     for k, v in fr["fractions"].items()}
            res["matmul_peak_flops_per_second"] = fr["peak_flops_per_second"]
        save()
    if "peer" not in skip:
        pargs = peer_b.parser().parse_args([f"--data_dir={a.data_dir}", f"--epochs={epochs}",
                                            f"--steps_per_epoch={spe}", f"--rounds={a.rounds or 1}"])
        pr = peer_b.run(pargs)
        res["vs_peer_din"] = pr.get("ratio")
        res["vs_peer_din_cpu"] = pr.get("ratio_cpu")
        res["details"]["peer_din"] = pr
        save()
    if a.fuxictr and "fuxictr" not in skip:
        xargs = fuxictr_b.parser().parse_args([f"--data_dir={a.data_dir}"]
                                              + (["--epochs=2", f"--steps_per_epoch={spe}"] if q else []))
        xr = fuxictr_b.run(xargs)
        for k in fuxictr_b.RESULT_KEYS:
            if k in xr:
                res[k] = xr[k]
        res["details"]["peer_fuxictr"] = xr
        res["load_average"]["after_peer_fuxictr"] = load_average()
        save()
    if "scaling" not in skip:
        sargs = scaling_b.parser().parse_args(
            ["--vocab=10000,1000000", "--context=5,50", "--long=100,1000", "--epochs=2", "--steps_per_epoch=4"]
            if q else ["--epochs=2", "--steps_per_epoch=5"])
        res["details"]["scaling"] = scaling_b.run(sargs)
        save()
    res["preprocess"] = {"reference": "benchmarks/RESULTS_preprocess.md (benchmarks.preprocess, "
                                      "owned by the preprocessing job; not rerun here)"}
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    print(f"wrote {a.out}")
    summary = {k: res.get(k) for k in ("aux_overhead", "aux_overhead_cpu", "input_headroom",
                                       "input_headroom_mode", "input_headroom_streamed", "vs_peer_din",
                                       *fuxictr_b.RESULT_KEYS,
                                       "matmul_fraction", "train_examples_per_second", "load_average")}
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
