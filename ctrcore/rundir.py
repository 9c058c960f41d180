"""The run directory (``MODEL_DIR``): the one place that knows its file names and layout.

Every file of a training run is read and written through :class:`RunDir`; no other module
opens them by name::

    train_config.json   the run record: every option, the model-specific options (run_info),
                        data digest, seed, plan, command line, versions, code (git commit
                        of each session); checked on resume
                        (ctrcore.record)
    history.json        per-epoch train losses, validation metrics, timings; completed flag;
                        runtime summed over (resumed) sessions (ctrcore.callbacks, ctrcore.trainer)
    metrics.json / .md  the evaluation of the test split (metrics_<split>.json / .md: another
                        split), written by ``ccn.evaluate``
    best/weights.*      weights with the best validation AUC (+ best/best.json)
    backup/             keras BackupAndRestore checkpoints (resume of an interrupted run)
    tb/                 TensorBoard events: train/ and validation/ (tb/worker_<pid>/: a non-chief)

A run's *record* is everything above but the weights, checkpoints and events: the JSON and
Markdown files a report reads (``RECORD_FILES`` and every ``metrics*.json/.md``), a few KB.
:meth:`RunDir.archive` copies it into a ledger (``results/runs/`` for the experiment drivers), which
is committed, so that reports and multi-session experiments outlive the machine that trained them.

JSON files are written atomically (tmp file + rename) as strict JSON (nan -> null). Paths with a
scheme (``gs://...``) go through ``tf.io.gfile``; local paths through the standard library, so
reading a run (reports, the alpha search) does not import TensorFlow.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

CONFIG_FILE = "train_config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
BEST_DIR = "best"
BEST_PREFIX = os.path.join(BEST_DIR, "weights")
BEST_INFO = os.path.join(BEST_DIR, "best.json")
BACKUP_DIR = "backup"
TB_DIR = "tb"

#: the files of a run's record besides its evaluations (``metrics*.json/.md``); see the docstring
RECORD_FILES = (CONFIG_FILE, HISTORY_FILE, BEST_INFO)

_REQUIRED = object()


class RunFileMissing(FileNotFoundError):
    """A file a run directory should hold is not there; the message names its path."""


# ---------------------------------------------------------------------------------------------
# file system: tf.io.gfile for URLs (imported only then), the standard library for local paths
# ---------------------------------------------------------------------------------------------
def _is_url(path: str) -> bool:
    return "://" in path


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _exists(path: str) -> bool:
    return _gfile().exists(path) if _is_url(path) else os.path.exists(path)


def _open(path: str, mode: str = "r"):
    return _gfile().GFile(path, mode) if _is_url(path) else open(path, mode)


def _write_atomic(path: str, data, mode: str = "w") -> None:
    """Write ``data`` to ``path`` through a tmp file renamed over it (readers never see a half file)."""
    tmp = path + ".tmp"
    with _open(tmp, mode) as fh:
        fh.write(data)
    if _is_url(path):
        _gfile().rename(tmp, path, overwrite=True)
    else:
        os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Atomic JSON write (tmp file + rename), strict JSON (nan -> null)."""
    from ctrcore.metrics import to_jsonable

    _write_atomic(path, json.dumps(to_jsonable(obj), indent=1, sort_keys=True, allow_nan=False))


def read_json(path: str, default=None):
    """The JSON at ``path``, or ``default`` when there is no file."""
    if not _exists(path):
        return default
    with _open(path) as fh:
        return json.load(fh)


def finished(run_dir: str, ledger_dir: str = "", archive: bool = True) -> bool:
    """Whether a run has finished: its test evaluation is in the ledger copy ``ledger_dir`` (when
    given) or in ``run_dir``. A finished run not yet in the ledger is archived there
    (:meth:`RunDir.archive`) unless ``archive`` is False (a dry run)."""
    if ledger_dir and RunDir(ledger_dir).has_metrics():
        return True
    run = RunDir(run_dir)
    if not run.has_metrics():
        return False
    if ledger_dir and archive:
        run.archive(ledger_dir)
    return True


