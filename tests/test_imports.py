"""Imports flow one way (docs/architecture.md): checked statically on the source tree."""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# package -> packages it must never import
FORBIDDEN = {
    "ctrcore": {"ccn", "aqcl", "serving", "pipelines"},
    "pipelines": {"ccn", "aqcl", "serving"},
    "aqcl": {"ccn", "serving"},
    "serving": {"ccn", "aqcl", "pipelines"},
}


def _imported_top_levels(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, mod in _imported_top_levels(path):
            if mod in FORBIDDEN[package]:
                offenders.append(f"{path.relative_to(ROOT)}:{lineno} imports {mod}")
    assert not offenders, "\n".join(offenders)


def _imported_modules(path: pathlib.Path, module_level_only: bool = False):
    """``(lineno, dotted name)`` of every import; ``from a import b`` yields ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


# the trainer's modules (ctrcore/): package -> core modules it must never import
TRAINING_ONLY = {"ctrcore.trainer", "ctrcore.optimizer", "ctrcore.callbacks", "ctrcore.train_input",
                 "ctrcore.record", "ctrcore.runtime"}
FORBIDDEN_MODULES = {
    # serving rebuilds a backbone from a run directory (ctrcore.rundir), never the training loop
    "serving": TRAINING_ONLY,
    # the alpha search reads its trials' run directories only
    "aqcl/search.py": TRAINING_ONLY | {"tensorflow"},
}


@pytest.mark.parametrize("where", sorted(FORBIDDEN_MODULES))
def test_training_only_core_modules(where):
    target = ROOT / where
    paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    offenders = [f"{p.relative_to(ROOT)}:{n} imports {m}" for p in paths
                 for n, m in _imported_modules(p) if m in FORBIDDEN_MODULES[where]]
    assert not offenders, "\n".join(offenders)


def test_trainer_modules_layering():
    """ctrcore.trainer composes the steps of a run; the step modules never import it back, and
    ctrcore.rundir (read by reports, the alpha search, serving) imports only the standard
    library at module level (TensorFlow only for a remote path, ctrcore.metrics when writing)."""
    offenders = []
    for path in sorted((ROOT / "ctrcore").glob("*.py")):
        if path.name == "trainer.py":
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n} imports {m}" for n, m in _imported_modules(path)
                      if m == "ctrcore.trainer"]
    offenders += [f"ctrcore/rundir.py:{n} imports {m} at module level"
                  for n, m in _imported_modules(ROOT / "ctrcore" / "rundir.py", module_level_only=True)
                  if m.split(".")[0] not in ("os", "json", "shutil", "typing", "__future__")]
    assert not offenders, "\n".join(offenders)


# package -> module names it must not name in a string either (importlib, subprocess `-m`, ...);
# docstrings may still mention them
FORBIDDEN_IN_STRINGS = {"aqcl": ("ccn",)}


def _string_constants(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IN_STRINGS))
def test_no_module_names_in_strings(package):
    pattern = re.compile(r"\b(" + "|".join(FORBIDDEN_IN_STRINGS[package]) + r")\b")
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, text in _string_constants(path):
            if pattern.search(text):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno} {text!r}")
    assert not offenders, "\n".join(offenders)


KERAS_SWITCH = 'os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")'


def test_packages_select_legacy_keras():
    """The Keras-2 switch is set in one place per entry point: each package's ``__init__``
    (every ``python -m package.module`` imports it first) and tests/conftest.py; no other
    module of these packages sets it again."""
    places = [ROOT / p / "__init__.py" for p in ("ctrcore", "pipelines", "ccn", "aqcl",
                                                  "serving", "benchmarks")]
    places.append(ROOT / "tests" / "conftest.py")
    for path in places:
        assert KERAS_SWITCH in path.read_text(), path
    again = [str(path.relative_to(ROOT))
             for package in ("ctrcore", "pipelines", "ccn", "aqcl", "serving", "benchmarks",
                             "tests")
             for path in sorted((ROOT / package).glob("*.py"))
             if path not in places
             and re.search(r"^\s*" + re.escape(KERAS_SWITCH), path.read_text(), re.M)]
    assert not again, f"set again outside the package __init__ / conftest: {again}"


def test_no_keras3_imports():
    offenders = []
    for package in FORBIDDEN:
        for path in sorted((ROOT / package).rglob("*.py")):
            for lineno, mod in _imported_top_levels(path):
                if mod == "keras":
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert not offenders, "use tf_keras (Keras 2), not keras 3: " + ", ".join(offenders)
