"""`check-config --online`: can the bot, with this configuration, reach what it needs and do
what a grant will ask of Vault? Better found now than at 2 a.m."""

from __future__ import annotations

from datetime import timedelta

import hvac
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot import migrate
from bot.domain.durations import format_duration
from bot.policy import Policy
from bot.settings import Settings
from bot.store import create_db_engine
from providers import ProviderError, VaultAuth, VaultForbidden, VaultRejected, VaultUnavailable
from providers.vault import mount_max_lease_ttl, vault_errors
from providers.vault_database import read_role

# What every grant needs from the bot's token, whatever the provider.
COMMON_CAPABILITIES = {
    "auth/token/create": {"update"},
    "auth/token/revoke-accessor": {"update"},
    "sys/leases/renew": {"update"},
    "sys/leases/revoke": {"update"},
    "sys/wrapping/wrap": {"update"},
}


def required_capabilities(policy: Policy) -> dict[str, tuple[set[str], str]]:
    """Vault path -> (capabilities needed, who needs them)."""
    needed = {path: (caps, ["every grant"]) for path, caps in COMMON_CAPABILITIES.items()}
    for name, res in policy.resources.items():
        if res.provider == "vault-database":
            mount = str(res.options.get("mount", "database")).strip("/")
            path = f"{mount}/creds/{res.options['role']}"
            caps, who = needed.get(path, (set(), []))
            needed[path] = (caps | {"read"}, [*who, f"resources.{name}"])
            if res.activity is not None:
                paths = [f"{mount}/creds/{res.activity.monitor_role}"]
                if res.activity.dsn is None:  # where Vault connects, read from the role
                    paths.append(f"{mount}/roles/{res.activity.monitor_role}")
                for path in paths:
                    caps, who = needed.get(path, (set(), []))
                    needed[path] = (caps | {"read"}, [*who, f"resources.{name}.activity"])
    if policy.audit.vault_device:
        needed[f"sys/audit-hash/{policy.audit.vault_device}"] = ({"update"}, ["audit.vault_device"])
    if policy.audit.encrypt:
        from providers.transit import parse_key_path

        mount, key = parse_key_path(policy.audit.encrypt)
        for verb in ("encrypt", "decrypt"):
            needed[f"{mount}/{verb}/{key}"] = ({"update"}, ["audit.encrypt"])
    return {path: (caps, ", ".join(who)) for path, (caps, who) in needed.items()}


def activity_problems(
    client: hvac.Client, addr: str, policy: Policy, problems: list[str], notes: list[str]
) -> None:
    """Each monitoring role of an `activity:` exists; without a `dsn`, the bot may read the
    connection Vault uses for it. Routes: GET {mount}/roles/{role}, POST
    sys/capabilities-self."""
    roles: dict[tuple[str, str, bool], list[str]] = {}
    for name, res in policy.resources.items():
        if res.provider == "vault-database" and res.activity is not None:
            mount = str(res.options.get("mount", "database")).strip("/")
            key = (mount, res.activity.monitor_role, res.activity.dsn is None)
            roles.setdefault(key, []).append(name)
    for (mount, role_name, from_vault), names in sorted(roles.items()):
        path = f"{mount}/roles/{role_name}"
        who = ", ".join(f"resources.{n}.activity" for n in names)
        try:
            role = read_role(client, mount, role_name)
        except VaultForbidden:
            notes.append(f"vault {addr}: cannot check {path} (needed by {who})")
            continue
        if role is None:
            problems.append(f"vault {addr}: the monitoring role {path} does not exist ({who})")
            continue
        if not from_vault or not role.db_name:
            continue
        config = f"{mount}/config/{role.db_name}"
        with vault_errors("sys/capabilities-self"):
            resp = client.adapter.post("/v1/sys/capabilities-self", json={"paths": [config]})
        granted = resp.get("data", resp) if isinstance(resp, dict) else resp.json()
        have = set(granted.get(config, []))
        if not ({"read", "root"} & have):
            problems.append(
                f"vault {addr}: the bot's token lacks read on {config} (where the database is, "
                f"for {who}); grant it, or give the activity a dsn"
            )


