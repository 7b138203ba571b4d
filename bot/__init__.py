"""breakglass: emergency privileged access through Slack, Vault/OpenBao and an audit trail."""

__version__ = "0.1.0"
