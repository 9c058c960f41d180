"""benchmarks.report renders run_all's JSON: ratios, verdicts and headroom come from the numbers."""
import os

import pytest

from benchmarks import report


def _res():
    eps = {"din": 40000.0, "din+aqcl": 20000.0, "tan": 20000.0, "ccn": 16000.0, "wide_deep": 100000.0}
    step = {k: 1024 / v for k, v in eps.items()}
    return {
        "command": "python -m benchmarks.run_all", "started": "t0", "finished": "t1",
        "load_average": {"start": [1.0], "end": [1.5]},
        "machine": {"cpu_model": "cpu", "cores": 2, "memory_gib": 24, "tensorflow": "2.21.0"},
        "aux_overhead": {"ccn": 1.25, "aqcl": 2.0}, "aux_overhead_cpu": {"ccn": 1.10, "aqcl": 2.1},
        "details": {
            "train": {"train_examples_per_second": eps, "step_seconds": step,
                      "cpu_seconds_per_step": {k: 2 * v for k, v in step.items()},
                      "examples_per_cpu_second": {k: v / 2 for k, v in eps.items()},
                      "cpu_util": {k: 1.8 for k in eps}},
            "input": {"fastest_model": "wide_deep", "train_examples_per_second": 100000.0,
                      "trainer_input": {"mode": "memory", "load_seconds": 3.0,
                                        "examples_per_second": 1.5e6, "examples_per_cpu_second": 1.4e6},
                      "parse_after_batch": {"examples_per_second": 1e5, "examples_per_cpu_second": 1.1e5}},
        },
    }


def test_overhead_verdicts_and_headroom_from_numbers():
    md = report.render(_res())
    assert "| ccn / tan | 1.25 | 1.10 | met on wall |" not in md  # wall 1.25 > 1.15
    assert "| ccn / tan | 1.25 | 1.10 | missed |" in md
    assert "| din+aqcl / din | 2.00 | 2.10 | missed |" in md
    assert "-> memory; built in 3.0 s) | 1,500,000 | 1,400,000 | 15.0x |" in md
    assert "| streamed (`--train_input=stream`) | 100,000 | 110,000 | 1.0x |" in md
    assert "| din | 40,000 | 25.6 | **51.2** |" in md
    before = _res()
    before["details"]["train"]["cpu_seconds_per_step"]["din"] = 0.1
    md2 = report.render(_res(), before, "old.json")
    assert "| din | 40,000 | 25.6 | **51.2** | 100.0 |" in md2 and '"before": old.json' in md2


def test_inputs_table_renders_the_measured_ratios():
    from benchmarks.train import inputs_table

    def r(eps):
        return {"examples_per_second": eps}

    res = {"runs": {"din": {"memory": [r(100.0), r(120.0)], "ids": [r(99.0)], "stream": [r(80.0)]}},
           "streamed_over_memory": {"din": 0.9}, "streamed_over_memory_cpu": {"din": 0.91},
           "strings_over_memory": {"din": 0.727}, "strings_over_memory_cpu": {"din": 0.7}}
    lines = inputs_table(res).splitlines()
    assert lines[2] == "| din | 110 | 99 | 80 | **0.90** | 0.91 | 0.73 | 0.70 |"
    for k in ("strings_over_memory", "strings_over_memory_cpu"):  # --inputs=ids
        del res[k]
    lines = inputs_table(res).splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 6
    assert lines[2] == "| din | 110 | 99 | **0.90** | 0.91 |"


def test_steal_fraction_and_thread_cpu_read_proc():
    from benchmarks.train import machine_cpu_ticks, steal_fraction, thread_cpu_seconds

    # user nice system idle iowait irq softirq steal
    assert steal_fraction([0] * 8, [50, 0, 10, 15, 0, 0, 0, 25]) == 0.25
    assert steal_fraction([0] * 8, [10, 0, 0, 0, 0, 0, 0, 0]) == 0.0
    assert steal_fraction(None, [1] * 8) is None and steal_fraction([0] * 8, [0] * 8) is None
    t = machine_cpu_ticks()
    assert t is not None and len(t) == 8 and all(x >= 0 for x in t)
    sum(i * i for i in range(200_000))  # some CPU in this thread
    th = thread_cpu_seconds()
    assert th and all("/" in k for k in th) and sum(th.values()) > 0


