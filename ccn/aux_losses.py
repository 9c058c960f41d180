"""The ccn package's auxiliary losses: importing this module registers them with
:mod:`ctrcore.auxloss`. A new loss: its own module (config dataclass + ``SPEC``) and one
``register`` line here (docs/architecture.md, "Adding an auxiliary loss")."""
from ccn import ccn_plugin, intent_plugin
from ctrcore.auxloss import register

register(ccn_plugin.SPEC)
register(intent_plugin.SPEC)
