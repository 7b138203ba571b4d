"""Tier 2: the Vault edge (providers/) against the session's real OpenBao; `responses` only for
answers a real server will not give on demand (sealed, 429, 5xx, a 400 where OpenBao says 200,
Kubernetes auth, which needs a cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import hvac
import hvac.exceptions as hx
import pytest
import requests
import responses

from bot.sandbox.openbao import BOT_POLICY_FILE, enable_approle
from bot.sandbox.slack_fake import FakeSlack
from bot.sandbox.stack import CAPPED_ROLE, POLICY, Backends
from providers import (
    ChildToken,
    GrantSpec,
    ProviderError,
    VaultBackend,
    VaultForbidden,
    VaultRejected,
    VaultUnavailable,
    WrapTokenInvalid,
)
from providers.auth import (
    AppRoleLogin,
    KubernetesLogin,
    TokenLogin,
    VaultAuth,
    vault_auth_from_env,
)
from providers.vault import vault_client_from_env
from providers.vault_database import VaultDatabaseProvider
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
BREAKGLASS = str(Path(sys.executable).parent / "breakglass")
VAULT = "http://vault.test:8200"


def spec(duration: timedelta = timedelta(minutes=10), request_id: int = 1) -> GrantSpec:
    return GrantSpec(
        request_id=request_id,
        resource="prod-db",
        requester="U0ALICE",
        duration=duration,
        wrap_ttl=timedelta(minutes=5),
        options={"mount": "database", "role": "breakglass-rw"},
    )


@pytest.fixture
def backend(backends: Backends) -> VaultBackend:
    return VaultBackend(backends.bao.client(backends.bot_token))


def provider(backend: VaultBackend, role: str = "breakglass-rw") -> VaultDatabaseProvider:
    return VaultDatabaseProvider(backend, {"mount": "database", "role": role})


def alive(backends: Backends, accessor: str) -> bool:
    try:
        backends.bao.client().auth.token.lookup_accessor(accessor)
    except hx.InvalidRequest:
        return False
    return True


# ---- the edge stands alone -----------------------------------------------------------------


def test_providers_import_nothing_from_bot():
    code = (
        "import sys, providers, providers.auth, providers.vault, providers.vault_database\n"
        "print(sorted(m for m in sys.modules if m == 'bot' or m.startswith('bot.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- errors by status, never by text -------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "status", "words"),
    [
        ({"status": 503, "json": {"errors": ["Vault is sealed"]}}, VaultUnavailable, 503, "sealed"),
        ({"status": 429, "json": {"errors": ["rate limit"]}}, VaultUnavailable, 429, "rate limit"),
        ({"status": 500, "json": {"errors": ["internal error"]}}, VaultUnavailable, 500, "failed"),
        ({"status": 502, "json": {"errors": ["bad gateway"]}}, VaultUnavailable, 502, "failed"),
        ({"body": requests.ConnectTimeout("slow")}, VaultUnavailable, None, "in time"),
        ({"body": requests.ConnectionError("reset")}, VaultUnavailable, None, "cannot reach"),
        ({"status": 200, "body": "<html>proxy</html>"}, VaultUnavailable, None, "unreadable"),
        (
            {"status": 403, "json": {"errors": ["permission denied"]}},
            VaultForbidden,
            403,
            "refused",
        ),
        ({"status": 400, "json": {"errors": ["x"]}}, VaultRejected, 400, "rejected"),
        ({"status": 404, "json": {"errors": []}}, VaultRejected, 404, "rejected"),
        ({"status": 418, "json": {"errors": ["teapot"]}}, VaultRejected, None, "rejected"),
    ],
)
@responses.activate
def test_errors_are_translated_by_status(fault, kind, status, words):
    responses.add(responses.POST, f"{VAULT}/v1/auth/token/create", **fault)
    backend = VaultBackend(hvac.Client(url=VAULT, token="hvs.bot-secret", timeout=2))
    with pytest.raises(kind) as caught:
        backend.begin(spec(), None)
    exc = caught.value
    assert exc.status == status
    assert exc.retryable is (kind is VaultUnavailable)
    assert words in str(exc) and "auth/token/create" in str(exc)
    assert "hvs.bot-secret" not in str(exc)
    assert isinstance(exc, ProviderError)


def test_an_unreachable_vault_is_unavailable():
    backend = VaultBackend(hvac.Client(url="http://127.0.0.1:9", token="x", timeout=2))
    with pytest.raises(VaultUnavailable, match="cannot reach Vault"):
        backend.revoke("some-accessor", None)


# ---- issuing in two steps ------------------------------------------------------------------


def test_begin_gives_the_accessor_before_any_credential_then_issue_uses_that_child(
    backends, backend
):
    db = provider(backend)
    child = db.begin(spec())
    assert isinstance(child, ChildToken)
    assert child.token not in repr(child) and child.accessor in repr(child)
    assert child.lifetime == 600
    token = backends.bao.client().auth.token.lookup_accessor(child.accessor)["data"]
    assert token["explicit_max_ttl"] == 600 and not token["renewable"]

    issued = db.issue(spec(), child)
    assert issued.token_accessor == child.accessor
    assert issued.issued_at == child.issued_at
    assert issued.expires_at == child.expires_at
    assert issued.wrapping_token not in repr(issued)
    creds = backend.unwrap(issued.wrapping_token)
    assert backends.pg.can_login(creds["username"], creds["password"])
    backend.revoke(issued.token_accessor, issued.lease_id)
    assert not backends.pg.can_login(creds["username"], creds["password"])
    assert not alive(backends, child.accessor)


def test_issue_with_one_argument_still_does_both(backends, backend):
    issued = provider(backend).issue(spec())
    assert alive(backends, issued.token_accessor)
    backend.revoke(issued.token_accessor, issued.lease_id)


def test_a_failed_read_revokes_the_child_and_raises(backends, backend):
    db = provider(backend, role="no-such-role")
    child = db.begin(spec())
    assert alive(backends, child.accessor)
    with pytest.raises(VaultRejected) as caught:
        db.issue(spec(), child)
    assert caught.value.status == 400 and "database/creds/no-such-role" in str(caught.value)
    assert not alive(backends, child.accessor)


def test_a_capped_lease_shortens_what_is_promised(backend):
    db = provider(backend, role=CAPPED_ROLE)  # max_ttl 5 min
    issued = db.issue(spec(timedelta(minutes=30)))
    try:
        assert issued.expires_at - issued.issued_at == timedelta(minutes=5)
        assert issued.wrap_expires_at <= issued.expires_at
    finally:
        backend.revoke(issued.token_accessor, issued.lease_id)


# ---- gone is success -----------------------------------------------------------------------


def test_revoking_what_is_already_gone_succeeds(backends, backend):
    issued = provider(backend).issue(spec())
    backend.revoke(issued.token_accessor, issued.lease_id)
    backend.revoke(issued.token_accessor, issued.lease_id)  # again: both already gone
    backend.revoke("no-such-accessor", "database/creds/breakglass-rw/no-such-lease")

    expiring = backend.begin(spec(timedelta(seconds=1)), None)
    wait_for(lambda: not alive(backends, expiring.accessor), timeout=10)
    backend.revoke(expiring.accessor, None)


@responses.activate
def test_a_400_on_revoke_counts_as_gone_only_when_the_lookup_agrees():
    """What other Vault versions may answer for a gone accessor or lease: 400."""
    backend = VaultBackend(hvac.Client(url=VAULT, token="hvs.bot", timeout=2))
    invalid = {"status": 400, "json": {"errors": ["invalid accessor"]}}
    responses.add(responses.PUT, f"{VAULT}/v1/sys/leases/revoke", **invalid)
    responses.add(responses.PUT, f"{VAULT}/v1/sys/leases/lookup", **invalid)
    responses.add(responses.POST, f"{VAULT}/v1/auth/token/revoke-accessor", **invalid)
    lookup = responses.add(responses.POST, f"{VAULT}/v1/auth/token/lookup-accessor", **invalid)
    backend.revoke("acc-gone", "database/creds/x/gone")

    responses.replace(
        responses.POST, f"{VAULT}/v1/auth/token/lookup-accessor", json={"data": {"ttl": 60}}
    )
    with pytest.raises(VaultRejected) as caught:
        backend.revoke("acc-alive", None)
    assert "auth/token/revoke-accessor" in str(caught.value)
    assert lookup.call_count == 1

    responses.replace(
        responses.POST, f"{VAULT}/v1/auth/token/revoke-accessor", status=403, json={"errors": []}
    )
    with pytest.raises(VaultForbidden):
        backend.revoke("acc-any", None)


# ---- reveal support ------------------------------------------------------------------------


def test_wrap_state_and_unwrap_say_live_or_gone(backends, backend):
    issued = provider(backend).issue(spec())
    try:
        assert backend.wrap_state(issued.wrap_accessor) == "live"
        backend.unwrap(issued.wrapping_token)
        # OpenBao revokes a used wrapping token a moment after the unwrap.
        wait_for(lambda: backend.wrap_state(issued.wrap_accessor) == "gone", timeout=5)
        with pytest.raises(WrapTokenInvalid) as caught:
            backend.unwrap(issued.wrapping_token)
        assert caught.value.status == 400 and issued.wrapping_token not in str(caught.value)
        with pytest.raises(WrapTokenInvalid):
            backend.unwrap("s.never-existed")
        assert backend.wrap_state("never-existed") == "gone"
    finally:
        backend.revoke(issued.token_accessor, issued.lease_id)


def test_an_expired_wrapping_token_is_gone(backends, backend):
    child = backend.begin(spec(), None)
    wrapped = backend.child_client(child.token).sys.wrap(payload={"k": "v"}, ttl=1)["wrap_info"]
    wait_for(lambda: backend.wrap_state(wrapped["accessor"]) == "gone", timeout=10)
    with pytest.raises(WrapTokenInvalid):
        backend.unwrap(wrapped["token"])
    backend.revoke(child.accessor, None)


# ---- children and the bot's own token ------------------------------------------------------


def test_children_die_with_the_bot_token_unless_made_through_an_orphan_role(backends):
    root = backends.bao.client()
    root.sys.create_or_update_policy(
        "breakglass-bot-orphan",
        'path "auth/token/create/breakglass-grant" { capabilities = ["update"] }',
    )
    root.write(
        "auth/token/roles/breakglass-grant",
        orphan=True,
        renewable=False,
        allowed_policies=["breakglass-bot"],
    )
    policies = ["breakglass-bot", "breakglass-bot-orphan"]
    bot = root.auth.token.create(policies=policies, ttl="10m")["auth"]["client_token"]
    plain = VaultBackend(backends.bao.client(bot))
    orphaned = VaultBackend(backends.bao.client(bot), token_role="breakglass-grant")
    child = plain.begin(spec(), ["breakglass-bot"])
    kept = orphaned.begin(spec(), ["breakglass-bot"])
    assert kept.lifetime == 600
    root.auth.token.revoke(bot)
    assert not alive(backends, child.accessor), "Vault revokes a token's children with it"
    assert alive(backends, kept.accessor)
    plain.client = root
    plain.revoke(kept.accessor, None)


def test_a_child_never_outlives_what_is_known_of_the_bot_token(backends):
    root = backends.bao.client()
    short = root.auth.token.create(policies=["breakglass-bot"], ttl="60s", renewable=False)
    auth = VaultAuth(backends.bao.addr, TokenLogin(short["auth"]["client_token"]), interval=1)
    status = auth.maintain()
    assert status.state == "ok" and "cannot be renewed" in status.reason
    backend = VaultBackend.from_auth(auth)
    child = backend.begin(spec(timedelta(minutes=30)), None)
    assert 55 <= child.lifetime <= 60
    backend.revoke(child.accessor, None)


# ---- VaultAuth: a given token --------------------------------------------------------------


def test_a_static_token_reports_its_ttl_and_fails_near_its_end(backends):
    root = backends.bao.client()
    token = root.auth.token.create(policies=["breakglass-bot"], ttl="3s", renewable=False)
    token = token["auth"]["client_token"]
    auth = VaultAuth(backends.bao.addr, TokenLogin(token), interval=0.3)
    first = auth.maintain()
    assert first.state == "ok" and first.ttl in (2, 3) and "cannot be renewed" in first.reason
    # In its last third it asks for a person; within two intervals of its end it has failed.
    degraded = wait_for(lambda: (s := auth.maintain()).state != "ok" and s, timeout=5)
    assert degraded.state == "degraded", degraded
    failed = wait_for(lambda: (s := auth.maintain()).state == "failed" and s, timeout=5)
    for status in (degraded, failed):
        assert "cannot be renewed or replaced" in status.reason
        assert token not in repr(status)
    # Two intervals longer than the whole TTL: failed at once.
    fresh = root.auth.token.create(policies=["breakglass-bot"], ttl="30s", renewable=False)
    at_once = VaultAuth(backends.bao.addr, TokenLogin(fresh["auth"]["client_token"]), interval=20)
    assert at_once.maintain().state == "failed"


def test_a_renewable_token_is_renewed_once_a_third_is_gone(backends):
    root = backends.bao.client()
    token = root.auth.token.create(policies=["breakglass-bot"], ttl="6s")["auth"]["client_token"]
    auth = VaultAuth(backends.bao.addr, TokenLogin(token), interval=0.1)
    first = auth.maintain()
    assert first.state == "ok" and not first.renewed and first.ttl in (5, 6)
    renewed = wait_for(lambda: (s := auth.maintain()).renewed and s, timeout=5)
    assert renewed.state == "ok" and renewed.ttl == 6
    root.auth.token.revoke(token)
    dead = auth.maintain()
    assert dead.state == "failed" and "cannot be renewed or replaced" in dead.reason


def test_readiness(backends):
    root = backends.bao.client()
    token = root.auth.token.create(policies=["breakglass-bot"], ttl="10m")["auth"]["client_token"]
    auth = VaultAuth(backends.bao.addr, TokenLogin(token))
    ok, reason = auth.readiness()
    assert ok and reason.startswith("ok")
    root.auth.token.revoke(token)
    assert auth.readiness() == (False, "the bot's Vault token is not valid (expired or revoked)")
    away = VaultAuth("http://127.0.0.1:9", TokenLogin("x"), timeout=2)
    ok, reason = away.readiness()
    assert not ok and "cannot reach Vault" in reason


@responses.activate
def test_readiness_of_a_sealed_vault():
    responses.add(
        responses.GET,
        f"{VAULT}/v1/sys/health",
        status=503,
        json={"initialized": True, "sealed": True},
    )
    assert VaultAuth(VAULT, TokenLogin("x")).readiness() == (False, "Vault is sealed")


# ---- VaultAuth: AppRole, for real ----------------------------------------------------------


def test_approle_logs_in_again_before_the_max_ttl_and_the_client_keeps_working(backends):
    """token_ttl 3 s, token_max_ttl 6 s: renewals alone would let the token die at 6 s."""
    root = backends.bao.client()
    role_id, secret_id = enable_approle(
        root, "bot-short", policies=["breakglass-bot"], token_ttl="3s", token_max_ttl="6s"
    )
    auth = VaultAuth(backends.bao.addr, AppRoleLogin(role_id, secret_id), interval=0.2).login()
    started = time.monotonic()
    first = auth.client.token
    assert first and secret_id not in repr(auth.method)
    statuses = []
    while time.monotonic() - started < 7.5:  # past the first token's max TTL
        statuses.append(auth.maintain())
        auth.client.auth.token.lookup_self()  # the shared client works throughout
        time.sleep(0.1)
    assert all(s.state == "ok" for s in statuses), [s.reason for s in statuses]
    assert any(s.renewed for s in statuses)
    assert any(s.relogged for s in statuses)
    assert auth.client.token != first
    with pytest.raises(hx.Forbidden):  # the first token really is past its end
        backends.bao.client(first).auth.token.lookup_self()


def test_approle_from_the_environment(backends, monkeypatch):
    role_id, secret_id = enable_approle(
        backends.bao.client(),
        "bot-env",
        policies=["breakglass-bot"],
        token_ttl="1m",
        token_max_ttl="2m",
    )
    env = {"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id, "VAULT_APPROLE_MOUNT": "approle"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = vault_client_from_env(backends.bao.addr, None)
    assert "breakglass-bot" in client.auth.token.lookup_self()["data"]["policies"]
    monkeypatch.setenv("VAULT_SECRET_ID", "wrong")
    with pytest.raises(ProviderError) as caught:
        vault_client_from_env(backends.bao.addr, None)
    assert "auth/approle/login" in str(caught.value) and "wrong" not in str(caught.value)


# ---- VaultAuth: Kubernetes, recorded -------------------------------------------------------


def k8s_login(tokens: list[str], seen: list[dict]):
    def answer(request):
        seen.append(json.loads(request.body))
        auth = {"client_token": tokens.pop(0), "lease_duration": 60, "renewable": True}
        return 200, {}, json.dumps({"auth": auth})

    return answer


@responses.activate
def test_kubernetes_login_and_a_failed_renewal_logs_in_again(tmp_path):
    jwt = tmp_path / "token"
    jwt.write_text("jwt-one\n")
    seen: list[dict] = []
    responses.add_callback(
        responses.POST,
        f"{VAULT}/v1/auth/k8s/login",
        callback=k8s_login(["hvs.first", "hvs.second"], seen),
    )
    auth = vault_auth_from_env(
        VAULT,
        None,
        environ={
            "VAULT_K8S_ROLE": "breakglass",
            "VAULT_K8S_MOUNT": "k8s",
            "VAULT_K8S_TOKEN_PATH": str(jwt),
        },
        interval=5,
    )
    assert isinstance(auth.method, KubernetesLogin)
    auth.login()
    assert auth.client.token == "hvs.first"
    assert seen == [{"role": "breakglass", "jwt": "jwt-one"}]

    jwt.write_text("jwt-two\n")  # projected service account tokens rotate
    responses.add(
        responses.GET,
        f"{VAULT}/v1/auth/token/lookup-self",
        json={"data": {"ttl": 20, "creation_ttl": 60, "renewable": True}},
    )
    responses.add(
        responses.POST,
        f"{VAULT}/v1/auth/token/renew-self",
        status=500,
        json={"errors": ["past the max TTL, cannot renew"]},
    )
    status = auth.maintain()
    assert status.state == "ok" and status.relogged and "renewal" in status.reason
    assert auth.client.token == "hvs.second"
    assert seen[-1] == {"role": "breakglass", "jwt": "jwt-two"}


@responses.activate
def test_a_revoked_token_is_replaced_and_reported(tmp_path):
    jwt = tmp_path / "token"
    jwt.write_text("jwt")
    seen: list[dict] = []
    responses.add_callback(
        responses.POST,
        f"{VAULT}/v1/auth/kubernetes/login",
        callback=k8s_login(["hvs.first", "hvs.second"], seen),
    )
    auth = VaultAuth(VAULT, KubernetesLogin("breakglass", str(jwt))).login()
    responses.add(
        responses.GET, f"{VAULT}/v1/auth/token/lookup-self", status=403, json={"errors": []}
    )
    status = auth.maintain()
    assert status.state == "degraded" and status.relogged
    assert auth.client.token == "hvs.second"


def test_a_missing_kubernetes_token_file_is_named(tmp_path):
    missing = tmp_path / "no" / "token"
    auth = VaultAuth(VAULT, KubernetesLogin("breakglass", str(missing)))
    with pytest.raises(ProviderError, match=f"service account token at {missing} "):
        auth.login()


# ---- check-config --online, through the real CLI -------------------------------------------


def check_config(backends: Backends, slack: FakeSlack, tmp_path: Path, policy: str, **env: str):
    path = tmp_path / "breakglass.yml"
    path.write_text(policy)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "VAULT_", "DATABASE_URL", "BREAKGLASS_"))
    }
    return subprocess.run(
        [BREAKGLASS, "check-config", "--online"],
        env={
            **base,
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_SIGNING_SECRET": "s3cr3t",
            "SLACK_API_URL": slack.api_url,
            "VAULT_ADDR": backends.bao.addr,
            "VAULT_TOKEN": backends.bot_token,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bg.db'}",
            "BREAKGLASS_CONFIG": str(path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_check_config_names_a_missing_role_and_a_max_duration_above_max_ttl(
    backends, slack, tmp_path
):
    policy = POLICY.replace(
        "options: {mount: database, role: breakglass-rw}\n    max_duration: 1h",
        f"options: {{mount: database, role: {CAPPED_ROLE}}}\n    max_duration: 1h",
    ).replace(
        "options: {mount: database, role: breakglass-rw}\n    max_duration: 30m",
        "options: {mount: database, role: breakglass-gone}\n    max_duration: 30m",
    )
    r = check_config(backends, slack, tmp_path, policy)
    addr = backends.bao.addr
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert (
        f"vault {addr}: database/roles/breakglass-gone does not exist "
        "(needed by resources.prod-db-two-keys)"
    ) in lines
    assert (
        f"vault {addr}: resources.prod-db.max_duration 1 h is above the max_ttl of "
        f"database/roles/{CAPPED_ROLE}, 5 min; Vault would end such grants early"
    ) in lines
    assert "Traceback" not in r.stderr and backends.bot_token not in r.stderr + r.stdout


def test_check_config_falls_back_to_the_mount_max_lease_ttl(backends, slack, tmp_path):
    """A role without max_ttl: the mount's max_lease_ttl decides (a mount of its own here,
    tuned to 20 min, so the session's `database/` stays as it is)."""
    root = backends.bao.client()
    mount = "database-edge"
    if f"{mount}/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("database", path=mount, config={"max_lease_ttl": "20m"})
    root.secrets.database.configure(
        name="edge-pg",
        plugin_name="postgresql-database-plugin",
        connection_url=backends.pg.vault_connection_url(),
        username=backends.pg.admin_user,
        password=backends.pg.admin_password,
        allowed_roles=["no-max"],
        mount_point=mount,
        verify_connection=False,
    )
    root.secrets.database.create_role(
        name="no-max",
        db_name="edge-pg",
        creation_statements=["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"],
        mount_point=mount,
    )
    edge = BOT_POLICY_FILE.read_text().replace("database/", f"{mount}/")
    root.sys.create_or_update_policy("breakglass-bot-edge", edge)
    token = root.auth.token.create(policies=["breakglass-bot-edge"], ttl="10m")
    policy = POLICY.replace(
        "{mount: database, role: breakglass-rw}", f"{{mount: {mount}, role: no-max}}"
    )
    r = check_config(backends, slack, tmp_path, policy, VAULT_TOKEN=token["auth"]["client_token"])
    addr = backends.bao.addr
    for name, longest in (("prod-db", "1 h"), ("prod-db-two-keys", "30 min")):
        assert (
            f"vault {addr}: resources.{name}.max_duration {longest} is above the max_lease_ttl "
            f"of the {mount}/ mount ({mount}/roles/no-max sets none), 20 min; Vault would end "
            "such grants early"
        ) in r.stderr.splitlines(), r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_names_a_missing_kubernetes_token_file(backends, slack, tmp_path):
    missing = tmp_path / "sa" / "token"
    r = check_config(
        backends,
        slack,
        tmp_path,
        POLICY,
        VAULT_TOKEN="",
        VAULT_K8S_ROLE="breakglass",
        VAULT_K8S_TOKEN_PATH=str(missing),
    )
    assert r.returncode == 1
    assert (
        f"environment: VAULT_K8S_ROLE is set but the service account token {missing} cannot be "
        "read (No such file or directory): mount it (automountServiceAccountToken), or set "
        "VAULT_K8S_TOKEN_PATH to where it is"
    ) in r.stderr.splitlines(), r.stderr
    assert "Traceback" not in r.stderr
