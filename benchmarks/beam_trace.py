"""What the FnApiRunner (Beam's Python DirectRunner) holds in the launcher, per stage
(benchmarks only; patches a private method of Beam 2.77, so it may break on other versions).

``install(path)`` wraps ``FnApiRunner._execute_bundle``: after every bundle it appends one JSON
line to ``path`` with the stage name, its start and end time, the launcher's VmRSS, and what
the runner holds at that moment:

* ``input``: the bundle's input buffers (bytes in ``ListBuffer``s; keys and values in
  ``GroupingBuffer``s, whose values are kept decoded, and their byte size when they are bytes);
* ``held``: every buffer the runner still references (``pcoll_buffers`` and the inputs queued
  for later stages), i.e. the PCollections materialized between stages;
* ``side_state``: the bytes in the runner's state servicer (side inputs committed to state,
  kept until the end of the job).
"""
from __future__ import annotations

import json
import time


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _buffer_size(buf) -> dict:
    from apache_beam.runners.portability.fn_api_runner.execution import (GroupingBuffer,
                                                                         ListBuffer)
    if isinstance(buf, ListBuffer):
        n = sum(len(b) for b in buf._inputs)
        g = buf._grouped_output
        if g:
            n += sum(len(b) for part in g for b in part)
        return dict(kind="list", bytes=n)
    if isinstance(buf, GroupingBuffer):
        keys = len(buf._table)
        vals = 0
        vbytes = 0
        for vs in buf._table.values():
            vals += len(vs)
            for v in vs:
                if isinstance(v, bytes):
                    vbytes += len(v)
        g = buf._grouped_output
        gbytes = sum(len(b) for part in g for b in part) if g else 0
        return dict(kind="grouping", keys=keys, values=vals, value_bytes=vbytes,
                    grouped_bytes=gbytes)
    return dict(kind=type(buf).__name__)


def _sum(sizes) -> dict:
    out = dict(list_bytes=0, grouping_values=0, grouping_value_bytes=0, grouped_bytes=0)
    for s in sizes:
        if s["kind"] == "list":
            out["list_bytes"] += s["bytes"]
        elif s["kind"] == "grouping":
            out["grouping_values"] += s["values"]
            out["grouping_value_bytes"] += s["value_bytes"]
            out["grouped_bytes"] += s["grouped_bytes"]
    return out


def _short(name: str) -> str:
    """The top-level transform labels of a fused stage, in order, without repeats."""
    import re

    tops = []
    for t in re.findall(r"ref_AppliedPTransform_(.*?)_\d+\)", name) or [name]:
        top = t.split("-")[0]
        if top not in tops:
            tops.append(top)
    return "+".join(tops)[:200]


def install(path: str) -> None:
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    orig = fn_runner.FnApiRunner._execute_bundle
    if getattr(orig, "_traced", False):
        return
    fh = open(path, "a", buffering=1)

    def traced(self, ctx, bcm, bundle_input):
        t0 = time.time()
        inp = [_buffer_size(b) for b in bundle_input.data.values()]
        res = orig(self, ctx, bcm, bundle_input)
        seen, held = set(), []
        for b in ctx.pcoll_buffers.values():
            if id(b) not in seen:
                seen.add(id(b))
                held.append(_buffer_size(b))
        for q in (ctx.queues.watermark_pending_inputs, ctx.queues.ready_inputs):
            for _, di in list(getattr(q, "_q", [])):
                for b in di.data.values():
                    if id(b) not in seen:
                        seen.add(id(b))
                        held.append(_buffer_size(b))
        try:
            st = ctx.worker_handler_manager.state_servicer._state
            side = sum(len(x) for v in dict(st).values() for x in v if isinstance(x, bytes))
        except Exception:  # noqa: BLE001 - diagnostics only
            side = -1
        fh.write(json.dumps(dict(stage=_short(bcm.stage.name), t0=round(t0, 2),
                                 t1=round(time.time(), 2), rss_mb=round(_rss() / 2**20),
                                 input=_sum(inp), held=_sum(held),
                                 side_state_bytes=side)) + "\n")
        return res

    traced._traced = True
    fn_runner.FnApiRunner._execute_bundle = traced
