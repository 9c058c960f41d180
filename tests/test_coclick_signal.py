"""scripts/coclick_signal.py on hand-made pages: the within-page AUC and the pair shares are
what counting by hand gives."""
import importlib.util
import os

import pandas as pd
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "coclick_signal", os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "coclick_signal.py"))
C = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(C)


def _pages():
    # page a: clicks on x (score 3) and y (1); z (2) and w (0) not clicked -> AUC 3/4
    # page b: one click (score 0) below two non-clicks -> AUC 0; page c: all clicked -> skipped
    rows = [("a", "x", 1, 3.0, "c1"), ("a", "y", 1, 1.0, "c1"), ("a", "z", 0, 2.0, "c1"), ("a", "w", 0, 0.0, "c2"),
            ("b", "x", 1, 0.0, "c1"), ("b", "y", 0, 1.0, "c2"), ("b", "z", 0, 1.0, "c2"),
            ("c", "x", 1, 5.0, "c1"), ("c", "y", 1, 4.0, "c1")]
    return pd.DataFrame(rows, columns=["page_id", "item_id", "clicked", "s", "category_id"])


def test_page_auc_is_the_mean_over_pages_with_both_labels():
    assert C.page_auc(_pages(), "s") == pytest.approx((0.75 + 0.0) / 2)


def test_pair_shares_count_same_category_pairs_by_label():
    r = C.pair_shares(_pages())
    # co-click pairs: a (x,y) same; c (x,y) same -> 2/2. co-non-click: a (z,w) diff; b (y,z) same -> 1/2
    # mono-click: a x-z, y-z same, x-w, y-w diff (2/4); b x-y, x-z diff (0/2) -> 2/6
    assert r["pairs"] == {"co_click": 2, "co_non_click": 2, "mono_click": 6}
    assert r["same_category_co_click"] == pytest.approx(1.0)
    assert r["same_category_co_non_click"] == pytest.approx(0.5)
    assert r["same_category_mono_click"] == pytest.approx(2 / 6)
    assert r["lift_co_click_over_mono_click"] == pytest.approx(3.0)
