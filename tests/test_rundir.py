"""ctrcore.rundir.RunDir: every file of a run directory written and read back, a missing file
explained with its path, and no other module naming the run files."""
import ast
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ctrcore import rundir
from ctrcore.rundir import RunDir, RunFileMissing

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN_FILES = ("train_config.json", "history.json", "metrics.json")


def test_writes_and_reads_back_every_file(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert not run.exists() and not run.has_config() and not run.completed()
    run.create()
    assert run.exists() and os.path.isdir(run.best_dir)

    record = {"config": {"model": "din", "seed": 3}, "run_info": {"backbone": "din"}, "data": {}}
    run.write_config(record)
    assert run.has_config() and run.read_config() == record

    history = {"epochs": [{"epoch": 1, "val": {"auc": np.float32(0.75), "logloss": float("nan")}}],
               "completed": False}
    run.write_history(history)
    back = run.read_history()
    assert back["epochs"][0]["val"] == {"auc": 0.75, "logloss": None}  # strict JSON: nan -> null
    assert not run.completed()
    run.write_history(dict(history, completed=True))
    assert run.completed()

    run.write_metrics("test", {"auc": 0.7, "n": np.int64(10)}, "# table\n")
    run.write_metrics("valid", {"auc": 0.8})
    assert run.read_metrics() == {"auc": 0.7, "n": 10} and run.read_metrics("valid") == {"auc": 0.8}
    assert run.has_metrics("test") and run.has_metrics("valid") and not run.has_metrics("train")
    assert open(run.metrics_path(ext="md")).read() == "# table\n"
    assert not os.path.exists(run.metrics_path("valid", "md"))

    # the names and layout existing run directories have
    names = set(os.listdir(run.path))
    assert {"train_config.json", "history.json", "metrics.json", "metrics.md", "metrics_valid.json",
            "best"} == names
    with open(os.path.join(run.path, "train_config.json")) as fh:
        assert json.load(fh) == record
    assert run.best_weights == os.path.join(run.path, "best", "weights")
    assert run.best_info_path == os.path.join(run.path, "best", "best.json")
    assert run.backup_dir == os.path.join(run.path, "backup")
    assert run.tb_dir() == os.path.join(run.path, "tb")
    assert run.tb_dir(chief=False) == os.path.join(run.path, "tb", f"worker_{os.getpid()}")
    assert not any(n.endswith(".tmp") for n in names)  # atomic writes leave nothing behind

    run.write_json("extra.json", {"a": [1, 2]})
    assert run.read_json("extra.json") == {"a": [1, 2]} and run.has("extra.json")
    run.remove()
    assert not run.exists()


def test_best_weights_round_trip(tmp_path):
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self, v):
            super().__init__()
            self.v = tf.Variable(v)

        def save_weights(self, prefix):
            tf.train.Checkpoint(v=self.v).write(prefix)

        def load_weights(self, prefix):
            return tf.train.Checkpoint(v=self.v).read(prefix)

    run = RunDir(str(tmp_path))
    run.create()
    with pytest.raises(RunFileMissing, match="best/weights"):
        run.load_best(M(0.0))
    run.save_best(M(2.5), {"epoch": 2, "val_auc": 0.7})
    assert run.has_best_weights() and run.read_best_info() == {"epoch": 2, "val_auc": 0.7}
    m = M(0.0)
    run.load_best(m)
    assert float(m.v.numpy()) == 2.5


@pytest.mark.parametrize("reader,name", [("read_config", "train_config.json"),
                                         ("read_history", "history.json"),
                                         ("read_metrics", "metrics.json"),
                                         ("read_best_info", "best.json")])
def test_missing_file_is_explained_with_its_path(tmp_path, reader, name):
    run = RunDir(str(tmp_path))
    with pytest.raises(RunFileMissing) as e:
        getattr(run, reader)()
    assert isinstance(e.value, FileNotFoundError)
    assert name in str(e.value) and str(tmp_path) in str(e.value)
    assert getattr(run, reader)(default={"x": 1}) == {"x": 1}  # a default instead of the error


