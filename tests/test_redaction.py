"""The secret-redaction corpus: real-looking secrets of every kind are masked, look-alikes are
left as typed, and `mask` is idempotent and never leaves a secret-shaped string behind."""

from __future__ import annotations

import base64
import logging
import random
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.redaction import KIND_NAMES, describe, mask, scan

# The formats as their issuers document them (lengths and prefixes), with random bodies where
# a fixed example would be only one shape.
HVS = (
    "hvs.CAESIJlU9JMYEhOPYv4igdhm9PnZDrabYTobQ4Ymnlq1qY-vGh4KHGh2cy5OVmJ5Nlc1Q3pUWUhSTExt"
    "UXhNWW1LSm4"
)
HVB = (
    "hvb.AAAAAQJgxDgqsGNorpoOR7hPZ5SU-ynBvCl764jyRP_fnX7WvkdkDzGjbLNGdh5L3u9x6aJvWhJSzexGEbjrL4G4"
    "G0xEa4xF5bwYuJ1qWk2VUTJUL_bA0iCaspsDcC7hVLQMiqmcSGZvGcBDXN2c5W2J_gAA"
)
HVR = "hvr.AAAAAQL2a0lHD9l3aUI8EHnvMoD6cu_6mn4gBgMIHAsK1NJ0"
LEGACY_SERVICE = "s.rrx2CiEiTo5gC7zXXvN3wBl0"  # as OpenBao 2.7 issues them
NAMESPACED = "s.Hx2GcV8mr0vXRcnNtwDhcXRo.Ae7Tf"  # Vault Enterprise: .namespace id
LEGACY_BATCH = (  # as OpenBao 2.7 issues them
    "b.AAAAAQJN3wweiP56DV5wou79Npc_nmFhbZFCL0hs1LhGoQO0WYycLI4O97BFlmZ8uobH290KmePU5kMx3yg0eI"
    "oJlfwsq2IKhwMtn9nrIlJSvxqgwXRlgkwbUINmZvDriVESGsorQm4_SXMZMLgLvAcRMrY6v7vex0q0"
)
RECOVERY = "r.4Kd9PqNwX2mZ7vLc8RtY1sHb"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documentation pair
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_TEMP_ID = "ASIAY34FZKBOKMUTVV7A"
AWS_SECRET_2 = "9drTJvcXLB89EXAMPLELB8923FB892xMFI+Z3Kq1"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiw"
    "iaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
SLACK_BOT = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
SLACK_USER = "xoxp-4956301-4956302-4970543-c2f35d4e3ff8a92e0b0d5b5f8f0d1c33"
SLACK_LEGACY_WORKSPACE = "xoxa-2-511111111-31111111111-3111111111111-e039d02840a0b9379c"
SLACK_CONFIG = "xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4OTAtMTIzNDU2Nzg5MDEyLTEyMzQ1Njc4OTAxMjM0"
SLACK_REFRESH = "xoxe-1-My0xLTEyMzQ1Njc4OTAtMTIzNDU2Nzg5MDEyMy0xMjM0NTY3ODkwMTIzNA"
SLACK_SESSION = "xoxs-2847363472-2847363473-9273647382-abcdef0123"
SLACK_APP = "xapp-1-A0123456789-1234567890123-0123456789abcdef0123456789abcdef"
SLACK_HOOK = "https://hooks.slack.com/services/T024BE7LD/B08QWE1RT5Y/kT3x9qAbCdEfGhIjKlMnOpQr"
SLACK_WORKFLOW = "https://hooks.slack.com/triggers/T024BE7LD/5012345678/9f8e7d6c5b4a39281706f5e4"
GH_CLASSIC = "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"
GH_OAUTH = "gho_16C7e42F292c6912E7710c838347Ae178B4a"
GH_APP_USER = "ghu_8Ir8oVQ7hX1pDxNt2mqB0cW5sY3eK9fL6uJa"
GH_APP = "ghs_Yk1fJXQq7bT0sR9vN2mW5cL8hD3gP6aZ4eUx"
GH_REFRESH = "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498"
GH_FINE = (
    "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"
)


def _pem(label: str) -> str:
    body = base64.b64encode(random.Random(63).randbytes(1190)).decode()
    return (
        f"-----BEGIN {label}-----\n"
        + "\n".join(textwrap.wrap(body, 64))
        + f"\n-----END {label}-----"
    )


RSA_KEY = _pem("RSA PRIVATE KEY")
PKCS8_KEY = _pem("PRIVATE KEY")
OPENSSH_KEY = _pem("OPENSSH PRIVATE KEY")
EC_KEY = _pem("EC PRIVATE KEY")
PGP_KEY = _pem("PGP PRIVATE KEY BLOCK")


