"""Shared Vault/OpenBao plumbing: per-grant child tokens, wrapping, revocation, and the
translation of hvac's errors into ours (by exception class, that is by HTTP status).

API pages: https://openbao.org/api-docs/auth/token/ , https://openbao.org/api-docs/system/leases/ ,
https://openbao.org/api-docs/system/wrapping-wrap/ (Vault's are the same routes).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import hvac
import hvac.exceptions as hx
import requests

from providers.base import (
    ChildToken,
    GrantSpec,
    IssuedCredential,
    ProviderError,
    VaultForbidden,
    VaultRejected,
    VaultUnavailable,
    WrapTokenInvalid,
)

if TYPE_CHECKING:
    from providers.auth import VaultAuth

log = logging.getLogger(__name__)

# hvac raises one class per HTTP status (hvac.exceptions.VaultError.from_status).
_STATUS: dict[type[hx.VaultError], int] = {
    hx.InvalidRequest: 400,
    hx.Unauthorized: 401,
    hx.Forbidden: 403,
    hx.InvalidPath: 404,
    hx.RateLimitExceeded: 429,
    hx.InternalServerError: 500,
    hx.VaultNotInitialized: 501,
    hx.BadGateway: 502,
    hx.VaultDown: 503,
}
# Statuses meaning "no such thing" (400 is what Vault answers for an unknown accessor or lease).
_ABSENT = (400, 404)

# What `read(child)` hands back to `VaultBackend.finish`: (payload to wrap, identity, lease id).
Reader = Callable[[hvac.Client], tuple[dict[str, Any], str, str | None]]


def ttl_seconds(value: timedelta) -> str:
    """A TTL string Vault accepts: whole seconds."""
    return f"{int(value.total_seconds())}s"


def translate(exc: BaseException, route: str) -> ProviderError:
    """Our error for what hvac or requests raised at `route`, chosen by exception class (that
    is, by HTTP status), never by message text. The message is safe to show."""
    if isinstance(exc, hx.VaultError):
        status = _STATUS.get(type(exc))
        if isinstance(exc, hx.Forbidden | hx.Unauthorized):
            return VaultForbidden(f"Vault refused {route}: permission denied", status=status)
        if isinstance(exc, hx.VaultDown):
            return VaultUnavailable(f"Vault is sealed or in maintenance ({route})", status=status)
        if isinstance(exc, hx.RateLimitExceeded):
            return VaultUnavailable(f"Vault is rate limiting the bot ({route})", status=status)
        if isinstance(exc, hx.InternalServerError | hx.BadGateway | hx.VaultNotInitialized):
            return VaultUnavailable(f"Vault failed at {route}: {_first_error(exc)}", status=status)
        return VaultRejected(f"Vault rejected {route}: {_first_error(exc)}", status=status)
    if isinstance(exc, requests.Timeout):
        return VaultUnavailable(f"Vault did not answer in time ({route})")
    if isinstance(exc, ValueError | KeyError | TypeError):
        # Most often a proxy's error page in place of Vault's JSON.
        return VaultUnavailable(f"Vault sent an unreadable answer ({route})")
    if isinstance(exc, requests.RequestException):
        return VaultUnavailable(f"cannot reach Vault ({route})")
    return ProviderError(f"Vault call failed at {route} ({type(exc).__name__})")


@contextlib.contextmanager
def vault_errors(route: str) -> Iterator[None]:
    """Translate hvac and transport errors raised inside into ProviderError subclasses."""
    try:
        yield
    except ProviderError:
        raise
    except (hx.VaultError, requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise translate(exc, route) from None


def _first_error(exc: hx.VaultError) -> str:
    errors = getattr(exc, "errors", None) or [str(exc).split(", on ")[0]]
    first = str(errors[0]).strip().replace("\n", " ")
    return first[:200]


class VaultBackend:
    """The bot's Vault client, and the per-grant child token flow every provider shares.

    `token_role`: create child tokens through `auth/token/create/{token_role}`, a token role
    with `orphan=true`, so that they do not die with the bot's own token. Without it, each
    child is a child of the bot's current token, and Vault revokes it when that token ends:
    measured on OpenBao 2.7.2, a child created with TTL 1 h was gone as soon as its AppRole
    parent reached its 8 s max TTL (the child's lease_duration still said 3600). A bot that
    logs in again (AppRole, Kubernetes) therefore cuts short every grant issued under the
    previous token unless it uses an orphan token role.

    `auth`: the bot's `VaultAuth`; without a token role, a child's lifetime is capped at what
    is known of the bot's token's own remaining lifetime.
    """

    def __init__(
        self,
        client: hvac.Client,
        *,
        token_role: str | None = None,
        auth: VaultAuth | None = None,
    ):
        self.client = client
        self.token_role = token_role
        self.auth = auth

    @classmethod
    def from_auth(cls, auth: VaultAuth, *, token_role: str | None = None) -> VaultBackend:
        return cls(auth.client, token_role=token_role, auth=auth)

    def child_client(self, token: str, *, timeout: float | None = None) -> hvac.Client:
        """A client on the same Vault with another token (a child or a wrapping token), or
        with the bot's own token and a shorter `timeout`."""
        adapter = self.client.adapter
        return hvac.Client(
            url=adapter.base_uri,
            token=token,
            verify=adapter._kwargs.get("verify", True),
            cert=adapter._kwargs.get("cert"),
            timeout=timeout or adapter._kwargs.get("timeout", 30),
            namespace=adapter.namespace,
        )

    def hurried(self, timeout: float) -> hvac.Client:
        """The bot's own token, with calls that give up after `timeout` seconds: for work
        that must never hold up what it runs before (reading a grant's activity)."""
        return self.child_client(str(self.client.token), timeout=timeout)

    def audit_hash(self, device: str, value: str, *, timeout: float | None = None) -> str:
        """The HMAC that the audit device at `device` writes in place of `value`
        ("hmac-sha256:…"), so our records can be joined with Vault's audit log.
        Route: POST sys/audit-hash/{device}. https://openbao.org/api-docs/system/audit-hash/"""
        route = f"sys/audit-hash/{device}"
        client = self.hurried(timeout) if timeout else self.client
        with vault_errors(route):
            resp = client.sys.calculate_hash(device, value)
            body = resp if isinstance(resp, dict) else resp.json()
            return str((body.get("data") or body)["hash"])

    # ---- issuing: begin (child token), then finish (read, shorten, wrap) ------------------

    def begin(self, spec: GrantSpec, policies: list[str] | None) -> ChildToken:
        """Create the grant's child token, TTL = the grant, not renewable.

        Route: POST auth/token/create (or auth/token/create/{token_role}).
        `policies` None means the bot token's own policies (or the token role's).
        """
        ttl = ttl_seconds(spec.duration)
        route = f"auth/token/create/{self.token_role}" if self.token_role else "auth/token/create"
        issued_at = datetime.now(UTC)  # before Vault starts the TTL: we never promise more
        with vault_errors(route):
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
                role_name=self.token_role,
            )
            auth = created["auth"]
            token, accessor = str(auth["client_token"]), str(auth["accessor"])
            granted = int(auth["lease_duration"])
        # Vault may cap the TTL (mount or system max); a non-orphan child also dies with the
        # bot's own token, which Vault does not reflect in lease_duration.
        lifetime = min(int(spec.duration.total_seconds()), granted)
        if self.token_role is None and self.auth is not None:
            parent_left = self.auth.seconds_left()
            if parent_left is not None:
                lifetime = min(lifetime, int(parent_left))
        return ChildToken(
            accessor=accessor, lifetime=max(lifetime, 0), issued_at=issued_at, token=token
        )

    def finish(self, spec: GrantSpec, child: ChildToken, read: Reader) -> IssuedCredential:
        """Read the credential with `child`, shorten its lease to what is left of the grant,
        wrap the payload, and hand back only what may be kept.

        Routes (with the child token): whatever `read` calls, PUT sys/leases/renew,
        POST sys/wrapping/wrap. If anything fails, the child is revoked (best effort: taking
        any lease it made with it) and the error is raised.
        """
        try:
            client = self.child_client(child.token)
            payload, identity, lease_id = read(client)
            expires_at = child.expires_at
            if lease_id:
                now = datetime.now(UTC)
                left = max(1, int((expires_at - now).total_seconds()))
                with vault_errors("sys/leases/renew"):
                    renewed = client.sys.renew_lease(lease_id, increment=left)
                    got = int(renewed["lease_duration"])
                if got < left:
                    # The role's max_ttl capped the lease. Counted from the child's issue
                    # time, which is earlier: the bot never promises more than Vault gives.
                    expires_at = min(expires_at, child.issued_at + timedelta(seconds=got))
            now = datetime.now(UTC)
            wrap_seconds = max(
                1, min(int(spec.wrap_ttl.total_seconds()), int((expires_at - now).total_seconds()))
            )
            with vault_errors("sys/wrapping/wrap"):
                wrapped = client.sys.wrap(payload=payload, ttl=wrap_seconds)["wrap_info"]
                wrap_accessor, wrapping_token = str(wrapped["accessor"]), str(wrapped["token"])
        except Exception:
            self._revoke_quietly(child.accessor)
            raise
        return IssuedCredential(
            identity=identity,
            token_accessor=child.accessor,
            lease_id=lease_id,
            issued_at=child.issued_at,
            expires_at=expires_at,
            wrap_accessor=wrap_accessor,
            wrap_expires_at=now + timedelta(seconds=wrap_seconds),
            wrapping_token=wrapping_token,
        )

    def issue_with_child(
        self, spec: GrantSpec, policies: list[str] | None, read: Reader
    ) -> IssuedCredential:
        """`begin` then `finish` in one call (for callers that store nothing in between)."""
        return self.finish(spec, self.begin(spec, policies), read)

    def _revoke_quietly(self, accessor: str) -> None:
        try:
            self.revoke(accessor, None)
        except ProviderError as exc:
            log.warning("could not revoke child token %s after a failed issue: %s", accessor, exc)

    # ---- ending ------------------------------------------------------------------------

    def revoke(self, token_accessor: str, lease_id: str | None) -> None:
        """Revoke the lease now (synchronously), then the child token and all it made.

        Routes: PUT sys/leases/revoke, POST auth/token/revoke-accessor.

        Gone is success. Measured on OpenBao 2.7.2 with the bot's policy:
        revoke-accessor for a token that was revoked, has expired, or never existed answers
        200 with the warning "No token found with this accessor"; sys/leases/revoke for an
        unknown, revoked or malformed lease id answers 204. Other versions may answer 400
        instead; then we look the thing up (POST auth/token/lookup-accessor, PUT
        sys/leases/lookup, both measured to answer 400 for what is gone) and count 400/404
        there as gone. If the lookup finds it alive, the revocation's own error is raised.
        """
        if lease_id:
            try:
                with vault_errors("sys/leases/revoke"):
                    self.client.sys.revoke_lease(lease_id)
            except VaultRejected as exc:
                if exc.status not in _ABSENT or self._lease_exists(lease_id):
                    raise
        try:
            with vault_errors("auth/token/revoke-accessor"):
                self.client.auth.token.revoke_accessor(token_accessor)
        except VaultRejected as exc:
            if exc.status not in _ABSENT or self.accessor_exists(token_accessor):
                raise

    def accessor_exists(self, accessor: str) -> bool:
        """Whether a token (child or wrapping) with this accessor is still alive.

        Route: POST auth/token/lookup-accessor. Measured: 200 while the token lives; 400
        ("invalid accessor") once it was revoked, used up, expired, or never existed.
        """
        try:
            with vault_errors("auth/token/lookup-accessor"):
                self.client.auth.token.lookup_accessor(accessor)
        except VaultRejected as exc:
            if exc.status in _ABSENT:
                return False
            raise
        return True

    def _lease_exists(self, lease_id: str) -> bool:
        """Route: PUT sys/leases/lookup. Measured: 400 ("invalid lease") for an unknown lease."""
        try:
            with vault_errors("sys/leases/lookup"):
                self.client.sys.read_lease(lease_id)
        except VaultRejected as exc:
            if exc.status in _ABSENT:
                return False
            raise
        return True

    # ---- delivery ----------------------------------------------------------------------

    def wrap_state(self, wrap_accessor: str) -> Literal["live", "gone"]:
        """Whether the wrapping token still exists: "gone" once unwrapped (by anyone) or
        expired, "live" while it can still be unwrapped.

        Route: POST auth/token/lookup-accessor (the bot's policy allows it). Measured on
        OpenBao 2.7.2: a live wrapping token answers 200 (policies ["response-wrapping"],
        num_uses 1); after its unwrap, or after its TTL, 400. sys/wrapping/lookup would need
        the wrapping token itself, which the bot does not keep. "gone" does not say whether
        it was unwrapped or expired: compare with the recorded wrap expiry for that.
        """
        return "live" if self.accessor_exists(wrap_accessor) else "gone"

    def unwrap(self, wrapping_token: str) -> dict[str, Any]:
        """Unwrap a single-use token. Route: POST sys/wrapping/unwrap, with the wrapping token
        as the request's token. WrapTokenInvalid when used, expired or unknown (measured:
        400 for all three)."""
        anonymous = self.child_client(wrapping_token)
        try:
            with vault_errors("sys/wrapping/unwrap"):
                return dict(anonymous.sys.unwrap()["data"])
        except VaultRejected as exc:
            if exc.status in _ABSENT:
                raise WrapTokenInvalid(
                    "the wrapping token was already used or has expired", status=exc.status
                ) from None
            raise

    # ---- the bot's own token (old API; VaultAuth.maintain() supersedes it) ---------------

    def check(self) -> None:
        """Route: GET auth/token/lookup-self."""
        with vault_errors("auth/token/lookup-self"):
            self.client.auth.token.lookup_self()

    def renewal_interval(self) -> int | None:
        """Seconds between renewals of the bot's own token; None when it need not renew
        (a root or non-expiring token) or cannot (not renewable). Route: GET
        auth/token/lookup-self."""
        with vault_errors("auth/token/lookup-self"):
            data = self.client.auth.token.lookup_self()["data"]
        if not data.get("renewable") or not data.get("ttl"):
            return None
        # Renew well before expiry: child tokens (and so every active grant) die with it.
        return max(30, min(int(data["ttl"]) // 3, 3600))

    def renew_self(self) -> int:
        """Renew the bot's own token; returns its new TTL in seconds. Routes: GET
        auth/token/lookup-self, POST auth/token/renew-self."""
        with vault_errors("auth/token/lookup-self"):
            data = self.client.auth.token.lookup_self()["data"]
        # Ask for the token's full original TTL (periodic tokens get their period anyway).
        increment = data.get("creation_ttl") or data.get("period") or None
        with vault_errors("auth/token/renew-self"):
            resp = self.client.auth.token.renew_self(increment=increment)
            return int(resp["auth"]["lease_duration"])


def mount_max_lease_ttl(client: hvac.Client, mount: str) -> int | None:
    """The mount's effective max lease TTL in seconds (Vault resolves 0 to the system
    default), or None when the token may not read it. Route: GET sys/mounts/{mount}/tune."""
    try:
        with vault_errors(f"sys/mounts/{mount}/tune"):
            return int(client.sys.read_mount_configuration(path=mount)["data"]["max_lease_ttl"])
    except VaultForbidden:
        return None


def vault_client_from_env(
    addr: str | None, token: str | None, *, timeout: float = 10.0
) -> hvac.Client:
    """The bot's client: VAULT_TOKEN, else AppRole (VAULT_ROLE_ID/VAULT_SECRET_ID), else
    Kubernetes auth (VAULT_K8S_ROLE with the pod's service account token).

    Kept for existing callers; `providers.auth.vault_auth_from_env` returns the `VaultAuth`
    that also keeps the token alive."""
    from providers.auth import vault_auth_from_env

    return vault_auth_from_env(addr, token, timeout=timeout).login().client