def database_role_problems(
    client: hvac.Client, addr: str, policy: Policy, problems: list[str], notes: list[str]
) -> None:
    """Each vault-database role exists, and no resource's max_duration is above what the role
    (or, when its max_ttl is 0, its mount) lets a lease live. Routes: GET {mount}/roles/{role},
    GET sys/mounts/{mount}/tune."""
    users: dict[tuple[str, str], list[str]] = {}
    for name, res in policy.resources.items():
        if res.provider == "vault-database":
            mount = str(res.options.get("mount", "database")).strip("/")
            users.setdefault((mount, str(res.options["role"])), []).append(name)
    for (mount, role_name), names in sorted(users.items()):
        path = f"{mount}/roles/{role_name}"
        who = ", ".join(f"resources.{n}" for n in names)
        try:
            role = read_role(client, mount, role_name)
        except VaultForbidden:
            notes.append(
                f"vault {addr}: cannot check {path} (the bot's token lacks read on it; "
                "see bot/vault/breakglass-bot.hcl)"
            )
            continue
        if role is None:
            problems.append(f"vault {addr}: {path} does not exist (needed by {who})")
            continue
        mount_max = mount_max_lease_ttl(client, mount)
        if role.max_ttl:
            limit, source = role.max_ttl, f"the max_ttl of {path}"
            if mount_max is not None and mount_max < limit:
                limit, source = mount_max, f"the max_lease_ttl of the {mount}/ mount"
        elif mount_max is not None:
            limit, source = mount_max, f"the max_lease_ttl of the {mount}/ mount ({path} sets none)"
        else:
            notes.append(
                f"vault {addr}: {path} sets no max_ttl and the bot's token cannot read "
                f"sys/mounts/{mount}/tune, so the longest grant Vault allows there is unknown"
            )
            continue
        for n in names:
            longest = policy.resources[n].max_duration
            if longest.total_seconds() > limit:
                problems.append(
                    f"vault {addr}: resources.{n}.max_duration {format_duration(longest)} is "
                    f"above {source}, {format_duration(timedelta(seconds=limit))}; Vault would "
                    "end such grants early"
                )


def forwarding_notes(engine: Engine, policy: Policy, notes: list[str]) -> None:
    """Each audit sink that is failing now, and how far behind it is (from its cursor)."""
    from bot.store import cursors

    sinks = [s.name for s in policy.audit.forward]
    if not sinks or not sa.inspect(engine).has_table("audit_cursor"):
        return
    with engine.connect() as c:
        for st in cursors.status(c, sinks):
            if st.failing_since is not None:
                notes.append(
                    f"audit.forward {st.sink}: failing since "
                    f"{st.failing_since.isoformat(timespec='seconds')} ({st.last_error}); "
                    f"{st.lag} event(s) waiting"
                )


def transit_problems(client: hvac.Client, addr: str, policy: Policy, problems: list[str]) -> None:
    """audit.encrypt: the key must exist, not only the token's capabilities on its paths (a
    key never created passes those, and every request would be refused): seal a word and
    open it again, as the bot will."""
    if not policy.audit.encrypt or any("(needed by audit.encrypt)" in p for p in problems):
        return  # the token's missing capabilities are reported already
    from providers.transit import Sealer

    sealer = Sealer(client, policy.audit.encrypt)
    try:
        if sealer.open(sealer.seal("breakglass check-config")) != "breakglass check-config":
            raise VaultRejected("the text did not come back as it was")
    except ProviderError as exc:
        problems.append(
            f"vault {addr}: audit.encrypt: cannot encrypt with {policy.audit.encrypt} ({exc}); "
            "create the key (`vault write -f transit/keys/NAME`) or fix the path"
        )


class VaultLoginFailed(Exception):
    """The bot cannot get a working Vault token; `unreachable`: because Vault cannot be
    reached (or is sealed) now, not because of the credentials."""

    def __init__(self, line: str, *, unreachable: bool):
        super().__init__(line)
        self.unreachable = unreachable


def vault_login(settings: Settings, *, timeout: float = 5) -> VaultAuth:
    """The bot's Vault identity with a working token: logged in (AppRole, Kubernetes), and
    the token accepted by Vault. VaultLoginFailed with the line that says why not, a refused
    credential told apart from an unreachable Vault. Routes: the login route, GET
    auth/token/lookup-self."""
    from providers.auth import vault_auth_from_env

    addr = settings.vault_addr
    token = settings.vault_token.get_secret_value() if settings.vault_token else None
    auth = vault_auth_from_env(addr, token, timeout=timeout)
    hint = "; is Vault running there, and is VAULT_ADDR right?"
    check = {
        "AppRole": "VAULT_ROLE_ID and VAULT_SECRET_ID",
        "Kubernetes": "VAULT_K8S_ROLE, and that the role is bound to this service account",
    }

    def down(exc: VaultUnavailable) -> VaultLoginFailed:
        line = f"vault {addr}: {exc}" + (hint if exc.status is None else "")
        return VaultLoginFailed(line, unreachable=True)

    try:
        auth.login()
    except VaultUnavailable as exc:
        raise down(exc) from None
    except (VaultForbidden, VaultRejected) as exc:
        raise VaultLoginFailed(
            f"vault {addr}: the {auth.method_name} login was refused ({exc}): check "
            f"{check.get(auth.method_name, 'the credentials')}",
            unreachable=False,
        ) from None
    except ProviderError as exc:
        raise VaultLoginFailed(
            f"vault {addr}: the {auth.method_name} login failed: {exc}", unreachable=False
        ) from None
    try:
        with vault_errors("auth/token/lookup-self"):
            auth.client.auth.token.lookup_self()
    except VaultForbidden:
        source = "VAULT_TOKEN" if auth.method_name == "token" else auth.method_name
        raise VaultLoginFailed(
            f"vault {addr}: Vault does not accept the bot's token ({source}): it is mistyped, "
            "expired or revoked; make a new one (see bot/vault/breakglass-bot.hcl)",
            unreachable=False,
        ) from None
    except VaultUnavailable as exc:
        raise down(exc) from None
    except ProviderError as exc:
        raise VaultLoginFailed(f"vault {addr}: {exc}", unreachable=False) from None
    return auth


