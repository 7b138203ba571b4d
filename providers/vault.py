"""Shared Vault/OpenBao plumbing: the bot's client, per-grant child tokens, wrapping, errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import hvac
import hvac.exceptions as hx
import requests

from bot.domain.durations import vault_ttl
from providers.base import GrantSpec, IssuedCredential, ProviderError, WrapTokenInvalid

log = logging.getLogger(__name__)

_NOT_FOUND_HINTS = ("invalid accessor", "invalid lease", "lease not found", "lease id")


@contextlib.contextmanager
def vault_errors(route: str) -> Iterator[None]:
    """Translate hvac and transport errors into ProviderError with a message safe to show."""
    try:
        yield
    except hx.Forbidden:
        raise ProviderError(f"Vault refused {route}: permission denied") from None
    except hx.VaultDown:
        raise ProviderError(f"Vault is sealed or in maintenance ({route})") from None
    except (hx.InternalServerError, hx.BadGateway) as exc:
        raise ProviderError(f"Vault failed at {route}: {_first_error(exc)}") from None
    except hx.VaultError as exc:
        raise ProviderError(f"Vault rejected {route}: {_first_error(exc)}") from None
    except requests.Timeout:
        raise ProviderError(f"Vault did not answer in time ({route})") from None
    except requests.RequestException:
        raise ProviderError(f"cannot reach Vault ({route})") from None
    except (ValueError, KeyError, TypeError):
        raise ProviderError(f"Vault sent an unreadable answer ({route})") from None


def _first_error(exc: hx.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc).split(", on ")[0]]
    first = str(errors[0]).strip().replace("\n", " ")
    return first[:200]


class VaultBackend:
    """The bot's own Vault client, and the per-grant child token flow every provider shares."""

    def __init__(self, client: hvac.Client):
        self.client = client

    def child_client(self, token: str) -> hvac.Client:
        adapter = self.client.adapter
        return hvac.Client(
            url=adapter.base_uri,
            token=token,
            verify=adapter._kwargs.get("verify", True),
            cert=adapter._kwargs.get("cert"),
            timeout=adapter._kwargs.get("timeout", 30),
            namespace=adapter.namespace,
        )

    def issue_with_child(
        self,
        spec: GrantSpec,
        policies: list[str] | None,
        read: Any,
    ) -> IssuedCredential:
        """Create a child token (TTL = the grant), let `read(child)` fetch the credential,
        shorten its lease to the grant, wrap the payload and hand back only what may be kept.

        `read(child) -> (payload, identity, lease_id)`. If anything after the child token
        fails, the child is revoked, taking any lease it made with it.
        """
        ttl = vault_ttl(spec.duration)
        with vault_errors("auth/token/create"):
            created = self.client.auth.token.create(
                policies=policies,
                ttl=ttl,
                explicit_max_ttl=ttl,
                renewable=False,
                display_name=f"breakglass-{spec.request_id}",
                meta={
                    "breakglass_request": str(spec.request_id),
                    "resource": spec.resource,
                    "requester": spec.requester,
                },
            )
            child_token = created["auth"]["client_token"]
            accessor = created["auth"]["accessor"]
            # A child token cannot outlive the bot's own token: Vault may give less.
            lifetime = min(
                int(spec.duration.total_seconds()), int(created["auth"]["lease_duration"])
            )
        issued_at = datetime.now(UTC)
        try:
            child = self.child_client(child_token)
            payload, identity, lease_id = read(child)
            if lease_id:
                with vault_errors("sys/leases/renew"):
                    renewed = child.sys.renew_lease(lease_id, increment=lifetime)
                # The role's max_ttl may cap the lease below what was asked.
                lifetime = min(lifetime, int(renewed["lease_duration"]))
            wrap_seconds = min(int(spec.wrap_ttl.total_seconds()), lifetime)
            with vault_errors("sys/wrapping/wrap"):
                wrapped = child.sys.wrap(payload=payload, ttl=wrap_seconds)["wrap_info"]
        except Exception:
            self.revoke(accessor, None)
            raise
        return IssuedCredential(
            identity=identity,
            token_accessor=accessor,
            lease_id=lease_id,
            issued_at=issued_at,
            expires_at=issued_at + timedelta(seconds=lifetime),
            wrap_accessor=wrapped["accessor"],
            wrap_expires_at=issued_at + timedelta(seconds=wrap_seconds),
            wrapping_token=wrapped["token"],
        )

    def revoke(self, token_accessor: str, lease_id: str | None) -> None:
        """Revoke the lease now (synchronously), then the child token and all it made.

        Both are idempotent: a lease or token that is already gone counts as revoked.
        """
        if lease_id:
            try:
                with vault_errors("sys/leases/revoke"):
                    self.client.sys.revoke_lease(lease_id)
            except ProviderError as exc:
                if not _is_gone(exc):
                    raise
        try:
            with vault_errors("auth/token/revoke-accessor"):
                self.client.auth.token.revoke_accessor(token_accessor)
        except ProviderError as exc:
            if not _is_gone(exc):
                raise

    def check(self) -> None:
        with vault_errors("auth/token/lookup-self"):
            self.client.auth.token.lookup_self()

    def renewal_interval(self) -> int | None:
        """Seconds between renewals of the bot's own token; None when it need not renew
        (a root or non-expiring token) or cannot (not renewable)."""
        with vault_errors("auth/token/lookup-self"):
            data = self.client.auth.token.lookup_self()["data"]
        if not data.get("renewable") or not data.get("ttl"):
            return None
        # Renew well before expiry: child tokens (and so every active grant) die with it.
        return max(30, min(int(data["ttl"]) // 3, 3600))

    def renew_self(self) -> int:
        """Renew the bot's own token; returns its new TTL in seconds."""
        with vault_errors("auth/token/lookup-self"):
            data = self.client.auth.token.lookup_self()["data"]
        # Ask for the token's full original TTL (periodic tokens get their period anyway).
        increment = data.get("creation_ttl") or data.get("period") or None
        with vault_errors("auth/token/renew-self"):
            resp = self.client.auth.token.renew_self(increment=increment)
            return int(resp["auth"]["lease_duration"])

    def unwrap(self, wrapping_token: str) -> dict[str, Any]:
        """Unwrap a single-use token; WrapTokenInvalid when used, expired or unknown."""
        anonymous = self.child_client(wrapping_token)
        try:
            with vault_errors("sys/wrapping/unwrap"):
                return dict(anonymous.sys.unwrap()["data"])
        except ProviderError as exc:
            if "wrapping token is not valid" in str(exc) or "does not exist" in str(exc):
                raise WrapTokenInvalid(
                    "the wrapping token was already used or has expired"
                ) from None
            raise


def _is_gone(exc: ProviderError) -> bool:
    text = str(exc).lower()
    return any(h in text for h in _NOT_FOUND_HINTS)


def vault_client_from_env(
    addr: str | None, token: str | None, *, timeout: float = 10.0
) -> hvac.Client:
    """The bot's client: VAULT_TOKEN, else AppRole (VAULT_ROLE_ID/VAULT_SECRET_ID), else
    Kubernetes auth (VAULT_K8S_ROLE with the pod's service account token)."""
    import os

    client = hvac.Client(url=addr, token=token, timeout=timeout)
    if token:
        return client
    role_id, secret_id = os.environ.get("VAULT_ROLE_ID"), os.environ.get("VAULT_SECRET_ID")
    k8s_role = os.environ.get("VAULT_K8S_ROLE")
    if role_id and secret_id:
        with vault_errors("auth/approle/login"):
            client.auth.approle.login(
                role_id=role_id,
                secret_id=secret_id,
                mount_point=os.environ.get("VAULT_APPROLE_MOUNT", "approle"),
            )
    elif k8s_role:
        jwt_path = os.environ.get(
            "VAULT_K8S_TOKEN_PATH", "/var/run/secrets/kubernetes.io/serviceaccount/token"
        )
        with open(jwt_path) as f, vault_errors("auth/kubernetes/login"):
            client.auth.kubernetes.login(
                role=k8s_role,
                jwt=f.read().strip(),
                mount_point=os.environ.get("VAULT_K8S_MOUNT", "kubernetes"),
            )
    return client
