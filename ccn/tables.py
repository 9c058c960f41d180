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

#: How the configs' hyperparameters were chosen, per data source (``data.source`` of the runs):
#: ``{flag: (chosen value, how and where)}``, printed by ``ccn.report`` under "Hyperparameters"
#: beside the values the runs recorded (a run whose value differs is flagged). A flag not listed
#: was not searched for that source (the paper's value or the config default). Choices are made on
#: validation only (docs/method.md 1.5).
SEARCHED = {
    "synthetic": {
        "ccn_lambda": (0.1, "best validation AUC at convergence (early stopping), seeds 0-4, λ in "
                            "{0.1, 1}: `results/ccn_synthetic_converged_lambda.md`"),
        "ccn_tau": (0.5, "best validation AUC at convergence, seeds 0-2, τ in {0.1, 0.5}: "
                         "`results/ccn_synthetic_converged_sweep.md` (at 5 epochs τ = 0.1 led: "
                         "`results/ccn_synthetic_tau_xi_sweep.md`)"),
        "ccn_xi": (0.8, "validation AUC at 5 epochs, seeds 0-1, ξ in {0.4, 0.8, 1.6}, all within the "
                        "seed spread: the paper's 0.8 kept (`results/ccn_synthetic_tau_xi_sweep.md`)"),
        "learning_rate": (0.05, "validation AUC of the fake data (0.65 vs 0.49 with the paper's 0.001 "
                                "after 111 steps): comment in `configs/common_synthetic.flags`"),
    },
}

#: training settings listed in the "Hyperparameters" section with the values the runs recorded
TRAINING_SETTINGS = ("optimizer", "learning_rate", "lr_decay_steps", "lr_decay_rate", "batch_size",
                     "emb_dim", "mlp_units", "dropout", "epochs", "early_stopping_patience")
