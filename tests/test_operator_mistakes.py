"""The operator's first hour: each ordinary mistake, made through the real `breakglass`
command (a subprocess with a controlled environment, and a HOME of its own so that no
~/.vault-token leaks in), gets the one line a person reads, with its fix, and no traceback."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import hvac
import pytest
from sqlmodel import select

from bot.cli import ENVIRONMENT, parser
from bot.sandbox.openbao import enable_approle, free_port
from bot.sandbox.slack_fake import request_values
from bot.sandbox.stack import POLICY, REQUESTER, SECURITY_CHANNEL
from bot.store import OutboxEntry
from providers.auth import vault_auth_from_env
from tests.helpers import open_modal, wait_for

ROOT = Path(__file__).resolve().parents[1]
# An environment variable we do not control must not steer the command under test.
OURS = ("SLACK_", "VAULT_", "DATABASE_URL", "BREAKGLASS_", "AUDIT_SIGNING_KEY", "HOME")

MIGRATE = "run `breakglass migrate` (or `breakglass serve`, which migrates at start)"
POSTGRES_SCHEME = (
    "DATABASE_URL postgres://bg:***@db.example:5432/bg uses the postgres:// scheme, which "
    "SQLAlchemy refuses: write postgresql+psycopg:// instead (the rest stays as it is)"
)
NO_VAULT_CREDENTIALS = (
    "environment: no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID "
    "(AppRole), or VAULT_K8S_ROLE (Kubernetes auth); ~/.vault-token is not read"
)


def breakglass(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot.cli ARGS` in `tmp_path`, with only `env` (and the basics) set."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env={**base, "HOME": str(home), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def said(r: subprocess.CompletedProcess[str], line: str, code: int = 1) -> None:
    """`line` is one whole line of stderr, the exit status is `code`, and no traceback."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert line in r.stderr.splitlines(), r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)


def serving_env(tmp_path: Path, backends=None, slack=None, **env: str) -> dict[str, str]:
    """Everything `serve` needs, right, pointed at the embedded parts when given."""
    policy = tmp_path / "breakglass.yml"
    if not policy.exists():
        policy.write_text(POLICY)
    return {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "s3cr3t",
        "SLACK_API_URL": slack.api_url if slack else "http://127.0.0.1:9/api/",
        "VAULT_ADDR": backends.bao.addr if backends else "http://127.0.0.1:9",
        "VAULT_TOKEN": backends.bot_token if backends else "hvs.sandbox",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bg.db'}",
        "BREAKGLASS_CONFIG": str(policy),
        **env,
    }


def migrated_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'bg.db'}"
    r = breakglass(tmp_path, "migrate", DATABASE_URL=url)
    assert r.returncode == 0, r.stderr
    return url


# ---- the database -------------------------------------------------------------------------

# Every command that opens the database, with what else it needs to get that far.
DATABASE_COMMANDS = [
    ["check-config"],
    ["migrate"],
    ["serve"],
    ["audit", "verify"],
    ["audit", "anchor"],
    ["audit", "prune"],
    ["audit", "export"],
    ["audit", "show", "1"],
    ["stats"],
    ["digest", "--out", "digest"],
]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_postgres_scheme_is_named_in_every_command(command, tmp_path):
    (tmp_path / "breakglass.yml").write_text(POLICY + "retention: {details: 400d}\n")  # prune
    env = serving_env(tmp_path, DATABASE_URL="postgres://bg:hunter2@db.example:5432/bg")
    r = breakglass(tmp_path, *command, **env)
    if command[0] in ("check-config", "serve"):
        said(r, f"environment: {POSTGRES_SCHEME}")
    else:
        name = " ".join(command[:2]) if command[0] == "audit" else command[0]
        # audit verify, anchor and prune: 2, "could not check" (1 is a broken chain).
        code = 2 if command[1:2] in (["verify"], ["anchor"], ["prune"]) else 1
        said(r, f"breakglass {name}: {POSTGRES_SCHEME}", code)
    assert "hunter2" not in r.stderr


def test_an_unparseable_database_url_says_what_one_looks_like(tmp_path):
    r = breakglass(tmp_path, "stats", DATABASE_URL="bg:hunter2@db.example/bg")
    said(
        r,
        "breakglass stats: DATABASE_URL is not a database URL: write sqlite:///PATH or "
        "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE",
    )
    assert "hunter2" not in r.stderr


def _pg_url(backends, password: str, database: str = "app") -> str:
    pg = backends.pg
    return (
        f"postgresql+psycopg://{pg.admin_user}:{password}@/{database}"
        f"?host={pg.socket_dir}&port={pg.port}"
    )