# (text as pasted, the secrets in it that must go, the kinds reported)
SECRETS = [
    (f"root token is {HVS} use it", [HVS], {"vault-token"}),
    (f"batch: {HVB}", [HVB], {"vault-token"}),
    (f"recovery {HVR}.", [HVR], {"vault-token"}),
    (f"wrapping token {LEGACY_SERVICE}", [LEGACY_SERVICE], {"vault-token"}),
    (f"`vault unwrap {LEGACY_SERVICE}`", [LEGACY_SERVICE], {"vault-token"}),
    (f"in ns: {NAMESPACED}", [NAMESPACED], {"vault-token"}),
    (f"openbao batch {LEGACY_BATCH}", [LEGACY_BATCH], {"vault-token"}),
    (f"generate-root gave {RECOVERY}", [RECOVERY], {"vault-token"}),
    (f"VAULT_TOKEN={LEGACY_SERVICE} bao read x", [LEGACY_SERVICE], {"vault-token"}),
    (f"X-Vault-Token: {HVS}", [HVS], {"vault-token"}),
    (f"keys {AWS_KEY_ID} / {AWS_SECRET}", [AWS_KEY_ID, AWS_SECRET], None),
    (
        f"[default]\naws_access_key_id = {AWS_TEMP_ID}\naws_secret_access_key = {AWS_SECRET_2}\n"
        "aws_session_token = IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQD",
        [AWS_TEMP_ID, AWS_SECRET_2, "IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQD"],
        {"aws-access-key-id", "aws-secret-key", "token"},
    ),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", [AWS_SECRET], {"aws-secret-key"}),
    (
        f'{{"AccessKeyId": "{AWS_TEMP_ID}", "SecretAccessKey": "{AWS_SECRET_2}"}}',
        [AWS_TEMP_ID, AWS_SECRET_2],
        None,
    ),
    (f"key id {AWS_KEY_ID}", [AWS_KEY_ID], {"aws-access-key-id"}),
    (f"here:\n{RSA_KEY}\nthanks", [RSA_KEY.splitlines()[3]], {"private-key"}),
    (PKCS8_KEY, [PKCS8_KEY.splitlines()[1]], {"private-key"}),
    (OPENSSH_KEY, [OPENSSH_KEY.splitlines()[5]], {"private-key"}),
    (EC_KEY, [EC_KEY.splitlines()[2]], {"private-key"}),
    (PGP_KEY, [PGP_KEY.splitlines()[7]], {"private-key"}),
    ("cut short: " + RSA_KEY[:300], [RSA_KEY[40:300].splitlines()[1]], {"private-key"}),
    (f"bearer {JWT}", [JWT], {"jwt"}),
    (f"Authorization: Bearer {JWT}", [JWT], None),
    ("Authorization: Basic YWxpY2U6czNjcjN0UGFzcw==", ["YWxpY2U6czNjcjN0UGFzcw=="], {"token"}),
    (f"SLACK_BOT_TOKEN={SLACK_BOT}", [SLACK_BOT], {"slack-token"}),
    (f"user token {SLACK_USER}", [SLACK_USER], {"slack-token"}),
    (SLACK_LEGACY_WORKSPACE, [SLACK_LEGACY_WORKSPACE], {"slack-token"}),
    (f"config {SLACK_CONFIG}", [SLACK_CONFIG], {"slack-token"}),
    (f"refresh {SLACK_REFRESH}", [SLACK_REFRESH], {"slack-token"}),
    (SLACK_SESSION, [SLACK_SESSION], {"slack-token"}),
    (f"app token {SLACK_APP}", [SLACK_APP], {"slack-token"}),
    (f"post to {SLACK_HOOK} please", ["kT3x9qAbCdEfGhIjKlMnOpQr"], {"slack-webhook"}),
    (SLACK_WORKFLOW, ["9f8e7d6c5b4a39281706f5e4"], {"slack-webhook"}),
    (f"pat {GH_CLASSIC}", [GH_CLASSIC], {"github-token"}),
    (
        f"{GH_OAUTH} {GH_APP_USER} {GH_APP} {GH_REFRESH}",
        [GH_OAUTH, GH_APP_USER, GH_APP, GH_REFRESH],
        {"github-token"},
    ),
    (f"GITHUB_TOKEN={GH_FINE}", [GH_FINE], {"github-token"}),
    ("psql postgres://app:Tr0ub4dor-3x@db.internal:5432/orders", ["Tr0ub4dor-3x"], {"password"}),
    ("postgresql://breakglass:hunter2@/bg?host=/tmp/pg", ["hunter2"], {"password"}),
    ("mysql://root:s3cr3t!@10.0.0.5/shop", ["s3cr3t!"], {"password"}),
    ("redis://:Zm9vYmFyQmF6@cache:6379/0", ["Zm9vYmFyQmF6"], {"password"}),
    ("mongodb+srv://svc:p%40ssW0rd@cluster0.example.net/db", ["p%40ssW0rd"], {"password"}),
    ("amqp://guest:Gu3st-Pa55@rabbit:5672/", ["Gu3st-Pa55"], {"password"}),
    ("password=hunter2, then retry", ["hunter2"], {"password"}),
    ('PASSWORD="correct horse battery staple"', ["correct horse battery staple"], {"password"}),
    ("passwd: Xy7#kLm9", ["Xy7#kLm9"], {"password"}),
    ("pwd=letmein", ["letmein"], {"password"}),
    ("the db password: Summer2024!", ["Summer2024!"], {"password"}),
    ('{"user": "app", "password": "pa55 w0rd"}', ["pa55 w0rd"], {"password"}),
    ("secret='sup3r-s3cret'", ["sup3r-s3cret"], {"secret"}),
    ("client_secret: 8Q~yZ.abcDEF1234567890ghiJKL", ["8Q~yZ.abcDEF1234567890ghiJKL"], {"secret"}),
    (
        "secret_id=4b7c1a0e-2f9d-4e8b-9a6c-3d5f7e9b1c2a",
        ["4b7c1a0e-2f9d-4e8b-9a6c-3d5f7e9b1c2a"],
        {"secret"},
    ),
    ("token=abc.def.ghi-123", ["abc.def.ghi-123"], {"token"}),
    (
        "curl 'https://api.example.com/v1?api_key=sk_live_51HxyzAbc123'",
        ["sk_live_51HxyzAbc123"],
        {"secret"},
    ),
    ("db_password => 'Pa$$word1'", ["Pa$$word1"], {"password"}),
]


