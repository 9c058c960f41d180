"""The main job, end to end on the embedded default: synthetic log -> Beam preprocessing ->
training (CE + CCN loss, optionally AQCL) -> evaluation -> SavedModel export.

    python -m ccn.main [--workdir=out/default] [--rows=200000] [--model=ccn] [--aux_losses=]

Each stage is the project's own command-line entry point run as a subprocess, so this is exactly
what a user would type by hand; a stage whose output already exists is skipped (rerun-safe), and
a failing stage stops the job with its exit code and command.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

from ctrcore.rundir import RunDir

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "out/default", "Where the log, data, model and export go.")
flags.DEFINE_integer("rows", 200_000, "Rows of the synthetic exposure log.")
flags.DEFINE_integer("seed", 0, "Seed of the generator, the preprocessing and the training.")
flags.DEFINE_string("model", "ccn", "Model to train (see `python -m ccn.train --helpfull`).")
flags.DEFINE_string("aux_losses", "", "Extra auxiliary losses, e.g. 'aqcl'.")
flags.DEFINE_integer("epochs", 5, "Training epochs (early stopping on validation AUC).")
flags.DEFINE_integer("batch_size", 1024, "Training batch size.")
flags.DEFINE_string("model_name", "ccn", "Name of the exported model (TF Serving MODEL_NAME).")
flags.DEFINE_bool("force", False, "Rerun every stage even if its output exists.")


def _run(stage: str, args: list[str], done_marker: str | None) -> float:
    if done_marker and os.path.exists(done_marker) and not FLAGS.force:
        print(f"[{stage}] skipped: {done_marker} exists", flush=True)
        return 0.0
    cmd = [sys.executable, "-m", *args]
    print(f"[{stage}] $ {shlex.join(cmd)}", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd)
    if rc != 0:
        raise SystemExit(f"[{stage}] failed with exit code {rc}: {shlex.join(cmd)}")
    dt = time.time() - t0
    print(f"[{stage}] done in {dt:.1f}s", flush=True)
    return dt


def main(argv):
    del argv
    w = FLAGS.workdir
    log = os.path.join(w, "log", "exposures.csv")
    data = os.path.join(w, "data")
    model_dir = os.path.join(w, "model", FLAGS.model)
    export_base = os.path.join(w, "export")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    times = {}
    times["synthetic"] = _run("synthetic", [
        "pipelines.synthetic", f"--output={log}", f"--rows={FLAGS.rows}", f"--seed={FLAGS.seed}"], log)
    times["preprocess"] = _run("preprocess", [
        "pipelines.preprocess", "--source=synthetic", f"--input={log}", f"--output_dir={data}",
        f"--seed={FLAGS.seed}", "--runner=DirectRunner"], os.path.join(data, "stats.json"))
    # the tuned synthetic settings (optimizer, lr, lambda: see the comments in that file), then ours
    common = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs", "common_synthetic.flags")
    train_args = [
        "ccn.train", f"--flagfile={common}", f"--data_dir={data}", f"--model_dir={model_dir}", f"--model={FLAGS.model}",
        f"--epochs={FLAGS.epochs}", f"--batch_size={FLAGS.batch_size}", f"--seed={FLAGS.seed}",
        f"--export_base={export_base}", f"--model_name={FLAGS.model_name}"]
    if FLAGS.aux_losses:
        train_args.append(f"--aux_losses={FLAGS.aux_losses}")
    run = RunDir(model_dir)
    times["train+evaluate+export"] = _run("train", train_args, run.metrics_path())
    with open(os.path.join(data, "stats.json")) as fh:
        stats = json.load(fh)
    metrics = run.read_metrics()
    print("\n== Results ==")
    print(f"synthetic log      : {log} ({stats.get('rows_read')} rows read, "
          f"{stats.get('rows_dead_letter')} dead-lettered)")
    print(f"training data      : {data} (examples {stats.get('examples')})")
    print(f"model              : {model_dir}")
    print(f"test metrics       : {run.metrics_path(ext='md')} "
          f"(AUC {metrics['auc']:.4f}, GAUC {metrics['gauc']:.4f}, "
          f"page AUC {metrics['page_auc']:.4f}, logloss {metrics['logloss']:.4f})")
    print(f"SavedModel export  : {os.path.join(export_base, FLAGS.model_name)}")
    print(f"stage times (s)    : {json.dumps({k: round(v, 1) for k, v in times.items()})}")


if __name__ == "__main__":
    app.run(main)