def test_run_steady_measures_again_while_the_host_steals(monkeypatch):
    import argparse

    from benchmarks import train

    steals = iter([0.30, 0.20, 0.25, 0.01])
    calls = []

    def fake(module, args, root=None):
        calls.append(args)
        st = next(steals)
        return {"steal_frac": st, "cpu_util": 2 - 3 * st, "step_s_median": 0.03 + st}

    monkeypatch.setattr(train, "run_worker", fake)
    a = argparse.Namespace(max_steal=0.08, steal_retries=2)
    discarded = []
    r = train.run_steady(a, ["--model=din"], "round 0 din ids", discarded=discarded)
    # three attempts (1 + 2 retries), all over the limit: the least stolen is kept
    assert len(calls) == 3 and r["steal_frac"] == 0.20 and r["attempts"] == 3
    assert sorted(d["steal_frac"] for d in discarded) == [0.25, 0.30]
    assert all(d["label"] == "round 0 din ids" for d in discarded)
    # under the limit at once: one attempt, nothing discarded
    steals2 = iter([0.01])
    monkeypatch.setattr(train, "run_worker", lambda m, a_, root=None: {
        "steal_frac": next(steals2)})  # a worker's other fields are optional here
    d2 = []
    assert train.run_steady(a, [], "x", discarded=d2)["attempts"] == 1 and d2 == []


def test_scaling_plot_writes_one_png_per_curve(tmp_path):
    from benchmarks.scaling import plot

    def pt(**kw):
        return dict(cpu_s_per_step_median=0.02, peak_rss_mib=700.0, **kw)

    out = {"model": "ccn", "batch_size": 256, "context": [pt(max_context=c) for c in (5, 20)],
           "vocab": [pt(n_items=n) for n in (10 ** 4, 10 ** 6)], "long": []}
    paths = plot(out, str(tmp_path / "sc"))
    assert [p.rsplit("_", 1)[1] for p in paths] == ["vocab.png", "context.png"]
    for p in paths:
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # the parameter-server points go onto the vocabulary curve: another PNG, the same file name
    out["vocab_parameter_server"] = [pt(n_items=10 ** 7, ps_shards=2)]
    before = open(paths[0], "rb").read()
    assert plot(out, str(tmp_path / "sc"))[0] == paths[0] and open(paths[0], "rb").read() != before


def test_scaling_curves_table_lists_every_point_in_order():
    from benchmarks.scaling import curves_table

    def pt(**kw):
        return dict(step_s_median=0.05, cpu_s_per_step_median=0.041, peak_rss_mib=1234.0, **kw)

    md = curves_table({"context": [pt(max_context=20, steal_frac=0.02), pt(max_context=5)],
                       "long": [pt(long_len=1000, steal_frac=0.1)]})
    lines = md.splitlines()
    assert lines[2] == "| 5 | 50 | 41 | 1,234 | - |" and lines[3] == "| 20 | 50 | 41 | 1,234 | 2 % |"
    assert lines[5].startswith("| long-sequence length") and lines[7] == "| 1,000 | 50 | 41 | 1,234 | 10 % |"
    assert curves_table({"context": [], "long": []}) == ""


def test_scaling_process_probes_read_this_process():
    import os

    from benchmarks.scaling import _cpu_s, _free_ports, _hwm_mib

    assert _hwm_mib(os.getpid()) > 10 and _cpu_s(os.getpid()) > 0
    ports = _free_ports(3)
    assert len(set(ports)) == 3 and all(p > 0 for p in ports)


