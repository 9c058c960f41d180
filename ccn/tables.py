"""The CCN paper's results table as data (rendered by :mod:`ctrcore.reporting`).

:data:`TABLE2`: CCN paper Table 2 — the competitors (Wide&Deep, DIN, SIM, DIHN, DIAN), the TAN
variants, the CCN ablations (w/o TSI, w/o L_S+, w/o L_S-) and CCN, in the paper's order, keyed by
run key (``ccn.models``); RelaImpr against SIM by default (``ccn.report --base`` overrides it).
Used by ``python -m ccn.report --layout=ccn`` and ``scripts/reproduce_ccn.py`` (its model list).
"""
from __future__ import annotations

from ctrcore.reporting import Row, TableLayout

#: Columns of the CCN table: the paper's AUC plus what the runs record (per-seed wins over the
#: base, GAUC, page AUC, LogLoss, AUC per activeness group, training time and throughput).
COLUMNS = ("n", "auc", "auc_trimmed", "relaimpr", "wins", "gauc", "page_auc", "logloss", ("group_auc",),
           "best_epoch", "best_val_auc", "train_time", "ex_per_s")

TABLE2 = TableLayout(
    name="ccn",
    title="CCN Table 2",
    rows=(Row("wide_deep", "Wide&Deep"), Row("din", "DIN"), Row("sim", "SIM"), Row("dihn", "DIHN"),
          Row("dian", "DIAN"), Row("tan_base", "TAN (w/o CM & TSI)"), Row("tan", "TAN"),
          # ablations of CCN
          Row("ccn_notsi", "CCN (w/o TSI)"), Row("ccn_no_attraction", "CCN (w/o L_S+)"),
          Row("ccn_no_repulsion", "CCN (w/o L_S-)"), Row("ccn", "CCN")),
    columns=COLUMNS,
    base="sim",
    note="DIHN / DIAN: intent label = a click on the trigger's category on the page (a proxy: "
         "docs/method-baselines.md)",
)
