"""Issue 13's invariant: the ``duplicates`` tool lists no pair of places inside the library
packages (``ctrcore/``, ``ccn/``, ``aqcl/``, ``pipelines/``, ``serving/``). The tool is a
development-machine command (not a pip package): where it is not on PATH there is nothing to run."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("ctrcore", "ccn", "aqcl", "pipelines", "serving")


def _pairs_in_packages(report: str):
    rows = [l for l in report.splitlines() if re.match(r"^D\d+ ", l)]
    return [r for r in rows
            if any(re.search(rf"(^|\s){p}/", r) for p in PACKAGES)]


def test_row_filter_finds_package_pairs():
    report = ("2 pairs of places\n"
              "D1 aqcl/a.py:1-9 ~ ccn/b.py:3-11 shape\n"
              "D2 tests/t.py:1-9 ~ benchmarks/u.py:3-11\n")
    assert _pairs_in_packages(report) == ["D1 aqcl/a.py:1-9 ~ ccn/b.py:3-11 shape"]


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the duplicates tool is not installed here")
def test_no_duplicates_inside_the_packages():
    out = subprocess.run(["duplicates", "--most", "200", "--seconds", "120"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300).stdout
    assert "incomplete:" not in out, out
    assert _pairs_in_packages(out) == [], out