@pytest.mark.slow
def test_scaling_parameter_server_point_runs_on_a_local_cluster(tmp_path):
    """One --ps_vocab point end to end: 2 ps + 1 worker subprocesses, the item table split over
    the two ps, a step time and a peak RSS per process, and no server left behind."""
    import json
    import subprocess
    import sys

    out = tmp_path / "ps.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    p = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--vocab=", "--context=", "--long=",
                        "--ps_vocab=5000", "--epochs=1", "--steps_per_epoch=2", f"--json={out}"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.load(open(out))["vocab_parameter_server"][0]
    assert r["item_table_rows"] >= 5000 and r["ps_shards"] == 2
    assert sorted({d.split("/task:")[1].split("/")[0] for d in r["item_table_shards"]}) == ["0", "1"]
    assert all("/job:ps" in d for d in r["item_table_shards"])
    assert set(r["peak_rss_mib_per_process"]) == {"ps0", "ps1", "worker0", "chief"}
    assert r["step_s_median"] > 0 and r["cpu_s_per_step_median"] > 0
    assert len(r["server_pids"]) == 3
    assert not [pid for pid in r["server_pids"] if os.path.exists(f"/proc/{pid}")]


def test_compare_inputs_in_process_splits_each_worker_by_input(monkeypatch):
    import argparse

    from benchmarks import train
    from ctrcore import idshards, schema

    monkeypatch.setattr(idshards, "check", lambda *a, **k: None)
    monkeypatch.setattr(schema, "load_spec", lambda d: None)
    seen = []

    def fake(module, args, root=None):
        order = [x.split("=", 1)[1] for x in args if x.startswith("--ab_inputs=")][0]
        seen.append(order)
        step = {"memory": 0.030, "ids": 0.033}
        return {"steal_frac": 0.0, "step_s_median": 0.03, "cpu_util": 1.8,
                "variants": {m: {"examples_per_second": 1024 / s, "cpu_s_per_step_median": 2 * s,
                              "step_s_median": s, "cpu_util": 1.8} for m, s in step.items()}}

    monkeypatch.setattr(train, "run_worker", fake)
    a = train.parser().parse_args(["--compare_inputs", "--in_process", "--inputs=ids", "--rounds=2",
                                   "--models=din"])
    res = train.compare_inputs(a)
    assert seen == ["memory,ids", "ids,memory"]  # one worker per round, the order reversed
    assert res["in_process"] and len(res["runs"]["din"]["ids"]) == 2
    assert res["streamed_over_memory"]["din"] == pytest.approx(0.030 / 0.033)
    assert res["streamed_over_memory_cpu"]["din"] == pytest.approx(0.030 / 0.033)


def test_aux_in_process_pairs_each_ratio_in_one_worker(monkeypatch):
    from benchmarks import train

    seen = []

    def fake(module, args, root=None):
        keys = [x.split("=", 1)[1] for x in args if x.startswith("--ab_keys=")][0].split(",")
        seen.append(keys)
        step = {"din": 0.030, "din+aqcl": 0.066, "tan": 0.070, "ccn": 0.091}
        return {"steal_frac": 0.0, "step_s_median": 0.03, "cpu_util": 1.8,
                "variants": {k: {"step_s_median": step[k], "cpu_s_per_step_median": 2 * step[k]} for k in keys}}

    monkeypatch.setattr(train, "run_worker", fake)
    a = train.parser().parse_args(["--in_process", "--rounds=2", "--models=tan,ccn,din,din+aqcl"])
    res = train.aux_in_process(a)
    assert seen == [["ccn", "tan"], ["din+aqcl", "din"], ["tan", "ccn"], ["din", "din+aqcl"]]
    assert res["aux_overhead"] == {"ccn": pytest.approx(1.3), "aqcl": pytest.approx(2.2)}
    assert res["aux_overhead_cpu"]["aqcl"] == pytest.approx(2.2) and len(res["workers"]["ccn"]) == 2
    with pytest.raises(SystemExit):
        train.aux_in_process(train.parser().parse_args(["--in_process", "--models=din"]))
