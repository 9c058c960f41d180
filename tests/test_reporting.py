"""ctrcore.reporting against hand-computed values: mean ± std over seeds, the CCN trimmed mean,
paired wins, RelaImpr (AQCL Eq. 9) and its guard, summaries of run records, and a table layout
rendered to an exact Markdown string. No TensorFlow, no files."""
import math
import subprocess
import sys

import pytest

from ctrcore import metrics as M
from ctrcore import reporting as R


def _rec(key, seed, auc, group_auc, train_seconds, **metrics):
    return {"dir": f"runs/{key}/seed{seed}", "key": key, "seed": seed,
            "metrics": dict({"auc": auc, "groups": {"non_active": {"auc": group_auc, "n": 10}}}, **metrics),
            "record": {"run_info": {"command": f"train --model={key} --seed={seed}"}},
            "history": {"runtime": {"train_seconds": train_seconds}, "best": {"epoch": 3}}}


def test_mean_std_over_the_values_that_are_there():
    r = R.mean_std([0.70, 0.72, 0.74])
    assert r["mean"] == pytest.approx(0.72) and r["std"] == pytest.approx(0.02) and r["n"] == 3
    assert R.mean_std([0.7, None, float("nan")]) == {"mean": 0.7, "std": None, "n": 1}  # one value: no std
    assert R.mean_std([None]) == {"mean": None, "std": None, "n": 0}
    assert R.mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_trimmed_mean_drops_one_best_and_one_worst():
    assert R.trimmed_mean([0.9, 0.1, 0.5, 0.6, 0.4]) == pytest.approx(0.5)
    assert R.trimmed_mean([0.3, 0.9, 0.1]) == pytest.approx(0.3)
    assert R.trimmed_mean([0.7, 0.8]) is None and R.trimmed_mean([None, 0.7, 0.8]) is None


def test_paired_wins_counts_common_seeds_only():
    w = R.paired_wins({0: 0.71, 1: 0.70, 2: 0.75, 3: None}, {0: 0.70, 1: 0.72, 3: 0.6, 4: 0.7})
    assert w == {"seeds": [0, 1], "n": 2, "wins": 1}
    assert R.paired_wins({}, {0: 0.7}) == {"seeds": [], "n": 0, "wins": 0}


def test_relaimpr_eq9_and_its_guard():
    assert R.relaimpr is M.relaimpr  # one definition
    assert R.relaimpr(0.7078, 0.6956) == pytest.approx(6.24, abs=0.01)  # AQCL Table 2, Amazon
    assert R.relaimpr(0.76, 0.72) == pytest.approx((0.26 / 0.22 - 1) * 100)
    assert R.relaimpr(0.72, 0.72) == 0.0
    # a base at chance would divide by zero, one just above it gives arbitrary numbers: undefined
    # (nan, shown as '-'), never an exception or an inf in a table
    assert math.isnan(R.relaimpr(0.7, 0.5)) and math.isnan(R.relaimpr(0.7, 0.45))
    assert math.isnan(R.relaimpr(0.52, 0.5 + R.RELAIMPR_MIN_BASE_LIFT / 2))
    assert math.isnan(R.relaimpr(None, 0.7)) and math.isnan(R.relaimpr(0.7, float("nan")))
    assert R.fmt_pct(R.relaimpr(0.7, 0.5)) == "-" and R.fmt_pct(6.2391) == "+6.24%"


def test_seed_order_puts_unknown_seeds_last():
    assert sorted([3, None, 0, 1], key=R.seed_order) == [0, 1, 3, None]


def test_summarise_and_compare():
    runs = [_rec("a", 1, 0.72, 0.62, 12.0), _rec("a", 0, 0.70, 0.60, 10.0, best_epoch=5),
            _rec("b", 0, 0.75, 0.65, 20.0), _rec("b", 1, 0.71, 0.63, 22.0)]
    s = R.summarise(runs, groups=("non_active",))
    a, b = s["a"], s["b"]
    assert a["seeds"] == [0, 1] and a["n_seeds"] == 2 and a["auc_per_seed"] == {0: 0.70, 1: 0.72}
    assert a["auc"]["mean"] == pytest.approx(0.71) and a["auc"]["std"] == pytest.approx(math.sqrt(2e-4))
    assert a["groups"]["non_active"]["auc"]["mean"] == pytest.approx(0.61)
    assert a["groups"]["non_active"]["n"] == [10]
    assert a["runtime"]["train_seconds"]["mean"] == pytest.approx(11.0)
    # best epoch from metrics.json, else history.json's
    assert a["best_epoch"]["mean"] == pytest.approx(4.0) and b["best_epoch"]["mean"] == 3.0
    assert a["commands"] == ["train --model=a --seed=0", "train --model=a --seed=1"]
    c = R.compare(b, a, groups=("non_active",))
    assert c["relaimpr"]["auc"] == pytest.approx((0.23 / 0.21 - 1) * 100)
    assert c["relaimpr"]["groups"]["non_active"] == pytest.approx((0.14 / 0.11 - 1) * 100)
    assert c["paired"] == {"seeds": [0, 1], "n": 2, "wins": 1}
    R.add_comparisons(s, lambda k: "a", groups=("non_active",))
    assert s["b"]["relaimpr_base"] == "a" and s["b"]["paired_vs_base"]["wins"] == 1
    assert s["a"]["relaimpr"]["auc"] == 0.0
    R.add_comparisons(s, lambda k: "missing")
    assert s["b"]["relaimpr"] is None and s["b"]["relaimpr_base"] is None