@pytest.mark.parametrize(
    ("text", "secrets", "kinds"),
    SECRETS,
    # The text's start names the case (kinds are a set: its order differs between processes).
    ids=[f"{i}-{text[:30]}" for i, (text, _, _) in enumerate(SECRETS)],
)
def test_every_kind_of_secret_is_masked(text, secrets, kinds):
    result = scan(text)
    for secret in secrets:
        assert secret not in result.text, result.text
    assert "[redacted " in result.text
    if kinds is not None:
        assert set(result.kinds) == kinds, result
    assert set(result.kinds) <= set(KIND_NAMES)


def test_the_marker_says_what_was_masked_and_keeps_what_is_not_secret():
    assert mask(f"use {LEGACY_SERVICE} now") == "use [redacted vault-token] now"
    assert (
        mask("psql postgres://app:Tr0ub4dor-3x@db.internal:5432/orders")
        == "psql postgres://app:[redacted password]@db.internal:5432/orders"
    )
    assert mask("password=hunter2, then retry") == "password=[redacted password], then retry"
    assert mask('"password": "x y"') == '"password": "[redacted password]"'
    assert (
        mask(f"{AWS_KEY_ID} {AWS_SECRET}")
        == "[redacted aws-access-key-id] [redacted aws-secret-key]"
    )
    assert mask(f"post to {SLACK_HOOK} please") == "post to [redacted slack-webhook] please"
    assert mask(f"-- {RSA_KEY} --") == "-- [redacted private-key] --"


