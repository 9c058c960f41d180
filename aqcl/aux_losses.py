"""The aqcl package's auxiliary losses (AQCL, ICL and the AQCL paper's baselines): importing
this module registers them with :mod:`ctrcore.auxloss`. A new loss: its own module (config
dataclass + spec) and one ``register`` line here (docs/architecture.md, "Adding an auxiliary
loss")."""
from aqcl import aqcl_plugin, baselines_plugin
from ctrcore.auxloss import register

register(aqcl_plugin.AQCL)
register(aqcl_plugin.ICL)
register(baselines_plugin.DROPOUTNET)
register(baselines_plugin.DEEPMCP)
register(baselines_plugin.DMR)