def vault_problems(settings: Settings, policy: Policy) -> tuple[list[str], list[str]]:
    """Vault, told apart: unreachable (or sealed), a login that fails, a token Vault does not
    accept, then what the token may do. Routes: those of `vault_login`, POST
    sys/capabilities-self, and those of the role checks."""
    from providers.auth import credentials_problems

    problems: list[str] = []
    notes: list[str] = []
    addr = settings.vault_addr
    token = settings.vault_token.get_secret_value() if settings.vault_token else None
    if not addr or credentials_problems(token):
        return problems, notes  # offline check-config names them already
    try:
        client = vault_login(settings).client
    except VaultLoginFailed as exc:
        problems.append(str(exc))
        return problems, notes
    try:
        needed = required_capabilities(policy)
        with vault_errors("sys/capabilities-self"):
            resp = client.adapter.post("/v1/sys/capabilities-self", json={"paths": sorted(needed)})
        granted = resp.get("data", resp) if isinstance(resp, dict) else resp.json()
        for path, (caps, who) in sorted(needed.items()):
            have = set(granted.get(path, []))
            if "root" in have or caps <= have:
                continue
            missing = ", ".join(sorted(caps - have))
            problems.append(
                f"vault {addr}: the bot's token lacks {missing} on {path} "
                f"(needed by {who}); see bot/vault/breakglass-bot.hcl"
            )
        database_role_problems(client, addr, policy, problems, notes)
        activity_problems(client, addr, policy, problems, notes)
        transit_problems(client, addr, policy, problems)
    except ProviderError as exc:
        problems.append(f"vault {addr}: {exc}")
    return problems, notes


def slack_problems(settings: Settings, policy: Policy) -> tuple[list[str], list[str]]:
    """The bot token works, and the bot is a member of the security channel (Slack answers
    `not_in_channel` to every card otherwise). Routes: auth.test, conversations.info, whose
    `is_member` needs channels:read (groups:read for a private channel): the cheapest call
    that tells."""
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    problems: list[str] = []
    notes: list[str] = []
    if not settings.slack_bot_token:
        return problems, notes
    client = WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_base_url() or WebClient.BASE_URL,
        timeout=5,
    )
    channel = policy.security_channel
    try:
        client.auth_test()
    except SlackApiError as exc:
        problems.append(f"slack: SLACK_BOT_TOKEN refused ({exc.response.get('error')})")
        return problems, notes
    except OSError as exc:
        problems.append(f"slack: cannot reach the Slack API ({type(exc).__name__})")
        return problems, notes
    try:
        info = client.conversations_info(channel=channel)
    except SlackApiError as exc:
        error = str(exc.response.get("error"))
        if error == "channel_not_found":
            problems.append(
                f"slack: the security channel {channel} was not found: check security_channel "
                "in the policy file (the channel's ID, at the bottom of its About tab); a "
                "private channel is found once the bot is in it (`/invite @breakglass` there)"
            )
        elif error == "missing_scope":
            needed = exc.response.get("needed") or "channels:read, groups:read"
            notes.append(
                f"slack: cannot check that the bot is in the security channel {channel}: the "
                f"app lacks the {needed} scope (add it as manifest.yml does, then reinstall)"
            )
        else:
            notes.append(f"slack: cannot check the security channel {channel} ({error})")
        return problems, notes
    except OSError as exc:
        problems.append(f"slack: cannot reach the Slack API ({type(exc).__name__})")
        return problems, notes
    if not (info.get("channel") or {}).get("is_member"):
        problems.append(
            f"slack: the bot is not in the security channel {channel}: type "
            "`/invite @breakglass` in that channel (no card can be posted until then)"
        )
    return problems, notes


def online_problems(settings: Settings, policy: Policy) -> tuple[list[str], list[str]]:
    """(problems, notes) found by talking to the database, Vault and Slack."""
    from bot.diagnose import database_error, database_url_problem, shown

    problems: list[str] = []
    notes: list[str] = []

    if database_url_problem(settings.database_url) is None:  # else named offline already
        engine = create_db_engine(settings.database_url)
        where = shown(engine.url)
        try:
            todo = migrate.pending(engine)
            if todo:
                notes.append(
                    f"database {where}: {len(todo)} migration(s) pending "
                    "(`breakglass serve` applies them at start)"
                )
            forwarding_notes(engine, policy, notes)
        except SQLAlchemyError as exc:
            problems.append(database_error(exc, engine.url))
        finally:
            engine.dispose()

    for found, said in (vault_problems(settings, policy), slack_problems(settings, policy)):
        problems.extend(found)
        notes.extend(said)
    return problems, notes