# ---------------------------------------------------------------------------------------------
# the run directory
# ---------------------------------------------------------------------------------------------
class RunDir:
    """The files of one run directory. ``read_*`` raise :class:`RunFileMissing` (naming the
    path) for a missing file unless a ``default`` is given."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        # the paths of the run's files (constants of the layout above)
        self.config_path = self.file(CONFIG_FILE)
        self.history_path = self.file(HISTORY_FILE)
        self.best_dir = self.file(BEST_DIR)
        self.best_weights = self.file(BEST_PREFIX)  # checkpoint prefix of the best weights
        self.best_info_path = self.file(BEST_INFO)
        self.backup_dir = self.file(BACKUP_DIR)

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def __fspath__(self) -> str:
        return self.path

    # -- paths -----------------------------------------------------------------------------------
    def file(self, name: str) -> str:
        """Path of ``name`` (relative to the run directory)."""
        return os.path.join(self.path, name)

    def tb_dir(self, chief: bool = True) -> str:
        """TensorBoard events: ``tb/`` (the chief) or ``tb/worker_<pid>`` (another worker)."""
        return self.file(TB_DIR) if chief else os.path.join(self.file(TB_DIR), f"worker_{os.getpid()}")

    @staticmethod
    def metrics_name(split: str = "test", ext: str = "json") -> str:
        """``metrics.<ext>`` for the test split, ``metrics_<split>.<ext>`` for any other."""
        return f"metrics.{ext}" if split == "test" else f"metrics_{split}.{ext}"

    def metrics_path(self, split: str = "test", ext: str = "json") -> str:
        return self.file(self.metrics_name(split, ext))

    # -- existence -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return _exists(self.path)

    def has(self, name: str) -> bool:
        return _exists(self.file(name))

    def has_config(self) -> bool:
        return _exists(self.config_path)

    def has_history(self) -> bool:
        return _exists(self.history_path)

    def has_metrics(self, split: str = "test") -> bool:
        return _exists(self.metrics_path(split))

    def has_best_weights(self) -> bool:
        return _exists(self.best_weights + ".index")

    # -- generic JSON ----------------------------------------------------------------------------
    def read_json(self, name: str, default: Any = _REQUIRED, what: str = "") -> Any:
        """The JSON file ``name`` of the run; ``default`` when it is missing, else
        :class:`RunFileMissing`."""
        path = self.file(name)
        if not _exists(path):
            if default is not _REQUIRED:
                return default
            raise RunFileMissing(f"{path} not found: {self.path} holds no {what or name}"
                                 f"{' (is it a training run directory?)' if not self.has_config() else ''}")
        with _open(path) as fh:
            return json.load(fh)

    def write_json(self, name: str, obj) -> None:
        write_json(self.file(name), obj)

    def write_text(self, name: str, text: str) -> None:
        with _open(self.file(name), "w") as fh:
            fh.write(text)

    # -- the run's files -------------------------------------------------------------------------
    def read_config(self, default: Any = _REQUIRED) -> dict:
        """The run record (``train_config.json``)."""
        return self.read_json(CONFIG_FILE, default, "run record")

    def write_config(self, record: dict) -> None:
        self.write_json(CONFIG_FILE, record)

    def read_history(self, default: Any = _REQUIRED) -> dict:
        """The training history (``history.json``)."""
        return self.read_json(HISTORY_FILE, default, "training history")

    def write_history(self, history: dict) -> None:
        self.write_json(HISTORY_FILE, history)

    def completed(self) -> bool:
        """True once the trainer marked the run completed; False without a readable history."""
        try:
            return bool((self.read_history(default=None) or {}).get("completed"))
        except (OSError, ValueError):
            return False

    def read_best_info(self, default: Any = _REQUIRED) -> dict:
        """``best/best.json``: epoch, global step and validation AUC of the best weights."""
        return self.read_json(BEST_INFO, default, "best-weights record")

    def read_metrics(self, split: str = "test", default: Any = _REQUIRED) -> dict:
        """The evaluation of ``split`` (``metrics.json`` / ``metrics_<split>.json``)."""
        return self.read_json(self.metrics_name(split), default, f"evaluation of split {split!r}")

    def write_metrics(self, split: str, metrics: dict, markdown: str = None) -> None:
        """``metrics(_<split>).json`` and, with ``markdown``, ``metrics(_<split>).md``."""
        self.write_json(self.metrics_name(split), metrics)
        if markdown is not None:
            self.write_text(self.metrics_name(split, "md"), markdown)

    # -- weights ---------------------------------------------------------------------------------
    def save_best(self, model, info: dict) -> None:
        """The model's weights as the best ones (``best/weights``) and their record."""
        model.save_weights(self.best_weights)
        self.write_json(BEST_INFO, info)

    def load_best(self, model) -> None:
        """Load the best weights into ``model`` (a model with more objects than saved is fine)."""
        if not self.has_best_weights():
            raise RunFileMissing(f"no best weights under {self.best_weights} "
                                 f"(did training finish an epoch?)")
        model.load_weights(self.best_weights).expect_partial()

    # -- the record ------------------------------------------------------------------------------
    def record_files(self) -> list:
        """The names (relative to the run directory) of the run's record files that exist:
        :data:`RECORD_FILES` and every evaluation (``metrics*.json``, ``metrics*.md``), sorted."""
        if _is_url(self.path):
            names = [os.path.basename(p) for p in _gfile().glob(self.file("metrics*"))]
        else:
            names = os.listdir(self.path) if os.path.isdir(self.path) else []
        evals = [n for n in names if n.startswith("metrics") and n.endswith((".json", ".md"))
                 and not n.endswith(".tmp")]
        return sorted([n for n in RECORD_FILES if self.has(n)] + evals)

    def archive(self, dest: str) -> "RunDir":
        """Copy the run's record (:meth:`record_files`: no weights, checkpoints or events) into
        the run directory ``dest`` (created), replacing files of the same name; returns it.
        Raises :class:`RunFileMissing` when the run has no evaluation of the test split, since a
        record without one is not a finished run."""
        if not self.has_metrics():
            raise RunFileMissing(f"{self.metrics_path()} not found: {self.path} has no evaluation "
                                 "to archive (has the run finished?)")
        out = RunDir(dest)
        out.create()
        for name in self.record_files():
            with _open(self.file(name), "rb") as src:
                _write_atomic(out.file(name), src.read(), "wb")
        return out

    # -- the directory ---------------------------------------------------------------------------
    def create(self) -> None:
        """Create the directory (and ``best/``)."""
        if _is_url(self.path):
            _gfile().makedirs(self.best_dir)
        else:
            os.makedirs(self.best_dir, exist_ok=True)

    def remove(self) -> None:
        """Delete the run directory and everything in it."""
        if _is_url(self.path):
            _gfile().rmtree(self.path)
        else:
            shutil.rmtree(self.path)
