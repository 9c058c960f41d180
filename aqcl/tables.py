"""The AQCL paper's results tables as data (rendered by :mod:`ctrcore.reporting`).

Rows are keyed by run key (``din+aqcl``: DIN trained with the AQCL loss); the reproduction driver
``scripts/reproduce_aqcl.py`` names its run directories by the key with ``+`` -> ``_``.

* :data:`TABLE2` - AQCL Table 2: DIN and the regularisers on DIN (DropoutNet, DeepMCP, DMR, ICL,
  AQCL), AUC and RelaImpr against DIN overall and per activeness group.
* :data:`TABLE3` - AQCL Table 3: W&D, DeepFM and DIN without / with AQCL; RelaImpr of each AQCL
  row against its own backbone.
* :data:`FIG5_ALPHA` - Fig. 5 (right): AQCL on DIN with a constant alpha in {0, 0.3, 0.6, 1}
  against the adaptive alpha; rows keyed by the runs' configuration directory (their run key is
  ``din+aqcl`` for all).
"""
from __future__ import annotations

from ctrcore.reporting import OWN_BACKBONE, Row, TableLayout

#: Columns of the AQCL tables: the paper's AUC and RelaImpr, overall and per activeness group,
#: plus per-seed wins over the base, GAUC, LogLoss, the kept epoch and the training time.
COLUMNS = ("n", "auc", "relaimpr", "wins", ("group_auc", "group_relaimpr"), "gauc", "logloss",
           "best_epoch", "train_time")


def _layout(name: str, title: str, rows: tuple, base: str, note: str = "") -> TableLayout:
    """An AQCL table: ``rows`` as ``(run key, display name)`` pairs, the :data:`COLUMNS`."""
    return TableLayout(name=name, title=title, rows=tuple(Row(k, d) for k, d in rows),
                       columns=COLUMNS, base=base, note=note)


TABLE2 = _layout("aqcl", "Table 2 (Amazon block): regularisers on DIN", (
    ("din", "DIN"), ("din+dropoutnet", "DropoutNet"), ("din+deepmcp", "DeepMCP"),
    ("din+dmr", "DMR"), ("din+icl", "ICL"), ("din+aqcl", "AQCL")), base="din")

TABLE3 = _layout("aqcl_backbones", "Table 3 (Amazon column): AQCL on other backbones", (
    ("wide_deep", "W&D"), ("wide_deep+aqcl", "AQCL_W&D"), ("deepfm", "DeepFM"),
    ("deepfm+aqcl", "AQCL_DeepFM"), ("din", "DIN"), ("din+aqcl", "AQCL_DIN")), base=OWN_BACKBONE,
    note="RelaImpr of each AQCL row against its own backbone (AQCL_W&D vs W&D, AQCL_DeepFM vs "
         "DeepFM, AQCL_DIN vs DIN); the backbone rows are the bases.")

FIG5_ALPHA = _layout("aqcl_alpha", "Fig. 5 right: constant alpha vs alpha-adaptation (AQCL on DIN)", (
    ("din_aqcl_alpha0", "AQCL alpha=0"), ("din_aqcl_alpha0.3", "AQCL alpha=0.3"),
    ("din_aqcl_alpha0.6", "AQCL alpha=0.6"), ("din_aqcl_alpha1", "AQCL alpha=1"),
    ("din+aqcl", "AQCL")), base="din")


#: The paper's Amazon AUCs (AQCL Table 2, Amazon block, 5 trials; Table 3, Amazon column), by the
#: reproduction driver's model name: what ``scripts/reproduce_aqcl.py`` compares its rows with.
PAPER_AMAZON_AUC = {"din": 0.6956, "din_dropoutnet": 0.6929, "din_deepmcp": 0.7053, "din_dmr": 0.6982,
                    "din_icl": 0.7016, "din_aqcl": 0.7078, "wide_deep": 0.6803,
                    "wide_deep_aqcl": 0.6841, "deepfm": 0.6810, "deepfm_aqcl": 0.6848}
#: Each AQCL row's backbone in Table 3 (driver model names)
BACKBONE_OF = {"din_aqcl": "din", "wide_deep_aqcl": "wide_deep", "deepfm_aqcl": "deepfm"}
