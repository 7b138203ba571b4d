"""The policy file: who may get what, for how long, approved by whom; loaded with precise errors."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from bot.domain.durations import DurationError, parse_duration
from bot.domain.windows import Window, check_cron, check_timezone

SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _dsn(value: Any) -> str:
    """A libpq connection string (keywords or a URL) naming where, never who."""
    import psycopg
    from psycopg import conninfo

    if not isinstance(value, str) or not value.strip():
        raise ValueError('a libpq connection string, such as "host=db.internal dbname=app"')
    try:
        keys = conninfo.conninfo_to_dict(value)
    except psycopg.Error:  # libpq's parser says only that it failed
        raise ValueError(
            "not a libpq connection string (keywords or a postgresql:// URL)"
        ) from None
    given = sorted({"user", "password", "passfile"} & set(keys))
    if given:
        raise ValueError(
            f"holds {', '.join(given)}: the bot logs in with a short-lived monitoring credential "
            "from Vault; give only where the database is (host, port, dbname, sslmode)"
        )
    return value


class ActivitySettings(BaseModel):
    """What a grant's database user ran, read from pg_stat_statements when the grant ends
    (`activity:` of a vault-database resource on PostgreSQL)."""

    model_config = ConfigDict(extra="forbid")

    # A role of the resource's mount whose users may read every user's statistics
    # (GRANT pg_read_all_stats); the bot takes one short-lived user of it per read.
    monitor_role: str = Field(min_length=1, max_length=128, pattern=r"^[^/\s]+$")
    # Where the bot reaches the database, without credentials; absent: the connection Vault
    # itself uses for the monitoring role (read from {mount}/config/{connection}).
    dsn: Annotated[str, BeforeValidator(_dsn)] | None = None


class Resource(BaseModel):
    """One thing that can be asked for."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    provider: str
    options: dict[str, Any] = Field(default_factory=dict)
    max_duration: Duration = timedelta(hours=1)
    approvals: int = Field(default=1, ge=1)
    approvers: list[str] = Field(min_length=1)
    emergency: bool = False
    # Groups (from `approvers:`) whose members may ask for it; absent: anyone in Slack.
    requesters: list[str] | None = None
    # When a review is owed once a grant ends: after every emergency grant (made without
    # approval), or after every grant.
    review: Literal["emergency", "always"] = "emergency"
    # Groups whose members review; absent: the resource's approvers.
    reviewers: list[str] | None = Field(default=None, min_length=1)
    # Approvals needed for a request made outside every maintenance window that applies to
    # the resource; absent: `approvals`.
    outside_window_approvals: int | None = Field(default=None, ge=1)
    # vault-database only: record what the grant's database user ran; absent: nothing is read.
    activity: ActivitySettings | None = None

    def approvals_needed(self, outside_window: bool | None) -> int:
        if outside_window and self.outside_window_approvals:
            return max(self.approvals, self.outside_window_approvals)
        return self.approvals