# Things people write that look a little like secrets and are not.
LOOKALIKES = [
    "fixed in b6388af0d3c5e1b0d1f2a7c9e4b3a2f1c0d9e8b7, deploy it",  # a git SHA
    "commit B6388AF0D3C5E1B0D1F2A7C9E4B3A2F1C0D9E8B7",
    "trace 3f2b8c1e-9d4a-4e6b-8f7c-2a1b0c9d8e7f in the logs",  # a UUID
    "ask U024BE7LH or <@U0ALICE> in C0SECURITY",  # Slack ids
    "the password policy requires rotation after use",
    "token bucket is empty: rate limit hit",
    "rotate the secret after the incident",
    "see https://grafana.example.com:3000/d/abc?orgId=1&from=now-1h",  # no password
    "postgres://db.internal:5432/orders is down",
    "ssh://git@github.com/acme/infra.git",  # a user, no password
    "incident #4711, see INC-1234 and OPS-998",
    "keys that start with AKIA are long-term, ASIA ones are temporary",
    "payload dGhpcyBpcyBqdXN0IGEgdGVzdCBzdHJpbmc= decoded fine",  # base64, no context
    "the hash Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2Fy is a cache key",  # 40 base64ish
    "lease database/creds/breakglass-rw/AbCdEfGh12345678IjKlMnOp revoked",
    "accessor szPmTWxciIPCvowFIcElKpwN, token_accessor=szPmTWxciIPCvowFIcElKpwN",
    "token_ttl=1h, password_policy=strict, secret_name=db-creds",
    "r.status_code was 503 and s.getConfigurationValues() returned None",
    "the bot's Vault token: renewed the bot's Vault token for 3600 s",
    "cannot check the bot's Vault token: permission denied",
    "email alice@example.com at 12:30, ratio 3:1",
    "xoxo from the team; the ghp_ prefix means a classic token",
    "JWTs start with eyJ, like eyJhbGciOi",
    "-----BEGIN CERTIFICATE----- is public, not a key",
    "Authorization: Bearer",
    "password: expired",
    "we use hvs. tokens since Vault 1.10",
    "",
]


@pytest.mark.parametrize("text", LOOKALIKES, ids=lambda v: v[:30])
def test_lookalikes_are_left_as_typed(text):
    assert scan(text) == (text, ())


def test_describe_names_what_was_masked_for_a_person():
    assert describe(["vault-token"]) == "a Vault token"
    assert describe(("aws-access-key-id", "aws-secret-key", "password")) == (
        "an AWS access key id, an AWS secret access key and a password"
    )


# ---- properties ------------------------------------------------------------------------

ALL_SECRETS = [s for _, secrets, _ in SECRETS for s in secrets if len(s) >= 8]
SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", "; ", " (", ") ", '"', "'", "`", " = "])
FILLER = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
PIECES = st.one_of(
    FILLER,
    SEPARATORS,
    st.sampled_from([t for t, _, _ in SECRETS] + LOOKALIKES),
    st.sampled_from(["password", "token", "=", ":", "://", "@", "s.", "hvs.", "AKIA", "eyJ"]),
    st.sampled_from(ALL_SECRETS),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(PIECES, max_size=12).map("".join))
def test_mask_is_idempotent_and_leaves_nothing_secret_shaped(text):
    once = mask(text)
    assert mask(once) == once
    assert scan(once).kinds == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_mask_is_idempotent_on_any_text(text):
    once = mask(text)
    assert mask(once) == once


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(SECRETS) - 1),
    before=FILLER,
    after=FILLER,
    left=SEPARATORS,
    right=SEPARATORS,
)
def test_a_secret_among_any_text_never_survives(index, before, after, left, right):
    text, secrets, _ = SECRETS[index]
    masked = mask(before + left + text + right + after)
    for secret in secrets:
        assert secret not in masked


def test_log_lines_pass_the_same_function(caplog):
    """Installed by the process's set-up (here: bot.runtime's), every record is masked when it
    is made: message, arguments, exception text and stack, whatever logger made it."""
    from bot.logmask import install

    install()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").warning("GET /x?token=%s", SLACK_BOT)
    try:
        raise RuntimeError(f"could not log in with {HVS}")
    except RuntimeError:
        logging.getLogger("hvac").exception("failed %(where)s", {"where": AWS_KEY_ID})
    logging.getLogger("bot.x").info("stack", stack_info=True, extra={"note": "kept"})
    handler = logging.StreamHandler()
    text = "\n".join(handler.format(r) for r in caplog.records) + caplog.text
    for secret in (SLACK_BOT, HVS, AWS_KEY_ID):
        assert secret not in text
    assert "[redacted vault-token]" in text and "RuntimeError" in text
    assert caplog.records[1].exc_info is not None  # still an exception record


def test_audit_details_mask_free_text_in_every_string_value():
    from bot.store import audit

    details = {
        "reason": f"denied: never paste {LEGACY_SERVICE}",
        "nested": {"notes": [f"{AWS_KEY_ID} {AWS_SECRET}", 3, None]},
        "token_accessor": "szPmTWxciIPCvowFIcElKpwN",
        "password": "hunter2",
    }
    assert audit.redact(details) == {
        "reason": "denied: never paste [redacted vault-token]",
        "nested": {"notes": ["[redacted aws-access-key-id] [redacted aws-secret-key]", 3, None]},
        "token_accessor": "szPmTWxciIPCvowFIcElKpwN",
        "password": "[redacted]",
    }