LAYOUT = R.TableLayout(name="t", title="Toy table", rows=(R.Row("a", "A"), R.Row("b", "B"), R.Row("c", "C")),
                       columns=("n", "auc", "relaimpr", "wins", ("group_auc", "group_relaimpr"), "train_time"),
                       base="a", groups=("non_active",), note="B against A.")


def _toy_summaries():
    return R.summarise([_rec("a", 0, 0.70, 0.60, 10.0), _rec("a", 1, 0.72, 0.62, 12.0),
                        _rec("b", 0, 0.75, 0.65, 20.0), _rec("b", 1, 0.71, 0.63, 22.0)], groups=("non_active",))


def test_layout_renders_to_exact_markdown():
    lines = R.render_table(LAYOUT, _toy_summaries())
    assert "\n".join(lines) == (
        "| Model | n | AUC | RelaImpr | > base | non-active AUC | RelaImpr | train time |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
        "| A (`a`) | 2 | 0.7100 ± 0.0141 | +0.00% | - | 0.6100 ± 0.0141 | +0.00% | 11s |\n"
        "| B (`b`) | 2 | 0.7300 ± 0.0283 | +9.52% | 1/2 | 0.6400 ± 0.0141 | +27.27% | 21s |\n"
        "| C (`c`) | 0 | not run | | | | | |")
    # a section: title, note, only the rows that have runs, labels without keys
    sec = R.render_section(LAYOUT, _toy_summaries(), show_keys=False)
    assert sec[:4] == ["## Toy table", "", "B against A.", ""]
    assert [l.split(" |")[0] for l in sec[6:-1]] == ["| A", "| B"] and sec[-1] == ""
    assert R.render_section(LAYOUT, {}) == ["## Toy table", "", "(no finished runs yet)", ""]
    # another base for every row (e.g. ccn.report --base), extra rows after the layout's
    other = R.render_table(LAYOUT, _toy_summaries(), base="b", extra_rows=[R.Row("z", "Z")], show_missing=False)
    assert other[2].startswith("| A (`a`) | 2 | 0.7100 ± 0.0141 | -8.70% | 1/2 |") and other[-1].startswith("| B (`b`)")


def test_own_backbone_base_and_layout_checks():
    t = R.TableLayout(name="t3", title="T3", rows=(R.Row("din", "DIN"), R.Row("din+aqcl", "AQCL_DIN")),
                      columns=("n",), base=R.OWN_BACKBONE)
    assert t.base_of("din+aqcl") == "din" and t.base_of("din") is None and t.base_of("tan+x") == "tan"
    assert t.base_of("din", override="sim") == "sim" and t.fixed_base is None and LAYOUT.fixed_base == "a"
    with pytest.raises(ValueError, match="unknown column"):
        R.TableLayout(name="x", title="x", rows=(), columns=("nope",))
    with pytest.raises(ValueError, match="per-group"):
        R.TableLayout(name="x", title="x", rows=(), columns=("group_auc",))
    with pytest.raises(ValueError, match="duplicated"):
        R.TableLayout(name="x", title="x", rows=(R.Row("a", "A"), R.Row("a", "B")), columns=("n",))


def test_paper_layouts_name_registered_run_keys():
    """Every row of both papers' tables is a run key ccn.train can produce (model + aux losses),
    except the Fig. 5 ablation rows, which are configuration directories of din+aqcl runs."""
    from aqcl import tables as A
    from ccn import models
    from ccn import tables as C
    from ctrcore import auxloss

    for layout in (C.TABLE2, A.TABLE2, A.TABLE3, A.FIG5_ALPHA):
        for row in layout.rows:
            if layout is A.FIG5_ALPHA and row.key.startswith("din_aqcl_alpha"):
                continue
            model, *aux = row.key.split("+")
            assert model in models.MODELS, row.key
            assert all(a in auxloss.names() for a in aux), row.key
    assert [r.key for r in C.TABLE2.rows] == [k for k in models.MODELS if k != "deepfm"]


def test_reporting_does_not_import_tensorflow():
    code = "import sys, ctrcore.reporting, ccn.tables, aqcl.tables; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
