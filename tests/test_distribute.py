"""Scale-out: the same model trained under tf.distribute strategies matches one device.

Every strategy runs in subprocesses (``python -m tests.test_distribute ROLE ...``, the
``__main__`` block below) because logical CPU devices and TF_CONFIG must be set before the
TensorFlow runtime starts, and the pytest process has already started it.

What is compared: the model (DIN, dropout 0, small MLP, legacy Adagrad, fixed seed) is trained
for ``STEPS`` steps on the same deterministic batches (fake dataset, no shuffle), then the
total loss of a fixed evaluation batch is computed eagerly. One device is the reference.

* MirroredStrategy over two logical CPU devices: every global batch of 64 is split into two
  replicas of 32, gradients are summed (the model divides the loss by the number of
  replicas), so it is the same computation up to float reassociation: tolerance 1e-4 relative.
* MultiWorkerMirroredStrategy, two worker processes on 127.0.0.1 (TF_CONFIG): same synchronous
  arithmetic across processes (collective all-reduce over gRPC): tolerance 1e-4 relative.
* ParameterServerStrategy (chief + 2 workers + 2 ps, ``tf.distribute.Server``s): embedding
  tables sharded across the two ps (``FixedShardsPartitioner(2)`` via the trainer's
  ``variable_partitioner``); training is *asynchronous* (each step is one whole batch on one
  worker, applied to possibly stale parameters), so only closeness is checked:
  tolerance 5e-2 relative on the evaluation loss, and the tables must be ShardedVariables
  with one shard on each ps.

The MWMS and PS tests start several TensorFlow processes (~40-90 s on 2 busy cores) and are
marked ``slow``; the mirrored one is in the default run.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
GLOBAL_BATCH = 64
TOL_SYNC = 1e-4
TOL_PS = 5e-2


# ---------------------------------------------------------------------------------------------
# worker side (runs in a subprocess)
# ---------------------------------------------------------------------------------------------
def _cfg(data_dir, model_dir, distribution="none"):
    from ctrcore.config import TrainConfig

    return TrainConfig(data_dir=data_dir, model_dir=model_dir, model="din", epochs=1,
                       steps_per_epoch=STEPS, batch_size=GLOBAL_BATCH, optimizer="adagrad",
                       learning_rate=0.05, lr_decay_steps=0, emb_dim=8, mlp_units=[16, 8],
                       dropout=0.0, seed=7, deterministic=False, distribution=distribution,
                       early_stopping_patience=0, backup_every_steps=0, verbose=0)


def _eval_batch(data_dir, spec):
    from ctrcore.data import make_dataset

    return next(iter(make_dataset(data_dir, "valid", 128, spec=spec, shuffle=False,
                                  deterministic=True)))


def _train_ds(data_dir, spec, batch):
    import tensorflow as tf

    from ctrcore.data import make_dataset

    # no shuffle, deterministic: the same sequence of batches for every strategy; DATA
    # auto-sharding splits every global batch between the workers (what one device sees)
    ds = make_dataset(data_dir, "train", batch, spec=spec, shuffle=False, repeat=True,
                      deterministic=True)
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts)


def worker_main(role: str, data_dir: str, out_path: str) -> None:
    """``role``: single | mirrored | mwms (TF_CONFIG set by the parent) | ps_chief."""
    if role == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import tensorflow as tf

    from ccn import models
    from ctrcore import schema, trainer

    spec, stats = schema.load_spec(data_dir), schema.load_stats(data_dir)
    dist = {"single": "none", "mirrored": "none", "mwms": "multi_worker_mirrored",
            "ps_chief": "parameter_server"}[role]
    cfg = _cfg(data_dir, os.path.dirname(out_path), dist)
    trainer.setup_runtime(cfg)
    if role == "single":
        strategy = tf.distribute.get_strategy()
    elif role == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif role == "ps_chief":  # the trainer's --distribution wiring, tables forced into 2 shards
        strategy = trainer.make_strategy(
            cfg, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2))
    else:
        strategy = trainer.make_strategy(cfg)
    model = trainer.build_compiled(cfg, models.model_factory(cfg), spec, stats, strategy)
    if role == "ps_chief":
        ds = keras_dataset_creator(data_dir, spec)
    else:
        ds = _train_ds(data_dir, spec, GLOBAL_BATCH)
        if cfg.lookup_in_input:  # as ctrcore.trainer.make_train_input: ids looked up on the input side
            ds = ds.map(model.backbone.lookup)
    t0 = time.time()
    hist = model.fit(ds, epochs=1, steps_per_epoch=STEPS, verbose=0)
    fit_s = time.time() - t0
    feats = _eval_batch(data_dir, spec)
    loss = float(model.compute_loss(feats, training=False).numpy())
    info = {"role": role, "replicas": int(strategy.num_replicas_in_sync), "eval_loss": loss,
            "train_total": [float(x) for x in hist.history["total"]], "fit_seconds": fit_s,
            "steps": int(model.optimizer.iterations.numpy())}
    if role == "ps_chief":
        table = model.backbone.tables["item_id"].embeddings
        info["item_table"] = type(table).__name__
        info["item_table_shards"] = [v.device for v in getattr(table, "variables", [table])]
    else:
        info["devices"] = ([str(d) for d in strategy.extended.worker_devices]
                           if role != "single" else [])
    task = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("task", {})
    if not task or task.get("type") == "chief" or (task.get("type") == "worker" and task.get("index") == 0):
        with open(out_path, "w") as fh:
            json.dump(info, fh)
    del np


def keras_dataset_creator(data_dir, spec):
    import tf_keras as keras

    return keras.utils.experimental.DatasetCreator(
        lambda ctx: _train_ds(data_dir, spec, ctx.get_per_replica_batch_size(GLOBAL_BATCH)))


def server_main(task_type: str, index: int) -> None:
    """A ps / worker of the parameter-server cluster: a tf.distribute.Server from TF_CONFIG."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=task_type, task_index=index,
                                  protocol="grpc", start=True)
    server.join()