def _pg_shown(backends, database: str = "app") -> str:
    pg = backends.pg
    return (
        f"postgresql+psycopg://{pg.admin_user}:***@/{database}?host={pg.socket_dir}&port={pg.port}"
    )


def test_serve_with_a_wrong_database_password_says_so_in_one_line(backends, tmp_path):
    wrong = "wrong-" + secrets.token_hex(4)
    env = serving_env(tmp_path, DATABASE_URL=_pg_url(backends, wrong))
    line = (
        f"database {_pg_shown(backends)}: PostgreSQL refused the password of user "
        '"postgres": correct the password in DATABASE_URL (special characters %-encoded)'
    )
    r = breakglass(tmp_path, "serve", "--port", str(free_port()), **env)
    said(r, f"breakglass serve: {line}")
    assert "Worker failed to boot" not in r.stderr and wrong not in r.stderr
    r = breakglass(tmp_path, "check-config", "--online", **env)
    said(r, line)
    assert wrong not in r.stderr + r.stdout


def test_a_database_that_is_down_is_told_from_a_refused_password(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://bg:hunter2@127.0.0.1:{port}/bg"
    line = (
        f"database postgresql+psycopg://bg:***@127.0.0.1:{port}/bg: cannot connect: PostgreSQL "
        "is not running there or cannot be reached: start it, or correct the host and port in "
        "DATABASE_URL"
    )
    said(breakglass(tmp_path, "migrate", DATABASE_URL=url), f"breakglass migrate: {line}")
    r = breakglass(
        tmp_path, "serve", "--port", str(free_port()), **serving_env(tmp_path, DATABASE_URL=url)
    )
    said(r, f"breakglass serve: {line}")
    assert "hunter2" not in r.stderr


def test_a_database_that_does_not_exist_is_named(backends, tmp_path):
    url = _pg_url(backends, backends.pg.admin_password, "no_such_db")
    said(
        breakglass(tmp_path, "audit", "verify", DATABASE_URL=url),
        f"breakglass audit verify: database {_pg_shown(backends, 'no_such_db')}: PostgreSQL "
        'has no database "no_such_db": create it (createdb), or correct its name in DATABASE_URL',
        2,
    )


def test_audit_verify_on_a_fresh_sqlite_file_says_run_migrate(tmp_path):
    path = tmp_path / "fresh.db"
    r = breakglass(tmp_path, "audit", "verify", DATABASE_URL=f"sqlite:///{path}")
    said(
        r,
        f"breakglass audit verify: database sqlite:///{path}: no such file: {MIGRATE} to create "
        "it, or point DATABASE_URL at the bot's database",
        2,
    )
    assert not path.exists(), "a reading command leaves no empty database behind"
    path.touch()  # an empty file: SQLite opens it, and finds no table
    r = breakglass(tmp_path, "stats", DATABASE_URL=f"sqlite:///{path}")
    shipped = len(list((ROOT / "bot" / "migrations" / "versions").glob("0*.py")))
    said(
        r,
        f"breakglass stats: database sqlite:///{path}: not migrated ({shipped} migration(s) "
        f"pending): {MIGRATE}",
    )


# ---- Vault --------------------------------------------------------------------------------


def test_no_vault_credentials_are_named_and_a_home_vault_token_is_not_borrowed(
    backends, slack, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    home.mkdir()
    # A person's own token in their home folder: hvac would read it; the bot must not.
    (home / ".vault-token").write_text(backends.bot_token)
    env = serving_env(tmp_path, backends, slack, VAULT_TOKEN="")
    r = breakglass(tmp_path, "check-config", **env)
    said(r, NO_VAULT_CREDENTIALS)
    said(breakglass(tmp_path, "serve", "--port", str(free_port()), **env), NO_VAULT_CREDENTIALS)
    # Nor does the bot's Vault client, built as `serve` builds it, send that token.
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    auth = vault_auth_from_env(backends.bao.addr, None, environ={})
    assert not auth.client.token
    with pytest.raises(hvac.exceptions.Forbidden):
        auth.client.auth.token.lookup_self()


def test_half_an_approle_is_named(tmp_path):
    r = breakglass(
        tmp_path, "check-config", **serving_env(tmp_path, VAULT_TOKEN="", VAULT_ROLE_ID="r-1")
    )
    said(
        r,
        "environment: VAULT_SECRET_ID is not set: AppRole needs both VAULT_ROLE_ID and "
        "VAULT_SECRET_ID",
    )


def test_an_approle_login_vault_refuses_is_named(backends, slack, tmp_path):
    role_id, _ = enable_approle(
        backends.bao.client(),
        "bot-mistake",
        policies=["breakglass-bot"],
        token_ttl="5m",
        token_max_ttl="10m",
    )
    env = serving_env(
        tmp_path, backends, slack, VAULT_TOKEN="", VAULT_ROLE_ID=role_id, VAULT_SECRET_ID="wrong"
    )
    refused = (
        f"vault {backends.bao.addr}: the AppRole login was refused (Vault rejected "
        "auth/approle/login: invalid role or secret ID): check VAULT_ROLE_ID and VAULT_SECRET_ID"
    )
    said(breakglass(tmp_path, "check-config", "--online", **env), refused)
    said(
        breakglass(tmp_path, "serve", "--port", str(free_port()), **env),
        f"breakglass serve: {refused}",
    )


def test_a_wrong_vault_token_is_told_from_an_unreachable_vault(backends, slack, tmp_path):
    env = serving_env(tmp_path, backends, slack, VAULT_TOKEN="hvs.not-a-real-token")
    refused = (
        f"vault {backends.bao.addr}: Vault does not accept the bot's token (VAULT_TOKEN): it is "
        "mistyped, expired or revoked; make a new one (see bot/vault/breakglass-bot.hcl)"
    )
    r = breakglass(tmp_path, "check-config", "--online", **env)
    said(r, refused)
    assert "hvs.not-a-real-token" not in r.stderr + r.stdout
    r = breakglass(tmp_path, "serve", "--port", str(free_port()), **env)
    said(r, f"breakglass serve: {refused}")
    down = f"http://127.0.0.1:{free_port()}"
    r = breakglass(tmp_path, "check-config", "--online", **{**env, "VAULT_ADDR": down})
    said(
        r,
        f"vault {down}: cannot reach Vault (auth/token/lookup-self); is Vault running there, "
        "and is VAULT_ADDR right?",
    )


def test_kubernetes_auth_without_its_token_file_is_named(tmp_path):
    missing = tmp_path / "sa" / "token"
    env = serving_env(
        tmp_path, VAULT_TOKEN="", VAULT_K8S_ROLE="breakglass", VAULT_K8S_TOKEN_PATH=str(missing)
    )
    line = (
        f"environment: VAULT_K8S_ROLE is set but the service account token {missing} cannot be "
        "read (No such file or directory): mount it (automountServiceAccountToken), or set "
        "VAULT_K8S_TOKEN_PATH to where it is"
    )
    said(breakglass(tmp_path, "check-config", **env), line)
    said(breakglass(tmp_path, "serve", "--port", str(free_port()), **env), line)


# ---- Slack --------------------------------------------------------------------------------


def test_check_config_online_says_the_bot_is_not_in_the_security_channel(backends, slack, tmp_path):
    slack.bot_in_channel = False
    r = breakglass(tmp_path, "check-config", "--online", **serving_env(tmp_path, backends, slack))
    said(
        r,
        f"slack: the bot is not in the security channel {SECURITY_CHANNEL}: type "
        "`/invite @breakglass` in that channel (no card can be posted until then)",
    )
    assert slack.attempts_to("conversations.info")


def test_check_config_online_names_a_security_channel_that_does_not_exist(
    backends, slack, tmp_path
):
    slack.unknown_channels.add(SECURITY_CHANNEL)
    r = breakglass(tmp_path, "check-config", "--online", **serving_env(tmp_path, backends, slack))
    said(
        r,
        f"slack: the security channel {SECURITY_CHANNEL} was not found: check security_channel "
        "in the policy file (the channel's ID, at the bottom of its About tab); a private "
        "channel is found once the bot is in it (`/invite @breakglass` there)",
    )


def test_a_card_the_bot_may_not_post_tells_the_requester_and_goes_out_once_invited(
    bot, slack, caplog
):
    caplog.set_level(logging.WARNING)
    slack.bot_in_channel = False
    view = open_modal(bot, slack)
    values = request_values("prod-db", "30m", "Checkout is down, orders table locked.", "INC-1")
    assert bot.driver.submit_view(REQUESTER, view, values).status_code == 200
    told = (
        "Your request #1 for *prod-db* could not be posted to the security channel "
        f"<#{SECURITY_CHANNEL}>: the bot is not a member of it, so no approver has seen it "
        "yet. Ask someone in that channel to type `/invite @breakglass` there: your request "
        "is posted as soon as they do."
    )
    wait_for(lambda: [m for m in slack.dms(REQUESTER) if m.text == told])
    assert (
        f"the bot is not in the security channel {SECURITY_CHANNEL}: type /invite @breakglass "
        "in that channel; what the bot owes there is posted once it is invited"
    ) in [r.getMessage() for r in caplog.records]

    # Slack keeps answering not_in_channel: the card is retried, the requester told once.
    def posts() -> list:
        sent = slack.attempts_to("chat.postMessage")
        return [c for c in sent if c.args.get("channel") == SECURITY_CHANNEL]

    wait_for(lambda: len(posts()) >= 2, timeout=20)
    assert not any(c.ok for c in posts())
    slack.bot_in_channel = True  # someone typed /invite @breakglass
    card = wait_for(
        lambda: [m for m in slack.channel_messages(SECURITY_CHANNEL) if m.thread_ts is None],
        timeout=20,
    )
    assert len(card) == 1 and "prod-db" in card[0].text
    assert [m.text for m in slack.dms(REQUESTER)].count(told) == 1
    with bot.runtime.store.read() as s:
        owed = s.exec(select(OutboxEntry).where(OutboxEntry.kind == "dm")).all()
        assert sum("card_not_posted" in e.payload for e in owed) == 1


# ---- the command itself -------------------------------------------------------------------


def test_version_comes_from_the_package(tmp_path):
    r = breakglass(tmp_path, "--version")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert r.stdout.strip() == f"breakglass {importlib.metadata.version('breakglass')}"


def test_a_missing_policy_file_names_breakglass_config(tmp_path):
    r = breakglass(tmp_path, "check-config", "--policy-only")
    said(
        r,
        f"{tmp_path / 'breakglass.yml'}: cannot read the policy file: No such file or "
        "directory: point BREAKGLASS_CONFIG (or --config) at your policy file (default "
        "breakglass.yml in the working directory; breakglass.example.yml is a start)",
    )


def test_config_overrides_breakglass_config_before_or_after_the_command(tmp_path):
    good = tmp_path / "policies" / "bg.yml"
    good.parent.mkdir()
    good.write_text(POLICY)
    env = {"BREAKGLASS_CONFIG": str(tmp_path / "elsewhere.yml")}
    ok = f"{good}: OK, 2 resource(s), 2 approver group(s)"
    for args in (
        ["--config", str(good), "check-config", "--policy-only"],
        ["check-config", "--policy-only", "--config", str(good)],
    ):
        r = breakglass(tmp_path, *args, **env)
        assert r.returncode == 0 and r.stdout.strip() == ok, r.stderr


def test_verbose_works_after_the_subcommand(tmp_path):
    url = migrated_sqlite(tmp_path)
    quiet = breakglass(tmp_path, "audit", "verify", DATABASE_URL=url)
    loud = breakglass(tmp_path, "audit", "verify", "-v", DATABASE_URL=url)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    debug = f"breakglass {importlib.metadata.version('breakglass')}: audit verify, policy file"
    assert debug not in quiet.stderr and debug in loud.stderr


def test_every_command_says_what_it_does_and_the_environment_it_reads():
    def commands(p, path=()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield (*path, name), sub
                    yield from commands(sub, (*path, name))

    found = dict(commands(parser()))
    assert {" ".join(k) for k in found} >= {
        "serve",
        "check-config",
        "migrate",
        "audit verify",
        "audit export",
        "stats",
        "digest",
        "demo",
    }
    for name, sub in found.items():
        assert sub.description and len(sub.description) > 40, name
        assert sub.epilog.startswith("environment:"), name
        named = [w for w in sub.epilog.split() if w in ENVIRONMENT]
        assert named or sub.epilog == "environment: none read.", name
    # The database commands name DATABASE_URL; those that read the policy, BREAKGLASS_CONFIG.
    for name in ("migrate", "stats", "digest", "audit verify", "audit export", "audit show"):
        assert "DATABASE_URL" in found[tuple(name.split())].epilog, name
    for name in ("serve", "check-config", "audit prune"):
        assert "BREAKGLASS_CONFIG" in found[tuple(name.split())].epilog, name


def test_help_shows_defaults_and_environment(tmp_path):
    r = breakglass(tmp_path, "serve", "--help")
    assert r.returncode == 0
    lines = [ln.strip() for ln in r.stdout.splitlines()]
    assert "--port PORT        HTTP port (default 3000)" in lines
    assert "environment:" in lines
    assert any(ln.startswith("DATABASE_URL") for ln in lines)
