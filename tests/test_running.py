"""Running it: check-config, migrations, the manifest, `breakglass serve` and `breakglass demo`
as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jsonschema
import psutil
import pytest
import requests
import sqlalchemy as sa
import yaml
from alembic.script import ScriptDirectory

from bot import migrate
from bot.cli import main
from bot.sandbox.slack_fake import request_values, revealed
from bot.sandbox.stack import (
    APPROVER,
    POLICY,
    REQUESTER,
    SECURITY_CHANNEL,
    ServeProcess,
)
from bot.slack.ids import ActionId
from bot.store import create_db_engine
from tests.helpers import JUSTIFICATION, wait_for

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT.parent / "shared" / "slack" / "manifest.schema.1.0.0.json"
BREAKGLASS = str(Path(sys.executable).parent / "breakglass")

# Processes of its own (serve, the demo): run on the worker that runs test_faults_processes.
pytestmark = pytest.mark.xdist_group("processes")


# ---- check-config ---------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_API_URL",
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "DATABASE_URL",
        "BREAKGLASS_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s3cr3t")
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")
    monkeypatch.setenv("VAULT_TOKEN", "hvs.sandbox")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bg.db'}")
    policy = tmp_path / "breakglass.yml"
    policy.write_text(POLICY)
    monkeypatch.setenv("BREAKGLASS_CONFIG", str(policy))
    return policy


def test_check_config_ok(env, capsys):
    assert main(["check-config"]) == 0
    assert "OK, 2 resource(s)" in capsys.readouterr().out


def test_check_config_names_every_problem_with_its_line(env, capsys, monkeypatch):
    broken = POLICY.replace("max_duration: 1h", "max_duration: forever").replace(
        "approvers: [sre-leads]", "approvers: [sre-leadz]"
    )
    env.write_text(broken)
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    assert main(["check-config"]) == 1
    err = capsys.readouterr().err
    lines = broken.splitlines()
    bad_duration = next(i for i, ln in enumerate(lines, 1) if "forever" in ln)
    bad_group = next(i for i, ln in enumerate(lines, 1) if "sre-leadz" in ln)
    assert f"{env}:{bad_duration}: resources.prod-db.max_duration:" in err
    assert f"{env}:{bad_group}: resources.prod-db-two-keys.approvers.0: no approver group" in err
    assert "SLACK_SIGNING_SECRET is not set" in err
    assert "Traceback" not in err


def test_check_config_checks_requester_groups(env, capsys):
    env.write_text(
        POLICY.replace("    emergency: true\n", "    emergency: true\n    requesters: [on-call]\n")
    )
    assert main(["check-config"]) == 1
    line = next(i for i, ln in enumerate(env.read_text().splitlines(), 1) if "on-call" in ln)
    assert (
        f"{env}:{line}: resources.prod-db.requesters.0: no group named 'on-call'"
        in capsys.readouterr().err
    )


def test_check_config_missing_file(env, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BREAKGLASS_CONFIG", str(tmp_path / "nope.yml"))
    assert main(["check-config"]) == 1
    assert "cannot read the policy file" in capsys.readouterr().err


# ---- migrations ---------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_migrations_match_the_models(database_url):
    engine = create_db_engine(database_url)
    shipped = {
        rev.revision
        for rev in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
    }
    assert {"0001", "0002", "0003", "0004", "0005"} <= shipped
    assert set(migrate.pending(engine)) == shipped
    migrate.upgrade(engine, "0001")
    with engine.begin() as c:  # a database in use: 0002 adds columns to rows that exist
        c.execute(
            sa.text(
                "INSERT INTO access_request (id, requester, resource, duration_seconds, "
                "justification, emergency, review_required, state, created_at, updated_at) "
                "VALUES (1, 'U0A', 'db', 60, 'why', false, false, 'active', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        c.execute(
            sa.text(
                "INSERT INTO access_grant (id, request_id, provider, identity, token_accessor, "
                "issued_at, expires_at) VALUES (1, 1, 'p', 'u', 'acc', CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"
            )
        )
    migrate.upgrade(engine)
    assert migrate.pending(engine) == []
    assert migrate.schema_drift(engine) == []


# ---- the manifest --------------------------------------------------------------------------


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"Slack's manifest schema not found at {SCHEMA}")
def test_manifest_is_valid_and_asks_only_for_what_the_bot_uses():
    schema = json.loads(SCHEMA.read_text())
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    jsonschema.validate(manifest, schema)
    assert manifest["oauth_config"]["scopes"]["bot"] == [
        "commands",
        "chat:write",
        "files:write",
        "channels:read",  # check-config --online: is the bot in the security channel
        "groups:read",
    ]
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/breakglass"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    broken = dict(manifest, display_information={})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# ---- breakglass serve, as a process ---------------------------------------------------------


def test_serve_answers_signed_requests_over_http(backends, slack, tmp_path):
    served = ServeProcess(backends, slack, tmp_path).start()
    try:
        health = requests.get(f"{served.url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["scheduler"] == "running"
        driver = served.driver
        assert "/breakglass revoke" in driver.command(REQUESTER, "help").text
        assert driver.command(REQUESTER, "help", signature="v0=bad").status_code == 401
        assert migrate.pending(create_db_engine(served.database_url)) == [], "migrated at start"
        # The whole flow in the production configuration: listeners run after the ack.
        assert driver.command(REQUESTER).status_code == 200
        modal = wait_for(lambda: slack.views_opened()[-1] if slack.views_opened() else None)
        assert modal["callback_id"] == "breakglass.request.submit"
        r = driver.submit_view(REQUESTER, modal, request_values("prod-db", "15m", JUSTIFICATION))
        assert r.status_code == 200 and r.text == ""
        parent = wait_for(
            lambda: next(
                iter(m for m in slack.channel_messages(SECURITY_CHANNEL) if m.thread_ts is None),
                None,
            )
        )
        assert driver.click(APPROVER, parent, ActionId.APPROVE).status_code == 200
        dm = wait_for(
            lambda: next(
                iter(m for m in slack.dms(REQUESTER) if "vault unwrap" in str(m.blocks)), None
            )
        )
        opened = len(slack.views_opened())
        assert driver.click(REQUESTER, dm, ActionId.REVEAL).status_code == 200
        modal = wait_for(
            lambda: slack.views_opened()[-1] if len(slack.views_opened()) > opened else None
        )
        fields = wait_for(lambda: revealed(slack, modal["id"]))
        assert backends.pg.can_login(fields["username"], fields["password"])
        assert driver.click(REQUESTER, dm, ActionId.REVOKE).status_code == 200
        wait_for(lambda: not backends.pg.can_login(fields["username"], fields["password"]))
        wait_for(
            lambda: (
                "Revoked by" in " ".join(m.text for m in slack.thread(SECURITY_CHANNEL, parent.ts))
            )
        )
    finally:
        served.stop()


def test_serve_uses_socket_mode_when_an_app_token_is_set(backends, slack, tmp_path):
    served = ServeProcess(backends, slack, tmp_path)
    served.env["SLACK_APP_TOKEN"] = "xapp-1-sandbox"
    proc = subprocess.Popen(
        [BREAKGLASS, "serve", "--port", str(served.port)],
        env=served.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not slack.calls_to("apps.connections.open") and time.monotonic() < deadline:
            assert proc.poll() is None, "serve exited"
            time.sleep(0.05)
        opened = slack.calls_to("apps.connections.open")
        assert opened and opened[0].token == "xapp-1-sandbox"
        with pytest.raises(requests.ConnectionError):  # no HTTP listener in Socket Mode
            requests.get(f"{served.url}/healthz", timeout=1)
    finally:
        proc.terminate()
        proc.wait(20)


def _group_alive(pgid: int) -> bool:
    return any(
        p.info["status"] != psutil.STATUS_ZOMBIE
        for p in psutil.process_iter(["status"])
        if _pgid(p) == pgid
    )


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def test_serve_process_crashes_and_restarts_on_its_port(backends, slack, tmp_path):
    served = ServeProcess(backends, slack, tmp_path).start()
    try:
        first = served.process.pid
        served.kill()
        assert not _group_alive(first), "SIGKILL takes gunicorn's worker down with the master"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{served.url}/healthz", timeout=1)
        served.restart()  # same port, same environment, same database
        assert requests.get(f"{served.url}/healthz", timeout=5).status_code == 200
        assert "/breakglass revoke" in served.driver.command(REQUESTER, "help").text
        assert served.process.pid != first
        assert served.log_text().count("==== started again ====") == 1
    finally:
        served.stop()
    assert not served.running


def test_serve_process_reports_why_it_did_not_start(backends, slack, tmp_path):
    served = ServeProcess(
        backends, slack, tmp_path, policy_text=POLICY.replace("approvals: 2", "approvals: 7")
    )
    with pytest.raises(RuntimeError, match="exited with 1 at start") as failed:
        served.start()
    assert "nothing was started" in str(failed.value)
    assert "nothing was started" in served.log_text()


def test_serve_process_replica_shares_the_app_and_database(backends, slack, tmp_path):
    db = backends.pg.create_database("bg_replicas")
    one = ServeProcess(
        backends,
        slack,
        tmp_path,
        database_url=db,
        vault_addr="http://127.0.0.1:9",
        extra_env={"BREAKGLASS_MARK": "x"},
    )
    two = one.replica()
    same = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "DATABASE_URL", "VAULT_ADDR")
    assert all(one.env[k] == two.env[k] for k in same) and two.env["BREAKGLASS_MARK"] == "x"
    assert one.env["VAULT_ADDR"] == "http://127.0.0.1:9" and one.port != two.port
    assert one.log_path != two.log_path


def test_serve_refuses_to_start_without_configuration(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "VAULT_", "DATABASE_URL", "BREAKGLASS_"))
    }
    r = subprocess.run(
        [BREAKGLASS, "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1
    assert "SLACK_BOT_TOKEN is not set" in r.stderr and "Traceback" not in r.stderr


def test_serve_refuses_a_broken_policy_with_its_lines(env, capsys):
    env.write_text(POLICY.replace("approvals: 2", "approvals: 7"))
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    line = next(i for i, ln in enumerate(env.read_text().splitlines(), 1) if "approvals: 7" in ln)
    assert f"{env}:{line}: resources.prod-db-two-keys.approvals: needs 7 distinct" in err
    assert "nothing was started" in err and "Traceback" not in err


def test_serve_no_migrate_refuses_an_unmigrated_database(env, capsys):
    assert main(["serve", "--no-migrate"]) == 1
    assert "breakglass migrate" in capsys.readouterr().err


# ---- breakglass demo ------------------------------------------------------------------------


MARKER = "BREAKGLASS_TEST_RUN"  # an environment variable every child of the demo inherits


def _marked(marker: str) -> dict[int, str]:
    """Live processes (pid: name) whose environment carries `MARKER=marker`: the ones the
    demo started, whatever else runs on the machine (another suite's OpenBao, a developer's
    PostgreSQL) and whoever they run as (root reads every environment)."""
    found = {}
    for proc in psutil.process_iter(["pid", "name", "status", "environ"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue  # exited; only not reaped (nothing reaps orphans in some containers)
        if (proc.info["environ"] or {}).get(MARKER) == marker:
            found[proc.info["pid"]] = proc.info["name"]
    return found


def test_demo_plays_the_whole_flow_and_cleans_up(tmp_path, tmp_path_factory):
    marker = uuid.uuid4().hex
    logs = tmp_path_factory.mktemp("demo-output")  # tmp_path itself must stay empty
    out_file, err_file = logs / "out", logs / "err"
    with out_file.open("w") as out, err_file.open("w") as err:
        demo = subprocess.Popen(
            [BREAKGLASS, "demo", "--out", str(logs / "digest")],
            cwd=tmp_path,
            env={**os.environ, MARKER: marker},
            stdout=out,
            stderr=err,
        )
        seen: set[str] = set()
        deadline = time.monotonic() + 300
        # Watch it while it runs: proves the marker reaches the servers it starts, so the
        # clean-up check below is not vacuous.
        while demo.poll() is None:
            assert time.monotonic() < deadline, "the demo did not finish"
            seen |= {name for pid, name in _marked(marker).items() if pid != demo.pid}
            time.sleep(0.1)
    out = out_file.read_text()
    assert demo.returncode == 0, out + err_file.read_text()
    assert {"bao", "postgres"} <= seen, f"saw only {seen}"
    assert "Login to PostgreSQL as v-" in out and ": succeeded" in out
    assert "after revocation: refused" in out
    # PostgreSQL's own words, and the pending card with its buttons before the approval.
    assert 'PostgreSQL said: FATAL:  password authentication failed for user "v-' in out
    assert out.index("[Approve] [Deny]") < out.index("2. @bob approves")
    # A generated username is never split across lines (it is copied from here).
    import re

    for name in set(re.findall(r"v-token-[A-Za-z0-9_-]+", out)):
        assert name.endswith(tuple("0123456789")), f"username cut: {name}"
    assert "`bao unwrap`" in out
    assert "#security" in out and "Approved by @bob" in out and "Revoked by @alice" in out
    assert "audit chain intact" in out
    assert "@carol broke the glass" in out and "reviewed by @bob: legitimate" in out
    assert "events (grants made)               2" in out
    assert f"chart: {logs / 'digest' / 'digest.png'}" in out
    assert (logs / "digest" / "digest.png").read_bytes().startswith(b"\x89PNG")
    assert list(tmp_path.iterdir()) == [], "the demo leaves nothing behind in the working dir"
    deadline = time.monotonic() + 10  # the servers' last children may take a moment
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"the demo left processes running: {left}"


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()


def test_example_policy_loads():
    from bot.policy import load_policy

    policy = load_policy(ROOT / "breakglass.example.yml")
    assert policy.resources["prod-db"].emergency is True


def test_check_config_online_finds_missing_vault_capabilities(
    env, capsys, monkeypatch, backends, slack
):
    monkeypatch.setenv("VAULT_ADDR", backends.bao.addr)
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    monkeypatch.setenv("VAULT_TOKEN", backends.bot_token)
    assert main(["check-config", "--online"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    shipped = len(list(ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()))
    assert f"{shipped} migration(s) pending" in out and "OK, 2 resource(s)" in out
    assert slack.calls_to("auth.test")
    # A token with only Vault's default policy cannot issue anything.
    weak = backends.bao.client().auth.token.create(policies=["default"], ttl="10m")
    monkeypatch.setenv("VAULT_TOKEN", weak["auth"]["client_token"])
    assert main(["check-config", "--online"]) == 1
    err = capsys.readouterr().err
    assert "lacks update on auth/token/create (needed by every grant)" in err
    assert (
        "lacks read on database/creds/breakglass-rw "
        "(needed by resources.prod-db, resources.prod-db-two-keys)" in err
    )
    assert weak["auth"]["client_token"] not in err


def test_check_config_online_unreachable_parts(env, capsys, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "hvs.nope")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://bg:hunter2@127.0.0.1:9/bg")
    assert main(["check-config", "--online"]) == 1
    err = capsys.readouterr().err
    assert "database postgresql+psycopg://bg:***@127.0.0.1:9/bg: cannot connect" in err
    assert "vault http://127.0.0.1:9: cannot reach Vault" in err
    assert "slack: cannot reach the Slack API" in err
    assert "hunter2" not in err and "Traceback" not in err
