"""The decomposition behind results/synthetic_truth_analysis.md on hand-made pages: between-page
and within-page correlations are separated (a model can get one right and the other wrong)."""
import importlib.util
import os

import numpy as np
import pytest

_P = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "synthetic_truth_analysis.py")
_S = importlib.util.spec_from_file_location("synthetic_truth_analysis", _P)
A = importlib.util.module_from_spec(_S)
_S.loader.exec_module(A)


def test_between_and_within_page_correlations_are_separated():
    page = np.array(["a", "a", "b", "b", "c", "c", "d"])
    truth = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
    # right order inside every page, page levels reversed
    pred = np.array([10.0, 11.0, 8.0, 9.0, 6.0, 7.0, 0.0])
    d = A.decomposition(page, truth, pred)
    assert d["corr_within"] == pytest.approx(1.0) and d["corr_between"] < -0.9
    assert d["pages"] == 4 and d["pages_2plus"] == 3  # page d (one item) only in the between part
    # right page levels, every page's order reversed
    pred2 = np.array([1.0, 0.0, 3.0, 2.0, 5.0, 4.0, 9.0])
    d2 = A.decomposition(page, truth, pred2)
    assert d2["corr_within"] == pytest.approx(-1.0) and d2["corr_between"] == pytest.approx(1.0)
