"""The bot's own Vault identity, kept alive as long as the bot runs: log in (a given token,
AppRole or Kubernetes), renew, log in again before the max TTL, and say whether it is ready.

API pages: https://openbao.org/api-docs/auth/token/ , https://openbao.org/api-docs/auth/approle/ ,
https://openbao.org/api-docs/auth/kubernetes/ , https://openbao.org/api-docs/system/health/
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import hvac
import requests
from requests.adapters import HTTPAdapter

from providers.base import ProviderError, VaultForbidden
from providers.vault import vault_errors

# Connections kept open to Vault: as many as threads call it at once (a batch of revocations,
# the sweep, requests being served), so none is opened and thrown away per call.
VAULT_CONNECTIONS = 32


def _pooled_session(
    verify: bool | str = True, cert: tuple[str, str] | None = None
) -> requests.Session:
    """A session with a pool for the threads that call Vault. hvac takes TLS settings from a
    session it is given over its own arguments (hvac issue 991), so they are set here."""
    session = requests.Session()
    session.verify = verify
    session.cert = cert
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=VAULT_CONNECTIONS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


log = logging.getLogger(__name__)

DEFAULT_K8S_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# sys/health answers these for a reachable, unsealed node that is not the active one.
_STANDBY_CODES = (429, 472, 473)


@dataclass(frozen=True)
class TokenLogin:
    """A token handed to the bot (VAULT_TOKEN): it can be renewed, never replaced."""

    token: str | None = field(repr=False)


@dataclass(frozen=True)
class AppRoleLogin:
    """AppRole. Route: POST auth/{mount}/login."""

    role_id: str = field(repr=False)
    secret_id: str = field(repr=False)
    mount: str = "approle"


@dataclass(frozen=True)
class KubernetesLogin:
    """Kubernetes auth with the pod's service account token, read afresh at each login
    (projected tokens rotate). Route: POST auth/{mount}/login."""

    role: str
    jwt_path: str = DEFAULT_K8S_JWT_PATH
    mount: str = "kubernetes"


LoginMethod = TokenLogin | AppRoleLogin | KubernetesLogin


@dataclass(frozen=True)
class AuthStatus:
    """What `VaultAuth.maintain()` found and did. `degraded` and `failed` deserve an alert;
    `failed` also means not ready: the bot's token cannot be renewed or replaced."""

    state: Literal["ok", "degraded", "failed"]
    reason: str
    ttl: int | None = None  # seconds the current token has left; None: no expiry, or unknown
    renewed: bool = False
    relogged: bool = False

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class VaultAuth:
    """Owns the bot's token on one shared hvac client, for as long as the bot runs.

    Call `maintain()` every `interval` seconds (30 to 60 in production). It renews the token
    when a third of its TTL is gone, logs in again (AppRole, Kubernetes) before the token
    reaches its max TTL or whenever renewal fails, and puts the new token on the shared
    client in one attribute assignment, so every thread sees the old token or the new one,
    never a mix. The old token is not revoked: Vault would revoke its children with it.

    Vault does not tell a token's max TTL (an AppRole `token_max_ttl` shows as
    explicit_max_ttl 0 in lookup-self); it shows when a renewal returns less than asked
    (measured on OpenBao 2.7.2: "TTL ... exceeded the effective max_ttl", then a 500 "past
    the max TTL, cannot renew"). From then on the end is known and the next login is due a
    third of the TTL plus two intervals before it.
    """

    def __init__(
        self,
        addr: str | None,
        method: LoginMethod,
        *,
        timeout: float = 10.0,
        verify: bool | str = True,
        namespace: str | None = None,
        cert: tuple[str, str] | None = None,
        interval: float = 60.0,
    ):
        self.method = method
        self.interval = interval
        self._client_args: dict[str, Any] = {
            "url": addr,
            "timeout": timeout,
            "verify": verify,
            "namespace": namespace,
            "cert": cert,
        }
        # "" and never None: given None, hvac falls back to ~/.vault-token, a person's own
        # token, which the bot must never borrow without being told to.
        token = (method.token if isinstance(method, TokenLogin) else None) or ""
        self.client = hvac.Client(
            token=token, session=_pooled_session(verify, cert), **self._client_args
        )
        self._lock = threading.Lock()
        self._ends_at: float | None = None  # monotonic: the token's TTL runs out (last seen)
        self._hard_end: float | None = None  # monotonic: the token ends, renewed or not

    @property
    def can_login(self) -> bool:
        """Whether a new token can be had (AppRole, Kubernetes), not only renewed."""
        return not isinstance(self.method, TokenLogin)

    @property
    def method_name(self) -> str:
        return {TokenLogin: "token", AppRoleLogin: "AppRole", KubernetesLogin: "Kubernetes"}[
            type(self.method)
        ]

    def login(self) -> VaultAuth:
        """Log in (AppRole or Kubernetes) and put the token on the shared client. A given
        token needs no login: nothing is sent."""
        if self.can_login:
            with self._lock:
                self._relogin()
        return self

    def seconds_left(self) -> float | None:
        """Seconds until the current token surely ends (its max TTL, or the TTL of a token
        that cannot be renewed), if known."""
        if self._hard_end is None:
            return None
        return max(0.0, self._hard_end - time.monotonic())

    def maintain(self) -> AuthStatus:
        """Renew or replace the token as needed; say how it stands.

        Routes: GET auth/token/lookup-self, POST auth/token/renew-self, and the login route.
        """
        with self._lock:
            return self._maintain()

    def _maintain(self) -> AuthStatus:
        try:
            with vault_errors("auth/token/lookup-self"):
                data = self.client.auth.token.lookup_self()["data"]
        except VaultForbidden:
            return self._replace(
                "the bot's Vault token is no longer valid (expired or revoked)", dead=True
            )
        except ProviderError as exc:
            left = self._ttl_left()
            if left is not None and left <= 0:
                return AuthStatus(
                    "failed",
                    f"the bot's Vault token has expired and cannot be renewed or replaced "
                    f"now ({exc})",
                    ttl=0,
                )
            return AuthStatus(
                "degraded", f"cannot check the bot's Vault token: {exc}", ttl=_int(left)
            )

        ttl = int(data.get("ttl") or 0)
        if not ttl and not data.get("expire_time"):  # a root token, or one made without TTL
            self._ends_at = self._hard_end = None
            return AuthStatus("ok", "the bot's Vault token does not expire")
        now = time.monotonic()
        self._ends_at = now + ttl
        renewable = bool(data.get("renewable"))
        if not renewable:
            self._hard_end = now + ttl
        full = int(data.get("period") or data.get("creation_ttl") or ttl)
        margin = self._margin(full)

        if self._hard_end is not None and self._hard_end - now <= margin:
            if self.can_login:
                return self._replace("the bot's Vault token is near its max TTL")
            return self._cannot_last(min(ttl, int(self._hard_end - now)), margin, renewable)
        if renewable and (ttl <= full * 2 / 3 or ttl <= 2 * self.interval):
            return self._renew(full, margin)
        if not renewable:
            return self._cannot_last(ttl, margin, renewable)
        return AuthStatus("ok", f"the bot's Vault token has {ttl} s left", ttl=ttl)

    def _renew(self, increment: int, margin: float) -> AuthStatus:
        try:
            with vault_errors("auth/token/renew-self"):
                resp = self.client.auth.token.renew_self(increment=f"{increment}s")
                got = int(resp["auth"]["lease_duration"])
        except ProviderError as exc:
            if self.can_login:
                return self._replace(f"renewal of the bot's Vault token failed ({exc})")
            left = self._ttl_left()
            if left is not None and left <= 2 * self.interval:
                return AuthStatus(
                    "failed",
                    f"the bot's Vault token expires in {int(left)} s and cannot be renewed or "
                    f"replaced ({exc})",
                    ttl=int(left),
                )
            return AuthStatus(
                "degraded", f"renewal of the bot's Vault token failed ({exc})", ttl=_int(left)
            )
        now = time.monotonic()
        self._ends_at = now + got
        if got < increment:
            # Capped: the max TTL is reached at the end of this TTL.
            self._hard_end = now + got
            if got <= margin and self.can_login:
                return self._replace("the bot's Vault token reached its max TTL")
        return AuthStatus("ok", f"renewed the bot's Vault token for {got} s", ttl=got, renewed=True)

    def _cannot_last(self, left: int, margin: float, renewable: bool) -> AuthStatus:
        """A token that can be neither renewed past its end nor replaced: ok while far from
        its end, degraded within the margin (time for a person to act), failed within two
        maintain() intervals of it."""
        what = "its max TTL" if renewable else "the end of its TTL"
        reason = (
            f"the bot's Vault token reaches {what} in {left} s and cannot be renewed or replaced"
        )
        if left <= 2 * self.interval:
            return AuthStatus("failed", reason, ttl=left)
        if left <= margin:
            return AuthStatus("degraded", reason, ttl=left)
        return AuthStatus("ok", f"the bot's Vault token cannot be renewed; {left} s left", ttl=left)

    def _replace(self, why: str, *, dead: bool = False) -> AuthStatus:
        """Log in again, or say that the token can be neither renewed nor replaced. `dead`:
        the current token no longer works (worth an alert even when the login succeeds)."""
        if not self.can_login:
            return AuthStatus(
                "failed", f"{why}; it cannot be renewed or replaced", ttl=_int(self._ttl_left())
            )
        try:
            ttl = self._relogin()
        except ProviderError as exc:
            left = self._ttl_left()
            if dead or left is None or left <= 0:
                return AuthStatus(
                    "failed", f"{why}, and it cannot be renewed or replaced: {exc}", ttl=0
                )
            return AuthStatus(
                "degraded",
                f"{why}, and logging in again failed ({exc}); {int(left)} s left",
                ttl=int(left),
            )
        state: Literal["ok", "degraded"] = "degraded" if dead else "ok"
        return AuthStatus(
            state, f"{why}; logged in again ({self.method_name})", ttl=ttl, relogged=True
        )

    def _relogin(self) -> int:
        """Log in on a separate client, then swap the token on the shared one. Returns the
        new token's TTL in seconds (0: no expiry)."""
        fresh = hvac.Client(token="", **self._client_args)  # "": not ~/.vault-token
        method = self.method
        if isinstance(method, AppRoleLogin):
            route = f"auth/{method.mount}/login"
            with vault_errors(route):
                resp = fresh.auth.approle.login(
                    role_id=method.role_id,
                    secret_id=method.secret_id,
                    mount_point=method.mount,
                    use_token=False,
                )
        elif isinstance(method, KubernetesLogin):
            jwt = _read_jwt(method.jwt_path)
            route = f"auth/{method.mount}/login"
            with vault_errors(route):
                resp = fresh.auth.kubernetes.login(
                    role=method.role, jwt=jwt, mount_point=method.mount, use_token=False
                )
        else:
            raise ProviderError("a given Vault token cannot be replaced by logging in")
        with vault_errors(route):
            auth = resp["auth"]
            token = str(auth["client_token"])
            ttl = int(auth.get("lease_duration") or 0)
            renewable = bool(auth.get("renewable"))
        now = time.monotonic()
        self._ends_at = now + ttl if ttl else None
        self._hard_end = now + ttl if ttl and not renewable else None
        self.client.token = token  # one attribute assignment: atomic for every thread
        log.info("logged in to Vault again (%s); token TTL %s s", self.method_name, ttl)
        return ttl

    def _ttl_left(self) -> float | None:
        if self._ends_at is None:
            return None
        return max(0.0, self._ends_at - time.monotonic())

    def _margin(self, full_ttl: int) -> float:
        """How long before the end to act: a third of the TTL plus two maintain() intervals,
        but never more than two thirds of the TTL."""
        return min(full_ttl / 3 + 2 * self.interval, full_ttl * 2 / 3)

    def readiness(self) -> tuple[bool, str]:
        """Whether Vault is usable now: reachable, initialized, unsealed, and the bot's token
        valid. Routes: GET sys/health (no token needed), GET auth/token/lookup-self."""
        try:
            with vault_errors("sys/health"):
                health = self.client.sys.read_health_status(method="GET")
        except ProviderError as exc:
            return False, str(exc)
        if isinstance(health, dict):
            if health.get("sealed"):
                return False, "Vault is sealed"
        else:
            code = health.status_code
            if code == 503:
                return False, "Vault is sealed"
            if code == 501:
                return False, "Vault is not initialized"
            if code not in _STANDBY_CODES:
                return False, f"Vault's health check answered HTTP {code}"
        try:
            with vault_errors("auth/token/lookup-self"):
                data = self.client.auth.token.lookup_self()["data"]
        except VaultForbidden:
            return False, "the bot's Vault token is not valid (expired or revoked)"
        except ProviderError as exc:
            return False, str(exc)
        ttl = int(data.get("ttl") or 0)
        return True, (f"ok; the bot's token has {ttl} s left" if ttl else "ok")


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _read_jwt(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise ProviderError(
            f"cannot read the Kubernetes service account token at {path} "
            f"({exc.strerror or type(exc).__name__})"
        ) from None


def credentials_problems(token: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """What is missing or half-set in the bot's Vault credentials, found without calling
    Vault: the bot uses VAULT_TOKEN, AppRole or Kubernetes auth from the environment, and
    never a token file in the home folder (hvac's fallback)."""
    env = os.environ if environ is None else environ
    role_id, secret_id = env.get("VAULT_ROLE_ID"), env.get("VAULT_SECRET_ID")
    k8s_role = env.get("VAULT_K8S_ROLE")
    if token:
        return []
    if role_id or secret_id:
        if not (role_id and secret_id):
            missing = "VAULT_SECRET_ID" if role_id else "VAULT_ROLE_ID"
            return [f"{missing} is not set: AppRole needs both VAULT_ROLE_ID and VAULT_SECRET_ID"]
        return []
    if k8s_role:
        path = env.get("VAULT_K8S_TOKEN_PATH", DEFAULT_K8S_JWT_PATH)
        try:
            with open(path):
                pass
        except OSError as exc:
            return [
                f"VAULT_K8S_ROLE is set but the service account token {path} cannot be read "
                f"({exc.strerror or type(exc).__name__}): mount it (automountServiceAccountToken)"
                ", or set VAULT_K8S_TOKEN_PATH to where it is"
            ]
        return []
    return [
        "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole), "
        "or VAULT_K8S_ROLE (Kubernetes auth); ~/.vault-token is not read"
    ]


def vault_auth_from_env(
    addr: str | None,
    token: str | None,
    *,
    timeout: float = 10.0,
    environ: Mapping[str, str] | None = None,
    interval: float = 60.0,
) -> VaultAuth:
    """The bot's `VaultAuth` from the environment: `token` (VAULT_TOKEN) if given, else
    AppRole (VAULT_ROLE_ID, VAULT_SECRET_ID, VAULT_APPROLE_MOUNT), else Kubernetes
    (VAULT_K8S_ROLE, VAULT_K8S_MOUNT, VAULT_K8S_TOKEN_PATH). Nothing is sent until `login()`."""
    env = os.environ if environ is None else environ
    method: LoginMethod
    role_id, secret_id = env.get("VAULT_ROLE_ID"), env.get("VAULT_SECRET_ID")
    k8s_role = env.get("VAULT_K8S_ROLE")
    if token:
        method = TokenLogin(token)
    elif role_id and secret_id:
        method = AppRoleLogin(role_id, secret_id, env.get("VAULT_APPROLE_MOUNT", "approle"))
    elif k8s_role:
        method = KubernetesLogin(
            k8s_role,
            env.get("VAULT_K8S_TOKEN_PATH", DEFAULT_K8S_JWT_PATH),
            env.get("VAULT_K8S_MOUNT", "kubernetes"),
        )
    else:
        method = TokenLogin(None)
    return VaultAuth(addr, method, timeout=timeout, interval=interval, **tls_and_namespace(env))


def tls_and_namespace(env: Mapping[str, str]) -> dict[str, Any]:
    """What Vault's own CLI reads for TLS and namespaces: VAULT_CACERT (a CA file; it wins
    over VAULT_CAPATH, a directory), VAULT_CLIENT_CERT with VAULT_CLIENT_KEY (mutual TLS),
    VAULT_NAMESPACE (Vault Enterprise and OpenBao namespaces)."""
    verify: bool | str = env.get("VAULT_CACERT") or env.get("VAULT_CAPATH") or True
    cert = env.get("VAULT_CLIENT_CERT")
    key = env.get("VAULT_CLIENT_KEY")
    return {
        "verify": verify,
        "cert": (cert, key) if cert and key else None,
        "namespace": env.get("VAULT_NAMESPACE") or None,
    }
