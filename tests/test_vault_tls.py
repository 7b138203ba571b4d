"""The bot reaches Vault the way Vault's own CLI does: over TLS with the CA in VAULT_CACERT,
and inside the namespace VAULT_NAMESPACE names. A real OpenBao with TLS (`-dev-tls`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import requests

from bot.sandbox.openbao import bao_binary, free_port
from providers.auth import vault_auth_from_env

ROOT = "root-tls-test"


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """OpenBao serving HTTPS with a CA of its own; (address, CA file)."""
    certs = tmp_path_factory.mktemp("bao-tls")
    port = free_port()
    proc = subprocess.Popen(
        [
            bao_binary(),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={certs}",
            f"-dev-root-token-id={ROOT}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    addr, ca = f"https://127.0.0.1:{port}", certs / "vault-ca.pem"
    deadline = time.monotonic() + 20
    while True:
        try:
            if ca.exists() and requests.get(f"{addr}/v1/sys/health", verify=ca, timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("OpenBao with TLS did not start")
        time.sleep(0.05)
    try:
        yield addr, ca
    finally:
        proc.kill()  # a dev server: its state is in memory, nothing to drain
        proc.wait(10)


def test_vault_cacert_is_the_ca_the_bot_trusts(tls_bao):
    addr, ca = tls_bao
    auth = vault_auth_from_env(addr, ROOT, environ={"VAULT_CACERT": str(ca)})
    assert auth.login().client.auth.token.lookup_self()["data"]["id"] == ROOT
    # Without it, the server's certificate is refused: nothing is sent in the clear or
    # to a server nobody vouched for.
    untrusted = vault_auth_from_env(addr, ROOT, environ={})
    with pytest.raises(requests.exceptions.SSLError):
        untrusted.client.auth.token.lookup_self()


def test_vault_namespace_is_where_the_bot_works(tls_bao):
    addr, ca = tls_bao
    root = hvac.Client(url=addr, token=ROOT, verify=str(ca))
    root.sys.create_namespace("team-sre")
    in_team = hvac.Client(url=addr, token=ROOT, verify=str(ca), namespace="team-sre")
    in_team.sys.enable_secrets_engine("kv", path="team-only")
    env = {"VAULT_CACERT": str(ca), "VAULT_NAMESPACE": "team-sre"}
    client = vault_auth_from_env(addr, ROOT, environ=env).login().client
    assert "team-only/" in client.sys.list_mounted_secrets_engines()["data"]
    # Without it the bot works in the root namespace, where that mount is not.
    outside = vault_auth_from_env(addr, ROOT, environ={"VAULT_CACERT": str(ca)}).login().client
    assert "team-only/" not in outside.sys.list_mounted_secrets_engines()["data"]
    # Child clients (per-grant tokens, unwrapping) stay in the namespace too.
    from providers.vault import VaultBackend

    child = VaultBackend(client).child_client(ROOT)
    assert "team-only/" in child.sys.list_mounted_secrets_engines()["data"]