# ---------------------------------------------------------------------------------------------
# test side
# ---------------------------------------------------------------------------------------------
def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _env(tf_config=None):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _spawn(args, tf_config=None, log=None):
    return subprocess.Popen([sys.executable, "-m", "tests.test_distribute", *args], cwd=ROOT,
                            env=_env(tf_config), stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _run(role, data_dir, out_dir, tf_config=None, timeout=300):
    out = os.path.join(out_dir, f"{role}.json")
    p = _spawn(["worker", role, data_dir, out], tf_config)
    try:
        stdout, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, _ = p.communicate()
        pytest.fail(f"{role} timed out:\n{stdout[-4000:]}")
    assert p.returncode == 0, f"{role} failed:\n{stdout[-4000:]}"
    with open(out) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ctrcore.testing import write_fake_dataset

    d = str(tmp_path_factory.mktemp("dist_data"))
    write_fake_dataset(d, n_examples=1500, seed=3, n_items=3000)
    return d


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    return _run("single", data, str(tmp_path_factory.mktemp("single")))


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def _report(name, res, single):
    # visible with `pytest -s`; recorded in benchmarks/RESULTS.md
    print(f"\n{name}: replicas {res['replicas']}, eval loss {res['eval_loss']:.6f} vs one device "
          f"{single['eval_loss']:.6f} (rel. diff {_rel(res['eval_loss'], single['eval_loss']):.2e}), "
          f"first-epoch train loss {res['train_total'][0]:.6f} vs {single['train_total'][0]:.6f}, "
          f"fit {res['fit_seconds']:.1f}s vs {single['fit_seconds']:.1f}s")


def test_mirrored_two_logical_cpus_matches_one_device(data, single, tmp_path):
    res = _run("mirrored", data, str(tmp_path))
    _report("mirrored", res, single)
    assert res["replicas"] == 2, res
    assert res["steps"] == single["steps"] == STEPS
    assert _rel(res["eval_loss"], single["eval_loss"]) < TOL_SYNC, (res, single)
    assert _rel(res["train_total"][0], single["train_total"][0]) < TOL_SYNC, (res, single)


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_matches_one_device(data, single, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = os.path.join(str(tmp_path), "mwms.json")
    procs = [_spawn(["worker", "mwms", data, out], {"cluster": cluster, "task": {"type": "worker", "index": i}})
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=400)
            logs.append(stdout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, lg in zip(procs, logs):
        assert p.returncode == 0, lg[-4000:]
    with open(out) as fh:
        res = json.load(fh)
    _report("multi_worker_mirrored", res, single)
    assert res["replicas"] == 2
    assert res["steps"] == STEPS
    assert _rel(res["eval_loss"], single["eval_loss"]) < TOL_SYNC, (res, single)


@pytest.mark.slow
def test_parameter_server_sharded_tables_close_to_one_device(data, single, tmp_path):
    ports = _free_ports(5)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
               "worker": [f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}"],
               "ps": [f"127.0.0.1:{ports[3]}", f"127.0.0.1:{ports[4]}"]}
    servers = []
    try:
        for t, n in (("ps", 2), ("worker", 2)):
            for i in range(n):
                servers.append(_spawn(["server", t, str(i)], {"cluster": cluster, "task": {"type": t, "index": i}},
                                      log=subprocess.DEVNULL))
        res = _run("ps_chief", data, str(tmp_path), {"cluster": cluster, "task": {"type": "chief", "index": 0}},
                   timeout=400)
    finally:
        for p in servers:
            p.kill()
            p.wait()
    _report("parameter_server", res, single)
    print(f"item table: {res['item_table']} shards on {res['item_table_shards']}")
    assert res["item_table"] == "ShardedVariable", res
    assert sorted({d.split("/task:")[1].split("/")[0] for d in res["item_table_shards"]}) == ["0", "1"], res
    assert "/job:ps" in res["item_table_shards"][0]
    assert res["steps"] == STEPS
    assert _rel(res["eval_loss"], single["eval_loss"]) < TOL_PS, (res, single)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "server":
        server_main(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
