"""Joinable with Vault's audit log: the HMACs that Vault's audit device writes in place of a
grant's token accessor and lease id, recorded with the grant, so that a SIEM can join "who
approved in Slack" (our trail) with "what the credential did in Vault" (Vault's)."""

from __future__ import annotations

import logging
from typing import Any

from providers import IssuedCredential, ProviderError, VaultBackend

log = logging.getLogger(__name__)

TIMEOUT = 3.0  # seconds; issuing never waits longer on this


def vault_hmacs(
    backend: VaultBackend, device: str | None, issued: IssuedCredential
) -> dict[str, Any]:
    """{"vault_audit_device", "accessor_hmac", "lease_hmac"} for `issued` (empty without a
    device). A failure leaves them None, says why in "vault_audit_error", and is logged:
    issuing goes on."""
    if device is None:
        return {}
    out: dict[str, Any] = {"vault_audit_device": device, "accessor_hmac": None, "lease_hmac": None}
    try:
        out["accessor_hmac"] = backend.audit_hash(device, issued.token_accessor, timeout=TIMEOUT)
        if issued.lease_id:
            out["lease_hmac"] = backend.audit_hash(device, issued.lease_id, timeout=TIMEOUT)
    except ProviderError as exc:
        log.warning("the Vault audit HMACs of %s are unknown: %s", issued.identity, exc)
        out["vault_audit_error"] = str(exc)
    return out