def test_metrics_of_another_split_name_the_split(tmp_path):
    with pytest.raises(RunFileMissing, match=r"metrics_valid\.json.*'valid'"):
        RunDir(str(tmp_path)).read_metrics("valid")


def test_reading_a_run_does_not_import_tensorflow():
    code = ("import sys; from ctrcore.rundir import RunDir; RunDir('/nonexistent').completed(); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# nothing but ctrcore/rundir.py names the run files
# ---------------------------------------------------------------------------------------------
def _docstrings(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _names_a_run_file(text: str) -> bool:
    """A string (or f-string piece) that is a run file's name or a path ending in one:
    ``"metrics.json"``, ``f"{d}/history.json"``; prose that mentions a file (a help text, a
    report sentence) is not a path."""
    t = text.strip()
    return any(t == n or t.endswith("/" + n) or t.endswith(os.sep + n) for n in RUN_FILES)


def test_only_rundir_names_the_run_files():
    offenders = []
    for package in ("ctrcore", "ccn", "aqcl", "serving", "pipelines", "scripts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "ctrcore" / "rundir.py":
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and id(node) not in docs and _names_a_run_file(node.value)):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, "open run files through ctrcore.rundir.RunDir:\n" + "\n".join(offenders)


def test_the_scan_catches_what_it_should():
    assert _names_a_run_file("metrics.json") and _names_a_run_file("/history.json")
    assert _names_a_run_file(" train_config.json")
    assert not _names_a_run_file("Split evaluated at the end of training (metrics.json).")
    assert not _names_a_run_file("metrics_valid.json")


def test_module_constants_are_the_file_names():
    # the names existing run directories on disk have (changing one breaks reading them)
    assert (rundir.CONFIG_FILE, rundir.HISTORY_FILE, rundir.METRICS_FILE) == RUN_FILES
    assert RunDir.metrics_name("test") == "metrics.json"
    assert RunDir.metrics_name("valid", "md") == "metrics_valid.md"


def test_archive_copies_the_record_and_nothing_else(tmp_path):
    """The ledger copy: config, history, best.json and every evaluation, no weights, checkpoints
    or events; a report reads the copy as it reads the run."""
    run = RunDir(str(tmp_path / "run"))
    run.create()
    run.write_config({"seed": 1, "run_info": {"run_key": "ccn"}})
    run.write_history({"epochs": [{"epoch": 1, "val": {"auc": 0.7}}], "completed": True})
    run.write_json(rundir.BEST_INFO, {"epoch": 1, "val_auc": 0.7})
    for name in ("best/weights.index", "backup/ckpt-1.index", "tb/events.out", "metrics.json.tmp"):
        os.makedirs(os.path.dirname(run.file(name)), exist_ok=True)
        pathlib.Path(run.file(name)).write_bytes(b"\0" * 64)
    with pytest.raises(RunFileMissing, match="no evaluation to archive"):
        run.archive(str(tmp_path / "ledger" / "ccn" / "seed1"))
    run.write_metrics("test", {"auc": 0.71}, "# t\n")
    run.write_metrics("valid", {"auc": 0.72})

    copy = run.archive(str(tmp_path / "ledger" / "ccn" / "seed1"))
    files = sorted(str(p.relative_to(copy.path)) for p in pathlib.Path(copy.path).rglob("*") if p.is_file())
    assert files == ["best/best.json", "history.json", "metrics.json", "metrics.md", "metrics_valid.json",
                     "train_config.json"]
    assert copy.read_metrics() == {"auc": 0.71} and copy.read_metrics("valid") == {"auc": 0.72}
    assert copy.read_config() == run.read_config() and copy.completed()
    assert copy.read_best_info() == {"epoch": 1, "val_auc": 0.7}
    assert not copy.has_best_weights()
    # archiving again replaces the copy's files (a re-evaluated run)
    run.write_metrics("test", {"auc": 0.73})
    assert run.archive(copy.path).read_metrics() == {"auc": 0.73}