def _cron(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError('a cron expression is a string, such as "0 2 * * SUN"')
    check_cron(value)
    return value


def _zone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a time zone is a string, such as Europe/Berlin")
    check_timezone(value)
    return value


class MaintenanceWindow(BaseModel):
    """When privileged work is expected: starting at each time `cron` names in `timezone`,
    for `duration`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    cron: Annotated[str, BeforeValidator(_cron)]
    duration: Duration
    timezone: Annotated[str, BeforeValidator(_zone)] = "UTC"
    resources: list[str] | None = None  # absent: every resource

    def window(self) -> Window:
        return Window(
            name=self.name,
            cron=self.cron,
            duration=self.duration,
            timezone=self.timezone,
            resources=None if self.resources is None else frozenset(self.resources),
        )


class DigestSchedule(BaseModel):
    """When the weekly digest is posted to the security channel."""

    model_config = ConfigDict(extra="forbid")

    cron: Annotated[str, BeforeValidator(_cron)] = "0 9 * * MON"
    timezone: Annotated[str, BeforeValidator(_zone)] = "UTC"


class AnchorSchedule(BaseModel):
    """When the audit chain is verified and its head anchored in the security channel."""

    model_config = ConfigDict(extra="forbid")

    cron: Annotated[str, BeforeValidator(_cron)] = "0 0 * * *"
    timezone: Annotated[str, BeforeValidator(_zone)] = "UTC"


def _transit_key(value: Any) -> str:
    from providers.transit import parse_key_path

    if not isinstance(value, str):
        raise ValueError("a transit key path is a string, such as transit/keys/breakglass")
    parse_key_path(value)
    return value


SINK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$", re.ASCII)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", re.ASCII)
PRINTABLE_ASCII = re.compile(r"^[!-~]+$", re.ASCII)  # RFC 5424's PRINTUSASCII, no space
SECRET_MIN = 16  # characters in a webhook's shared secret
# RFC 5424, 6.2.1: facility names as syslog(3) spells them, and their codes.
FACILITIES = {
    **{"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6},
    **{"news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12},
    **{"security": 13, "console": 14, "solaris-cron": 15},
    **{f"local{i}": 16 + i for i in range(8)},
}


def _webhook_url(value: Any) -> str:
    from urllib.parse import urlsplit

    if not isinstance(value, str) or not value.strip():
        raise ValueError("a URL is a string, such as https://siem.example.com/breakglass")
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError("a URL has no spaces")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value[:80]!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise ValueError(
            "put no credentials in the URL: the signature (secret_env) authenticates the bot"
        )
    if port == 0:
        raise ValueError("port 0 is not a port")
    return value


def _matching(pattern: re.Pattern, what: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(f"{str(value)[:80]!r} is not {what}")
        return value

    return BeforeValidator(check)


class WebhookSink(BaseModel):
    """POST each batch of events as JSON, signed with a shared secret from the environment."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, BeforeValidator(_webhook_url)]
    # The name of the environment variable holding the shared secret (never the secret).
    secret_env: Annotated[
        str, _matching(ENV_NAME, "an environment variable's name (such as SIEM_SECRET)")
    ]
    timeout: Duration = timedelta(seconds=10)


class SyslogSink(BaseModel):
    """RFC 5424 messages over TCP (octet counting, RFC 6587) or UDP (one datagram each)."""

    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, _matching(PRINTABLE_ASCII, "a host name or IP address")] = Field(
        max_length=253
    )
    port: int = Field(default=514, ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    app_name: Annotated[
        str, _matching(PRINTABLE_ASCII, "an APP-NAME (printable ASCII, no spaces)")
    ] = Field(default="breakglass", max_length=48)
    facility: Literal[tuple(FACILITIES)] = "auth"  # type: ignore[valid-type]
    timeout: Duration = timedelta(seconds=10)

    @property
    def facility_code(self) -> int:
        return FACILITIES[self.facility]


class ForwardSink(BaseModel):
    """One place every audit event is sent to, in order, each once (see README)."""

    model_config = ConfigDict(extra="forbid")

    # Names the sink's durable cursor: renaming a sink starts a new one.
    name: Annotated[
        str, _matching(SINK_NAME, "a sink name (lower case letters, digits, . _ -; 64 at most)")
    ]
    webhook: WebhookSink | None = None
    syslog: SyslogSink | None = None
    # Where a sink new to the database starts: the first event ever, or the next one.
    start: Literal["beginning", "now"] = "beginning"

    @model_validator(mode="after")
    def _one_kind(self) -> ForwardSink:
        if (self.webhook is None) == (self.syslog is None):
            raise ValueError("give exactly one of webhook: or syslog:")
        return self


def _device(value: Any) -> str:
    if not isinstance(value, str) or not value.strip("/"):
        raise ValueError('the path of a Vault audit device, such as "file"')
    path = value.strip("/")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", path):
        raise ValueError(f"{value!r} is not an audit device path (letters, digits, _ . - and /)")
    return path


class AuditSettings(BaseModel):
    """How the audit trail is kept, protected and sent out (`audit:` in the policy)."""

    model_config = ConfigDict(extra="forbid")

    # The daily round: verify the chain (alert if it broke), anchor its head, prune.
    anchor: AnchorSchedule = Field(default_factory=AnchorSchedule)
    # Free text (justification, deny reasons, review notes; not the ticket id) stored
    # encrypted with this Vault transit key, e.g. transit/keys/breakglass; absent: as typed.
    encrypt: Annotated[str, BeforeValidator(_transit_key)] | None = None
    # Every audit event is sent to each of these as it is written (and the ones before, per
    # the sink's `start`).
    forward: list[ForwardSink] = Field(default_factory=list)
    # The Vault audit device whose HMACs each grant records for its token accessor and lease
    # (sys/audit-hash/<device>), so a SIEM can join our trail with Vault's; absent: none.
    vault_device: Annotated[str, BeforeValidator(_device)] | None = None


def _retention(value: Any) -> timedelta:
    try:
        kept = parse_duration(value, longest=timedelta(days=100 * 366))
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    if kept < timedelta(days=1):
        raise ValueError("keep details at least a day (write it like 400d)")
    return kept


class Retention(BaseModel):
    """How long what can be pruned is kept (`retention:` in the policy)."""

    model_config = ConfigDict(extra="forbid")

    # Free text of finished requests (justification, ticket, reasons, notes, and their audit
    # events' details) is pruned this long after the request finished; absent: kept forever.
    details: Annotated[timedelta, BeforeValidator(_retention)] | None = None


class Policy(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(extra="forbid")

    security_channel: str
    approvers: dict[str, list[str]]
    resources: dict[str, Resource] = Field(min_length=1)
    # No decision within this time: the request times out.
    approval_timeout: Duration = timedelta(minutes=30)
    # Life of the single-use wrapping token handed to the requester.
    wrap_ttl: Duration = timedelta(minutes=10)
    # A review not done this long after it was owed is reminded once and marked overdue.
    review_due: Duration = timedelta(hours=48)
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    # The weekly digest in the security channel; absent: none is posted.
    digest: DigestSchedule | None = None
    audit: AuditSettings = Field(default_factory=AuditSettings)
    retention: Retention = Field(default_factory=Retention)

    @property
    def windows(self) -> list[Window]:
        return [w.window() for w in self.maintenance_windows]

    def reviewer_ids(self, resource: str) -> set[str]:
        """Every Slack user who may review grants of `resource` (its approvers by default)."""
        res = self.resources.get(resource)
        if res is None:
            return set()
        groups = res.reviewers if res.reviewers is not None else res.approvers
        return {user for g in groups for user in self.approvers.get(g, [])}

    def may_request(self, user: str, resource: str) -> bool:
        res = self.resources.get(resource)
        if res is None:
            return False
        if res.requesters is None:
            return True
        return any(user in self.approvers.get(group, []) for group in res.requesters)

    def requestable(self, user: str) -> list[str]:
        """The resources `user` may ask for, by name."""
        return sorted(name for name in self.resources if self.may_request(user, name))

    def approver_ids(self, resource: str) -> set[str]:
        """Every Slack user who may decide on `resource`."""
        res = self.resources.get(resource)
        if res is None:  # gone from the policy since the request: nobody may decide
            return set()
        return {user for g in res.approvers for user in self.approvers.get(g, [])}


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the configuration, with its place."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        if not where and self.file:
            where = f"{self.file}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class PolicyError(Exception):
    """The policy file cannot be used; `problems` says every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict:
    """Map each key path in the YAML document to its 1-based line."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out[sub] = key.start_mark.line + 1
            _line_index(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)
    return out


def _nearest_line(lines: dict, path: tuple) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def parse_policy(text: str, file: str | None = None) -> Policy:
    """Parse and check the policy text; raise PolicyError naming every problem's place."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([Problem("", f"not valid YAML: {reason}", line, file)]) from None
    if not isinstance(data, dict):
        raise PolicyError([Problem("", "the policy file must be a YAML mapping", 1, file)])
    lines = _line_index(node) if node is not None else {}

    def problem(loc: tuple, err: dict) -> Problem:
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        return Problem(_dotted(loc), message, _nearest_line(lines, loc), file)

    # Each resource on its own, so one broken resource does not hide the others' problems;
    # what did validate is still cross-checked, so every problem is reported in one run.
    problems: list[Problem] = []
    raw_resources = data.get("resources")
    good: dict[str, Resource] = {}
    partial: dict[str, Resource] = {}
    if isinstance(raw_resources, dict):
        for name, raw in raw_resources.items():
            try:
                good[str(name)] = Resource.model_validate(raw)
            except ValidationError as exc:
                problems += [problem(("resources", name, *e["loc"]), e) for e in exc.errors()]
                if isinstance(raw, dict):
                    failed = {e["loc"][0] for e in exc.errors() if e["loc"]}
                    kept = {
                        k: v
                        for k, v in raw.items()
                        if k not in failed and k in Resource.model_fields
                    }
                    partial[str(name)] = Resource.model_construct(
                        **{"approvers": [], "provider": "", **kept}
                    )
        data = {**data, "resources": good}
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            if problems and tuple(err["loc"]) == ("resources",):
                continue  # empty only because its resources were broken: said above
            problems.append(problem(tuple(err["loc"]), err))
        policy = None
    checked = policy or _lenient(data)
    if partial:
        checked = checked.model_copy(update={"resources": {**checked.resources, **partial}})
    seen = {p.path for p in problems}
    problems += [
        Problem(_dotted(path), message, _nearest_line(lines, path), file)
        for path, message in [*_cross_checks(checked), *_forward_checks(data)]
        if _dotted(path) not in seen
    ]
    if problems or policy is None:
        raise PolicyError(problems)
    return policy


def _lenient(data: dict) -> Policy:
    """The parts of an invalid file that are well-formed enough to cross-check."""
    approvers = data.get("approvers")
    if not isinstance(approvers, dict):
        approvers = {}
    approvers = {str(k): v for k, v in approvers.items() if isinstance(v, list)}
    channel = data.get("security_channel")
    return Policy.model_construct(
        security_channel=channel if isinstance(channel, str) else "C0UNCHECKED",
        approvers=approvers,
        resources=data.get("resources") if isinstance(data.get("resources"), dict) else {},
    )


def _cross_checks(policy: Policy) -> list[tuple[tuple, str]]:
    """What the schema alone cannot see: references, reachable quorums, providers."""
    from providers import PROVIDERS, options_problems

    found: list[tuple[tuple, str]] = []
    if not SLACK_CHANNEL_ID.match(policy.security_channel):
        found.append(
            (("security_channel",), f"{policy.security_channel!r} is not a Slack channel ID (C…)")
        )
    for group, members in policy.approvers.items():
        for i, user in enumerate(members):
            if not SLACK_USER_ID.match(str(user)):
                found.append((("approvers", group, i), f"{user!r} is not a Slack user ID (U…)"))
    for name, res in policy.resources.items():
        base = ("resources", name)
        for i, group in enumerate(res.approvers):
            if group not in policy.approvers:
                found.append(((*base, "approvers", i), f"no approver group named {group!r}"))
        for i, group in enumerate(res.requesters or []):
            if group not in policy.approvers:
                found.append(((*base, "requesters", i), f"no group named {group!r}"))
        for i, group in enumerate(res.reviewers or []):
            if group not in policy.approvers:
                found.append(((*base, "reviewers", i), f"no group named {group!r}"))
        people = policy.approver_ids(name)
        if people and res.approvals > len(people):
            found.append(
                (
                    (*base, "approvals"),
                    f"needs {res.approvals} distinct approvers but its groups have {len(people)}",
                )
            )
        extra = res.outside_window_approvals
        if extra and people and extra > len(people):
            found.append(
                (
                    (*base, "outside_window_approvals"),
                    f"needs {extra} distinct approvers but its groups have {len(people)}",
                )
            )
        if extra and not any(
            isinstance(w, MaintenanceWindow) and (w.resources is None or name in w.resources)
            for w in policy.maintenance_windows
        ):
            found.append(
                (
                    (*base, "outside_window_approvals"),
                    "no maintenance window applies to this resource, so this never takes effect",
                )
            )
        if not res.provider:
            pass  # missing: already reported by the schema check
        elif res.provider not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            found.append(((*base, "provider"), f"unknown provider {res.provider!r} ({known})"))
        else:
            for key, message in options_problems(res.provider, res.options):
                found.append(((*base, "options", *key), message))
        if res.activity is not None and res.provider and res.provider != "vault-database":
            found.append(
                (
                    (*base, "activity"),
                    "only vault-database resources (on PostgreSQL) can record what was run",
                )
            )
    names: set[str] = set()
    for i, window in enumerate(policy.maintenance_windows):
        if not isinstance(window, MaintenanceWindow):
            continue  # invalid: already reported by the schema check
        if window.name in names:
            found.append((("maintenance_windows", i, "name"), f"{window.name!r} is used twice"))
        names.add(window.name)
        if window.duration <= timedelta(0):
            found.append((("maintenance_windows", i, "duration"), "must be longer than zero"))
        for j, resource in enumerate(window.resources or []):
            if resource not in policy.resources:
                found.append(
                    (("maintenance_windows", i, "resources", j), f"no resource named {resource!r}")
                )
    return found


def _forward_checks(data: dict) -> list[tuple[tuple, str]]:
    """Sink names used once; each webhook's secret present in the environment (read where
    the bot runs: `check-config` there tells). On the raw file, so that these are reported
    in the same run as any other problem of the same entries."""
    import os

    audit = data.get("audit")
    forward = audit.get("forward") if isinstance(audit, dict) else None
    if not isinstance(forward, list):
        return []
    found: list[tuple[tuple, str]] = []
    names: set[str] = set()
    for i, sink in enumerate(forward):
        if not isinstance(sink, dict):
            continue
        name = sink.get("name")
        if isinstance(name, str) and name in names:
            found.append((("audit", "forward", i, "name"), f"{name!r} is used twice"))
        names.add(name)  # type: ignore[arg-type]
        webhook = sink.get("webhook")
        var = webhook.get("secret_env") if isinstance(webhook, dict) else None
        if not isinstance(var, str) or not ENV_NAME.match(var):
            continue  # missing or malformed: reported by the schema check
        secret = os.environ.get(var)
        where = ("audit", "forward", i, "webhook", "secret_env")
        if secret is None:
            found.append((where, f"the environment variable {var} is not set (the shared secret)"))
        elif len(secret.strip()) < SECRET_MIN:
            found.append(
                (
                    where,
                    f"the secret in {var} is shorter than {SECRET_MIN} characters; use a random "
                    "one (openssl rand -hex 32)",
                )
            )
    return found


def load_policy(path: str | Path) -> Policy:
    """Read the policy file at `path`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | IsADirectoryError):
            message = (
                f"cannot read the policy file: {exc.strerror}: point BREAKGLASS_CONFIG (or "
                "--config) at your policy file (default breakglass.yml in the working "
                "directory; breakglass.example.yml is a start)"
            )
            raise PolicyError([Problem("", message, None, str(path.absolute()))]) from None
        raise PolicyError(
            [Problem("", f"cannot read the policy file: {exc.strerror}", None, str(path))]
        ) from None
    return parse_policy(text, str(path))


class PolicyHolder:
    """The policy in force, read by everything that needs it (the use cases, the stats, the
    notifier, the scheduler) and replaced whole on a reload. Readers take `current` once per
    piece of work; a reload swaps one reference under a lock, so a reader sees the old policy
    or the new one, never a mix."""

    def __init__(self, policy: Policy):
        self._policy = policy
        self._lock = threading.Lock()

    @property
    def current(self) -> Policy:
        return self._policy

    def swap(self, policy: Policy) -> Policy:
        """Put `policy` in force; returns the one it replaced."""
        with self._lock:
            old, self._policy = self._policy, policy
        return old
