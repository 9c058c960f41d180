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


def test_packages_select_legacy_keras():
    for package in ("ctrcore", "pipelines", "ccn", "aqcl", "serving"):
        text = (ROOT / package / "__init__.py").read_text()
        assert 'os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")' in text, package


def test_no_keras3_imports():
    offenders = []
    for package in FORBIDDEN:
        for path in sorted((ROOT / package).rglob("*.py")):
            for lineno, mod in _imported_top_levels(path):
                if mod == "keras":
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert not offenders, "use tf_keras (Keras 2), not keras 3: " + ", ".join(offenders)
