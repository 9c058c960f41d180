"""Markdown tables of a ``benchmarks.run_all`` result file (nothing typed by hand).

    python -m benchmarks.report [--results=benchmarks/results.json] [--before=OLD.json]

Prints the tables of ``benchmarks/RESULTS.md`` sections 1-5 and 7 from the JSON that
``python -m benchmarks.run_all`` wrote: throughput of every configuration (wall and CPU time per
step, and, with ``--before``, the CPU time per step of an earlier result file), the aux-loss
overhead ratios against the 1.15 target, input headroom against the 10x target, the peer ratios
(DeepCTR DIN; FuxiCTR and DeepCTR with test AUC when ``run_all --fuxictr`` or
``peer_fuxictr --merge_into`` wrote them), the FLOPs fractions and the scaling runs. The
command, machine and load of the run head the output.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

TARGET_OVERHEAD, TARGET_HEADROOM, TARGET_PEER, TARGET_FRACTION = 1.15, 10.0, 1.0, 0.30


def _f(x, fmt="{:,.0f}", none="-"):
    return none if x is None else fmt.format(x)


def throughput(res: dict, before: Optional[dict]) -> List[str]:
    tr = res["details"]["train"]
    old = (before or {}).get("details", {}).get("train", {}).get("cpu_seconds_per_step", {})
    head = "| run | wall ex/s | wall ms/step | CPU ms/step |" + (" before: CPU ms/step |" if before else "") + \
           " ex per CPU-s | cpu_util |"
    out = [head, "|---" + "|---:" * (head.count("|") - 2) + "|"]
    for k, eps in tr["train_examples_per_second"].items():
        row = (f"| {k} | {eps:,.0f} | {1e3 * tr['step_seconds'][k]:.1f} | "
               f"**{1e3 * tr['cpu_seconds_per_step'][k]:.1f}** |")
        if before:
            row += f" {_f(1e3 * old[k] if k in old else None, '{:.1f}')} |"
        row += f" {tr['examples_per_cpu_second'][k]:,.0f} | {tr['cpu_util'][k]:.2f} |"
        out.append(row)
    return out


def overhead(res: dict) -> List[str]:
    from benchmarks.train import RATIOS

    out = ["| ratio | wall | CPU s/step | target |", "|---|---:|---:|---|"]
    for name, (num, den) in RATIOS.items():
        w, c = res.get("aux_overhead", {}).get(name), res.get("aux_overhead_cpu", {}).get(name)
        if w is None:
            continue
        verdict = "met" if max(w, c) <= TARGET_OVERHEAD else ("met on wall" if w <= TARGET_OVERHEAD else "missed")
        out.append(f"| {num} / {den} | {w:.2f} | {c:.2f} | {verdict} |")
    return out


def headroom(res: dict) -> List[str]:
    ir = res["details"].get("input", {})
    eps = ir.get("train_examples_per_second")
    out = [f"Fastest model: {ir.get('fastest_model')} at {_f(eps)} ex/s (wall).", "",
           "| input | ex/s | ex per CPU-s | headroom (wall) |", "|---|---:|---:|---:|"]
    rows = []
    if "trainer_input" in ir:
        ti = ir["trainer_input"]
        rows.append((f"**trainer default** (`--train_input=auto` -> {ti['mode']}; built in "
                     f"{ti['load_seconds']:.1f} s)", ti))
    for key, what in (("parse_after_batch", "streamed (`--train_input=stream`)"),
                      ("parse_cached_records", "`--train_input=cache`, epochs 2+"),
                      ("in_memory", "`--train_input=memory`"),
                      ("parse_all_features", "streamed, every spec feature parsed"),
                      ("read_gunzip_only", "read + GZIP only (floor of the streamed input)"),
                      ("parse_per_example", "streamed, parse per example")):
        if key in ir:
            rows.append((what, ir[key]))
    for what, r in rows:
        h = r["examples_per_second"] / eps if eps else None
        out.append(f"| {what} | {r['examples_per_second']:,.0f} | {_f(r.get('examples_per_cpu_second'))} | "
                   f"{_f(h, '{:.1f}x')} |")
    return out


def peer(res: dict) -> List[str]:
    pr = res["details"].get("peer_din")
    if not pr:
        return ["(not run)"]
    out = ["| | wall ex/s | wall ms/step | CPU ms/step |", "|---|---:|---:|---:|"]
    for k in pr["examples_per_second"]:
        out.append(f"| {k} | {pr['examples_per_second'][k]:,.0f} | {1e3 * pr['step_seconds'][k]:.1f} | "
                   f"{1e3 * pr['cpu_seconds_per_step'][k]:.1f} |")
    out.append(f"| **ours / peer** | **{pr['ratio']:.2f}** | | **{pr['ratio_cpu']:.2f}** (CPU) |")
    return out


def peers_fuxictr(res: dict) -> List[str]:
    """``details.peer_fuxictr`` (benchmarks.peer_fuxictr): every library's ex/s, CPU time per
    step and test AUC per model, and ours / theirs."""
    px = res["details"].get("peer_fuxictr")
    if not px or not px.get("runs"):
        return ["(not run)"]
    from benchmarks.peer_fuxictr import MODELS, PEERS, _median_run

    best = {k: _median_run(v) for k, v in px["runs"].items() if v}
    spe = next(iter(best.values())).get("steps_per_epoch")
    full = "" if px.get("steps_per_epoch") else " (a full pass)"
    out = [f"{px.get('threads')} threads per framework; {px.get('epochs')} epochs (the first untimed) of "
           f"{spe} steps{full} at batch {px.get('batch_size')}; test AUC after the last.", "",
           "| model | library | wall ex/s | CPU ms/step | test AUC | ours / theirs (wall) | (CPU) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for m in MODELS:
        for who in ("ours",) + PEERS[m] + (("ours/tan",) if m == "sim" else ()):
            key = who if "/" in who else f"{who}/{m}"
            r = best.get(key)
            if not r:
                continue
            pair = px.get(f"vs_peer_{m}_{who}") or {}
            out.append(f"| {m} | {'ours (TAN)' if key == 'ours/tan' else who} | {r['examples_per_second']:,.0f} | "
                       f"{1e3 * r['cpu_s_per_step_median']:.1f} | {r['auc']:.4f} | "
                       f"{_f(pair.get('ratio'), '**{:.2f}**')} | {_f(pair.get('ratio_cpu'), '{:.2f}')} |")
    return out


def flops(res: dict) -> List[str]:
    fl = res["details"].get("flops")
    if not fl:
        return ["(not run)"]
    out = [f"Peak (`tf.matmul` 2048^2 fp32, same process): {fl['peak_flops_per_second'] / 1e9:.1f} GFLOP/s "
           f"wall, {fl['peak_flops_per_cpu_second'] / 1e9:.1f} GFLOP per CPU-second.", "",
           "| run | GFLOP/step | GFLOP/s (wall) | % of peak (wall) | % per CPU-second |",
           "|---|---:|---:|---:|---:|"]
    for k, v in fl["fractions"].items():
        out.append(f"| {k} | {fl['step_flops'][k]['matmul_flops'] / 1e9:.2f} | {v['model_flops_per_second'] / 1e9:.1f} | "
                   f"{100 * v['fraction']:.1f} | {_f(100 * v['fraction_per_cpu_second'] if v.get('fraction_per_cpu_second') is not None else None, '{:.1f}')} |")
    return out


def scaling(res: dict) -> List[str]:
    sc = res["details"].get("scaling")
    if not sc:
        return ["(not run)"]
    out = [f"Model {sc.get('model')}, batch {sc.get('batch_size')}.", "",
           "| items | table rows | all tables + Adagrad slots | RSS after build | peak RSS | CPU ms/step |",
           "|---:|---:|---:|---:|---:|---:|"]
    for r in sc.get("vocab", []):
        out.append(f"| {r['n_items']:,} | {r['item_table_rows']:,} | {r['all_tables_bytes_with_adagrad'] / 2 ** 20:,.0f} MiB | "
                   f"{r['rss_built_mib']:,.0f} MiB | {r['peak_rss_mib']:,.0f} MiB | {1e3 * r['cpu_s_per_step_median']:.0f} |")
    out += ["", "| context items | CPU ms/step |", "|---:|---:|"]
    out += [f"| {r['max_context']} | {1e3 * r['cpu_s_per_step_median']:.0f} |" for r in sc.get("context", [])]
    out += ["", "| long-sequence length | CPU ms/step | peak RSS |", "|---:|---:|---:|"]
    out += [f"| {r['long_len']} | {1e3 * r['cpu_s_per_step_median']:.0f} | {r['peak_rss_mib']:,.0f} MiB |"
            for r in sc.get("long", [])]
    return out


def render(res: dict, before: Optional[dict] = None, before_name: str = "") -> str:
    la = res.get("load_average", {})
    m = res.get("machine", {})
    lines = [f"Generated by `python -m benchmarks.report` from `{res.get('command')}` "
             f"({res.get('started')} - {res.get('finished')}; 1-min load {la.get('start', ['?'])[0]} at "
             f"the start, {la.get('end', ['?'])[0]} at the end). Machine: {m.get('cpu_model')}, "
             f"{m.get('cores')} cores, {m.get('memory_gib')} GiB; TensorFlow {m.get('tensorflow')}."
             + (f" \"before\": {before_name} ({before.get('started')})." if before else ""), ""]
    for title, body in (("Training throughput (batch 1024)", throughput(res, before)),
                        ("Auxiliary-loss overhead (target <= 1.15)", overhead(res)),
                        ("Input headroom (target >= 10x)", headroom(res)),
                        ("Peer: DeepCTR DIN (target >= 1.0)", peer(res)),
                        ("Peers in one run: FuxiCTR and DeepCTR", peers_fuxictr(res)),
                        ("Fraction of the matmul peak (target >= 30 %)", flops(res)),
                        ("Scaling", scaling(res))):
        lines += [f"#### {title}", ""] + body + [""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="benchmarks/results.json")
    ap.add_argument("--before", default="", help="an earlier results.json: its CPU ms/step as a column")
    a = ap.parse_args(argv)
    res = json.load(open(a.results))
    before = json.load(open(a.before)) if a.before else None
    sys.stdout.write(render(res, before, a.before) + "\n")


if __name__ == "__main__":
    main()
