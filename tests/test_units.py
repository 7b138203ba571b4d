"""Tier 1: pure functions (durations, policy, state machine, redaction, hash chain, Block Kit)."""

from __future__ import annotations

import calendar
import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.models.views import View
from sqlalchemy import text

from bot import migrate
from bot.domain.durations import DurationError, format_duration, parse_duration, vault_ttl
from bot.domain.forms import RequestForm, ValidRequest, check_form
from bot.domain.workflow import (
    TERMINAL,
    Event,
    Refused,
    State,
    check_decider,
    check_revoker,
    quorum_reached,
    transition,
)
from bot.policy import Policy, PolicyError, Problem, parse_policy
from bot.sandbox.slack_fake import request_values
from bot.slack import format as fmt
from bot.slack.approval import blocks as approval_blocks
from bot.slack.credential import blocks as credential_blocks
from bot.slack.ids import ActionId, BlockId
from bot.slack.request import blocks as request_blocks
from bot.store import AccessRequest, Grant, Store, audit, create_db_engine
from bot.usecases.ports import Card

# Verbatim from DESIGN.md: this minimal form must always load.
MINIMAL_POLICY = """\
security_channel: C0SECURITY          # audit threads and alerts
approvers:                            # named groups of Slack user IDs
  sre-leads: [U0AAA, U0BBB]
  security: [U0CCC]
resources:
  prod-db:
    description: Production PostgreSQL, read/write
    provider: vault-database          # a module in providers/
    options: {mount: database, role: breakglass-rw}
    max_duration: 1h
    approvals: 1                      # distinct approvers needed
    approvers: [sre-leads, security]
    emergency: true                   # may self-approve; review afterwards
"""

# Two resources, only one of which allows emergency access.
TWO_RESOURCES = """\
security_channel: C0SECURITY
approvers:
  sre-leads: [U0AAA, U0BBB]
resources:
  prod-db:
    provider: vault-database
    options: {role: breakglass-rw}
    max_duration: 1h
    approvers: [sre-leads]
    emergency: true
  billing-db:
    description: Billing replica, read-only
    provider: vault-database
    options: {role: billing-ro}
    max_duration: 2h
    approvals: 2
    approvers: [sre-leads]
"""

NO_EMERGENCY = """\
security_channel: C0SECURITY
approvers:
  sre-leads: [U0AAA, U0BBB]
resources:
  billing-db:
    provider: vault-database
    options: {role: billing-ro}
    approvers: [sre-leads]
"""

REQUESTER = "U0REQ"
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
JUSTIFICATION = "Checkout is down: orders table locked, need to kill the blocking session."


def edit(original: str, old: str, new: str) -> str:
    """`original` with `old` replaced once; fails loudly if `old` is not there."""
    assert original.count(old) == 1, f"{old!r} not found exactly once"
    return original.replace(old, new)


def line_of(source: str, needle: str) -> int:
    """The 1-based line of the only line containing `needle`."""
    hits = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def problems_of(source: str, file: str | None = "breakglass.yml") -> list[Problem]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(source, file)
    assert caught.value.problems
    return caught.value.problems


def only_problem(source: str) -> Problem:
    problems = problems_of(source)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(MINIMAL_POLICY)


# ---- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1H", timedelta(hours=1)),
        ("15", timedelta(minutes=15)),
        (" 15 ", timedelta(minutes=15)),
        (15, timedelta(minutes=15)),
    ],
)
def test_parse_duration_accepts(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_passes_a_timedelta_through() -> None:
    value = timedelta(minutes=7, seconds=3)
    assert parse_duration(value) is value


@pytest.mark.parametrize("text", ["", "   ", "soon", "0m", "0", "-5m", "1x", "1.5h", "m", "1m-"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_parse_duration_error_says_what_is_accepted() -> None:
    with pytest.raises(DurationError, match=r"'soon' is not a duration.*30m"):
        parse_duration("soon")
    with pytest.raises(DurationError, match="longer than zero"):
        parse_duration("0m")


def test_parse_duration_refuses_bool() -> None:
    with pytest.raises(DurationError):
        parse_duration(True)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["9999999999d", "99999999999999999999"])
def test_parse_duration_huge_number_is_a_duration_error(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(seconds=45), "45 s"),
        (timedelta(minutes=30), "30 min"),
        (timedelta(hours=1), "1 h"),
        (timedelta(hours=1, minutes=15), "1 h 15 min"),
        (timedelta(days=2, hours=3), "2 d 3 h"),
        (timedelta(days=1, minutes=5), "1 d 5 min"),
    ],
)
def test_format_duration(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


def test_format_then_parse_round_trip() -> None:
    for written in ["30m", "1h15m", "2d3h", "45s"]:
        shown = format_duration(parse_duration(written))
        assert parse_duration(shown.replace(" min", "m").replace(" ", "")) == parse_duration(
            written
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(minutes=30), "1800s"),
        (timedelta(hours=1, seconds=1), "3601s"),
        (timedelta(days=1), "86400s"),
    ],
)
def test_vault_ttl_is_whole_seconds(value: timedelta, expected: str) -> None:
    assert vault_ttl(value) == expected


# ---- policy --------------------------------------------------------------------------


def test_minimal_policy_from_design_loads(policy: Policy) -> None:
    assert policy.security_channel == "C0SECURITY"
    assert policy.approvers == {"sre-leads": ["U0AAA", "U0BBB"], "security": ["U0CCC"]}
    res = policy.resources["prod-db"]
    assert res.description == "Production PostgreSQL, read/write"
    assert res.provider == "vault-database"
    assert res.options == {"mount": "database", "role": "breakglass-rw"}
    assert res.max_duration == timedelta(hours=1)
    assert res.approvals == 1
    assert res.approvers == ["sre-leads", "security"]
    assert res.emergency is True


def test_approver_ids_is_every_member_of_the_groups(policy: Policy) -> None:
    assert policy.approver_ids("prod-db") == {"U0AAA", "U0BBB", "U0CCC"}
    two = parse_policy(TWO_RESOURCES)
    assert two.approver_ids("billing-db") == {"U0AAA", "U0BBB"}


def test_problem_text_is_file_line_path_message() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: soon")
    problem = only_problem(source)
    line = line_of(source, "max_duration: soon")
    assert problem.path == "resources.prod-db.max_duration"
    assert problem.line == line
    assert str(problem).startswith(f"breakglass.yml:{line}: resources.prod-db.max_duration: ")
    assert "'soon' is not a duration" in str(problem)


def test_problem_text_without_a_file_name() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: soon")
    [problem] = problems_of(source, file=None)
    assert str(problem).startswith("resources.prod-db.max_duration: ")


def test_policy_error_message_lists_every_problem() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: soon")
    source = edit(source, "description:", "descripton:")
    with pytest.raises(PolicyError) as caught:
        parse_policy(source, "p.yml")
    message = str(caught.value)
    assert "resources.prod-db.max_duration" in message
    assert "resources.prod-db.descripton" in message


@pytest.mark.parametrize(
    ("old", "new", "path", "needle", "message"),
    [
        (
            "max_duration: 1h",
            "max_duration: 0m",
            "resources.prod-db.max_duration",
            "max_duration: 0m",
            "longer than zero",
        ),
        (
            "approvers: [sre-leads, security]",
            "approvers: [sre-leads, secuirty]",
            "resources.prod-db.approvers.1",
            "secuirty",
            "no approver group named 'secuirty'",
        ),
        (
            "approvals: 1 ",
            "approvals: 4 ",
            "resources.prod-db.approvals",
            "approvals: 4",
            "needs 4 distinct approvers but its groups have 3",
        ),
        (
            "approvals: 1 ",
            "approvals: 0 ",
            "resources.prod-db.approvals",
            "approvals: 0",
            "greater than or equal to 1",
        ),
        (
            "provider: vault-database ",
            "provider: vault-databse ",
            "resources.prod-db.provider",
            "vault-databse",
            "unknown provider 'vault-databse'",
        ),
        (
            "role: breakglass-rw",
            "rol: breakglass-rw",
            "resources.prod-db.options.rol",
            "options:",
            "unknown option",
        ),
        (
            "description: Production",
            "descripton: Production",
            "resources.prod-db.descripton",
            "descripton",
            "unknown key",
        ),
        (
            "  security: [U0CCC]",
            "  security: [U0CCC, ccc]",
            "approvers.security.1",
            "ccc]",
            "'ccc' is not a Slack user ID",
        ),
        (
            "security_channel: C0SECURITY",
            "security_channel: general",
            "security_channel",
            "security_channel",
            "'general' is not a Slack channel ID",
        ),
    ],
)
def test_policy_problem_names_path_and_line(
    old: str, new: str, path: str, needle: str, message: str
) -> None:
    source = edit(MINIMAL_POLICY, old, new)
    problems = problems_of(source)
    matching = [p for p in problems if p.path == path]
    assert matching, problems
    assert message in matching[0].message
    assert matching[0].line == line_of(source, needle)


def test_missing_provider_option_is_named() -> None:
    source = edit(MINIMAL_POLICY, "{mount: database, role: breakglass-rw}", "{mount: database}")
    problem = only_problem(source)
    assert problem.path == "resources.prod-db.options.role"
    assert "required" in problem.message.lower()
    assert problem.line == line_of(source, "options:")


def test_missing_required_key_points_at_its_resource() -> None:
    source = edit(
        MINIMAL_POLICY, "    provider: vault-database          # a module in providers/\n", ""
    )
    problem = only_problem(source)
    assert problem.path == "resources.prod-db.provider"
    assert problem.line == line_of(source, "prod-db:")


def test_misspelled_top_level_key_is_refused() -> None:
    source = MINIMAL_POLICY + "aproval_timeout: 30m\n"
    problem = only_problem(source)
    assert problem.path == "aproval_timeout"
    assert problem.message == "unknown key (check the spelling)"
    assert problem.line == line_of(source, "aproval_timeout")


def test_invalid_yaml_reports_its_line() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: 1h: 2h")
    problem = only_problem(source)
    assert problem.message.startswith("not valid YAML")
    assert problem.line == line_of(source, "max_duration: 1h: 2h")
    assert str(problem).startswith(f"breakglass.yml:{problem.line}: not valid YAML")


@pytest.mark.parametrize("source", ["", "- a\n- b\n", "just text\n"])
def test_policy_must_be_a_mapping(source: str) -> None:
    problem = only_problem(source)
    assert "must be a YAML mapping" in problem.message


def test_several_schema_problems_reported_at_once() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: soon")
    source = edit(source, "approvals: 1 ", "approvals: zero ")
    source = edit(source, "emergency: true", "emergncy: true")
    found = {p.path: p.line for p in problems_of(source)}
    assert found == {
        "resources.prod-db.max_duration": line_of(source, "max_duration"),
        "resources.prod-db.approvals": line_of(source, "approvals: zero"),
        "resources.prod-db.emergncy": line_of(source, "emergncy"),
    }


def test_several_reference_problems_reported_at_once() -> None:
    source = edit(MINIMAL_POLICY, "C0SECURITY", "general")
    source = edit(source, "U0BBB", "bob")
    source = edit(source, "provider: vault-database ", "provider: nope ")
    found = {p.path: p.line for p in problems_of(source)}
    assert found == {
        "security_channel": line_of(source, "security_channel"),
        "approvers.sre-leads.1": line_of(source, "bob"),
        "resources.prod-db.provider": line_of(source, "provider: nope"),
    }


def test_schema_and_reference_problems_reported_together() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: soon")
    source = edit(source, "provider: vault-database ", "provider: nope ")
    paths = {p.path for p in problems_of(source)}
    assert {"resources.prod-db.max_duration", "resources.prod-db.provider"} <= paths


def test_huge_max_duration_is_a_policy_problem() -> None:
    source = edit(MINIMAL_POLICY, "max_duration: 1h", "max_duration: 9999999999d")
    problem = only_problem(source)
    assert problem.path == "resources.prod-db.max_duration"


# ---- the state machine ---------------------------------------------------------------

ALLOWED = {
    (Event.APPROVED, State.PENDING): State.APPROVED,
    (Event.EMERGENCY, State.PENDING): State.APPROVED,
    (Event.DENIED, State.PENDING): State.DENIED,
    (Event.TIMED_OUT, State.PENDING): State.TIMED_OUT,
    (Event.CANCELLED, State.PENDING): State.CANCELLED,
    (Event.ISSUED, State.APPROVED): State.ACTIVE,
    (Event.ISSUE_FAILED, State.APPROVED): State.FAILED,
    (Event.ENDING, State.ACTIVE): State.ENDING,
    (Event.EXPIRED, State.ENDING): State.EXPIRED,
    (Event.REVOKED, State.ENDING): State.REVOKED,
}
MOVING_EVENTS = sorted({event for event, _ in ALLOWED})
STILL_EVENTS = [
    Event.REQUESTED,
    Event.APPROVAL_RECORDED,
    Event.REVEALED,
    Event.REVEAL_TAMPER,
    Event.REVOKE_FAILED,
    Event.REVOCATION_STUCK,
    Event.DELIVERED,
    Event.DELIVERY_FAILED,
    Event.REISSUED,
]


@pytest.mark.parametrize(("event", "source"), sorted(ALLOWED))
def test_allowed_transition(event: Event, source: State) -> None:
    assert transition(event, source) == ALLOWED[event, source]


@pytest.mark.parametrize(
    ("event", "source"),
    [(e, s) for e in MOVING_EVENTS for s in State if (e, s) not in ALLOWED],
)
def test_every_other_transition_is_refused(event: Event, source: State) -> None:
    with pytest.raises(Refused, match="this request is already"):
        transition(event, source)


def test_approving_a_denied_request_says_it_is_denied() -> None:
    with pytest.raises(Refused) as caught:
        transition(Event.APPROVED, State.DENIED)
    assert str(caught.value) == "this request is already denied"


@pytest.mark.parametrize("event", STILL_EVENTS)
def test_events_that_do_not_move_the_state_are_not_transitions(event: Event) -> None:
    with pytest.raises(ValueError, match="not a state change"):
        transition(event, State.PENDING)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(state: State) -> None:
    for event in MOVING_EVENTS:
        with pytest.raises(Refused):
            transition(event, state)


APPROVERS = {"U0AAA", "U0BBB", REQUESTER}


def decide(**overrides: object) -> None:
    args: dict[str, object] = {
        "actor": "U0AAA",
        "requester": REQUESTER,
        "state": State.PENDING,
        "approvers": APPROVERS,
        "previous_deciders": [],
    }
    args.update(overrides)
    check_decider(**args)  # type: ignore[arg-type]


def test_an_approver_may_decide_a_pending_request() -> None:
    decide()
    decide(actor="U0BBB", previous_deciders=["U0AAA"])


def test_requester_may_not_decide_even_as_an_approver() -> None:
    assert REQUESTER in APPROVERS
    with pytest.raises(Refused, match="your own request"):
        decide(actor=REQUESTER)


def test_non_approver_may_not_decide() -> None:
    with pytest.raises(Refused, match="not an approver"):
        decide(actor="U0ZZZ")


@pytest.mark.parametrize("state", [s for s in State if s != State.PENDING])
def test_no_decision_on_a_request_that_is_not_pending(state: State) -> None:
    with pytest.raises(Refused, match="already"):
        decide(state=state)


def test_no_decision_on_a_denied_request_names_the_state() -> None:
    with pytest.raises(Refused, match="already denied"):
        decide(state=State.DENIED)


def test_an_approver_decides_only_once() -> None:
    with pytest.raises(Refused, match="already approved this request"):
        decide(previous_deciders=iter(["U0BBB", "U0AAA"]))


@pytest.mark.parametrize(
    ("approvals", "needed", "reached"),
    [
        ([], 1, False),
        (["U0AAA"], 1, True),
        (["U0AAA"], 2, False),
        (["U0AAA", "U0AAA"], 2, False),
        (["U0AAA", "U0BBB"], 2, True),
        ([REQUESTER], 1, False),
        ([REQUESTER, "U0AAA"], 2, False),
        ([REQUESTER, "U0AAA", "U0BBB"], 2, True),
        (["U0AAA", "U0BBB", "U0CCC"], 2, True),
    ],
)
def test_quorum_counts_distinct_approvers_never_the_requester(
    approvals: list[str], needed: int, reached: bool
) -> None:
    assert quorum_reached(approvals, REQUESTER, needed) is reached


@pytest.mark.parametrize("actor", [REQUESTER, "U0AAA"])
def test_requester_or_approver_may_revoke_an_active_grant(actor: str) -> None:
    check_revoker(actor=actor, requester=REQUESTER, approvers={"U0AAA"}, state=State.ACTIVE)


def test_outsider_may_not_revoke() -> None:
    with pytest.raises(Refused, match="only the requester or an approver"):
        check_revoker(actor="U0ZZZ", requester=REQUESTER, approvers={"U0AAA"}, state=State.ACTIVE)


def test_revoking_twice_says_it_is_being_revoked() -> None:
    with pytest.raises(Refused, match="already being revoked"):
        check_revoker(actor=REQUESTER, requester=REQUESTER, approvers=set(), state=State.ENDING)


@pytest.mark.parametrize("state", [s for s in State if s not in (State.ACTIVE, State.ENDING)])
def test_only_an_active_grant_can_be_revoked(state: State) -> None:
    with pytest.raises(Refused, match="nothing to revoke"):
        check_revoker(actor=REQUESTER, requester=REQUESTER, approvers={"U0AAA"}, state=state)


# ---- redaction and the hash chain ------------------------------------------------------


def test_redact_hides_secrets_at_any_depth() -> None:
    details = {
        "password": "hunter2",
        "client_token": "hvs.client",
        "secret_id": "s-1",
        "wrapping_token": "hvs.wrap",
        "token_accessor": "acc-1",
        "wrap_expires_at": "2024-05-06T07:08:09+00:00",
        "username": "v-breakglass-abc",
        "nested": {
            "auth": {"Client_Token": "hvs.deep", "accessor": "acc-2"},
            "list": [{"private_key": "-----BEGIN"}, {"lease_id": "database/creds/x/1"}],
            "tuple": ({"db_password": "p"}, "plain"),
        },
    }
    assert audit.redact(details) == {
        "password": "[redacted]",
        "client_token": "[redacted]",
        "secret_id": "[redacted]",
        "wrapping_token": "[redacted]",
        "token_accessor": "acc-1",
        "wrap_expires_at": "2024-05-06T07:08:09+00:00",
        "username": "v-breakglass-abc",
        "nested": {
            "auth": {"Client_Token": "[redacted]", "accessor": "acc-2"},
            "list": [{"private_key": "[redacted]"}, {"lease_id": "database/creds/x/1"}],
            "tuple": [{"db_password": "[redacted]"}, "plain"],
        },
    }


def test_redact_does_not_change_its_input() -> None:
    details = {"password": "hunter2", "inner": {"secret": "s"}}
    audit.redact(details)
    assert details == {"password": "hunter2", "inner": {"secret": "s"}}


def test_redact_a_whole_sensitive_subtree() -> None:
    assert audit.redact({"credentials": {"username": "u", "password": "p"}}) == {
        "credentials": "[redacted]"
    }


HASH_FIELDS = {
    "seq": 3,
    "at": NOW,
    "actor": "U0AAA",
    "action": "approved",
    "request_id": 7,
    "details_hash": "c" * 64,
    "prev_hash": "a" * 64,
}


def test_event_hash_is_a_stable_sha256() -> None:
    first = audit.event_hash(**HASH_FIELDS)  # type: ignore[arg-type]
    assert first == audit.event_hash(**dict(HASH_FIELDS))  # type: ignore[arg-type]
    assert len(first) == 64
    int(first, 16)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("seq", 4),
        ("at", NOW + timedelta(microseconds=1)),
        ("actor", "U0BBB"),
        ("action", "denied"),
        ("request_id", 8),
        ("request_id", None),
        ("details_hash", "d" * 64),
        ("prev_hash", "b" * 64),
    ],
)
def test_event_hash_changes_with_every_field(field: str, other: object) -> None:
    changed = {**HASH_FIELDS, field: other}
    assert audit.event_hash(**changed) != audit.event_hash(**HASH_FIELDS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A migrated, empty SQLite database, built once and copied per test."""
    path = tmp_path_factory.mktemp("template") / "a.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path.read_bytes()


@pytest.fixture
def store(migrated_db: bytes, tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "a.db"
    path.write_bytes(migrated_db)
    engine = create_db_engine(f"sqlite:///{path}")
    yield Store(engine)
    engine.dispose()


def append_events(store: Store, count: int) -> None:
    with store.transaction() as s:
        for i in range(count):
            audit.append(
                s,
                at=NOW + timedelta(seconds=i),
                actor=f"U0A{i:02d}",
                action=Event.APPROVAL_RECORDED,
                request_id=1,
                details={"n": i, "wrapping_token": "hvs.secret"},
            )


def verify(store: Store) -> audit.Verification:
    with store.read() as s:
        return audit.verify(s)


def raw(store: Store, sql: str, **params: object) -> None:
    """Change the file behind the bot's back, as its owner can: the append-only triggers
    dropped first (the chain's hashes, not the triggers, are what catches this)."""
    with store.engine.begin() as conn:
        for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")):
            conn.execute(text(f'DROP TRIGGER "{name}"'))
        conn.execute(text(sql), params)


def test_empty_chain_is_intact(store: Store) -> None:
    result = verify(store)
    assert result.ok
    assert result.checked == 0


def test_appended_chain_verifies_and_is_redacted(store: Store) -> None:
    append_events(store, 3)
    append_events(store, 1)
    result = verify(store)
    assert result.ok, str(result)
    assert result.checked == 4
    assert str(result) == "audit chain intact: 4 events"
    with store.read() as s:
        events = list(audit.export(s))
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(events))
    assert events[0]["details"] == {"n": 0, "wrapping_token": "[redacted]"}
    assert "hvs.secret" not in json.dumps(events)


def test_changed_details_break_the_chain_at_that_event(store: Store) -> None:
    append_events(store, 4)
    raw(store, "UPDATE audit_event SET details = :d WHERE seq = 2", d='{"n":99}')
    result = verify(store)
    assert not result.ok
    assert result.broken_seq == 2
    assert "audit chain broken at event 2" in str(result)


def test_changed_actor_breaks_the_chain(store: Store) -> None:
    append_events(store, 3)
    raw(store, "UPDATE audit_event SET actor = 'U0EVE' WHERE seq = 3")
    assert verify(store).broken_seq == 3


def test_deleting_the_last_event_is_detected(store: Store) -> None:
    append_events(store, 3)
    raw(store, "DELETE FROM audit_event WHERE seq = 3")
    result = verify(store)
    assert not result.ok
    assert result.broken_seq == 3


def test_deleting_a_middle_event_is_detected(store: Store) -> None:
    append_events(store, 4)
    raw(store, "DELETE FROM audit_event WHERE seq = 2")
    result = verify(store)
    assert not result.ok
    assert result.broken_seq == 2
    assert result.checked == 1


def test_rewriting_an_event_with_a_fresh_hash_breaks_the_next_link(store: Store) -> None:
    append_events(store, 3)
    with store.read() as s:
        ev = next(e for e in audit.export(s) if e["seq"] == 2)
    forged = audit.event_hash(
        seq=2,
        at=datetime.fromisoformat(ev["at"]),
        actor="U0EVE",
        action=ev["action"],
        request_id=ev["request_id"],
        details_hash=ev["details_hash"],
        prev_hash=ev["prev_hash"],
    )
    raw(store, "UPDATE audit_event SET actor = 'U0EVE', hash = :h WHERE seq = 2", h=forged)
    result = verify(store)
    assert not result.ok
    assert result.broken_seq == 3


def test_concurrent_appends_make_one_gap_free_chain(store: Store) -> None:
    threads, per_thread = 8, 3
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with store.transaction() as s:
                    audit.append(
                        s,
                        at=NOW,
                        actor=f"U0T{n}",
                        action=Event.REVEALED,
                        request_id=n,
                        details={"i": i},
                    )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    result = verify(store)
    assert result.ok, str(result)
    assert result.checked == threads * per_thread
    with store.read() as s:
        events = list(audit.export(s))
    assert [e["seq"] for e in events] == list(range(1, threads * per_thread + 1))


def test_non_utc_timestamp_still_verifies(store: Store) -> None:
    with store.transaction() as s:
        audit.append(
            s,
            at=NOW.astimezone(timezone(timedelta(hours=2))),
            actor="U0AAA",
            action=Event.REQUESTED,
            request_id=1,
        )
    assert verify(store).ok


# ---- Block Kit -------------------------------------------------------------------------


def make_card(
    policy: Policy,
    *,
    justification: str = JUSTIFICATION,
    ticket: str | None = "INC-4711",
    state: State = State.PENDING,
    emergency: bool = False,
    grant: Grant | None = None,
) -> Card:
    req = AccessRequest(
        id=7,
        requester=REQUESTER,
        resource="prod-db",
        duration_seconds=1800,
        justification=justification,
        ticket=ticket,
        emergency=emergency,
        state=state.value,
        created_at=NOW,
        updated_at=NOW,
    )
    return Card(
        request=req,
        resource=policy.resources["prod-db"],
        approvers=sorted(policy.approver_ids("prod-db")),
        grant=grant,
    )


def make_grant() -> Grant:
    return Grant(
        request_id=7,
        provider="vault-database",
        identity="v-breakglass-prod-abc123",
        token_accessor="acc-123",
        wrap_accessor="wacc-456",
        wrap_expires_at=NOW + timedelta(minutes=10),
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
    )


def all_texts(value: object) -> list[str]:
    """Every `text` string anywhere in a Block Kit structure."""
    if isinstance(value, dict):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        return found + [t for v in value.values() for t in all_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in all_texts(v)]
    return []


def test_escape_defuses_mentions_and_links() -> None:
    assert fmt.escape("<!channel> & <@U0AAA>") == "&lt;!channel&gt; &amp; &lt;@U0AAA&gt;"
    assert fmt.escape("&lt;") == "&amp;lt;"
    assert fmt.escape(None) == ""
    assert fmt.escape("plain text") == "plain text"


def test_slack_date_token() -> None:
    unix = calendar.timegm((2024, 5, 6, 7, 8, 9))
    assert fmt.slack_date(NOW) == (
        f"<!date^{unix}^{{date_short_pretty}} {{time}}|2024-05-06 07:08 UTC>"
    )


def test_slack_date_fallback_is_utc_for_any_zone() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert fmt.slack_date(local).endswith("|2024-05-06 07:08 UTC>")


def test_request_modal_is_valid_and_lists_resources() -> None:
    two = parse_policy(TWO_RESOURCES)
    view = request_blocks.request_modal(two).to_dict()
    assert view["type"] == "modal"
    assert view["callback_id"] == "breakglass.request.submit"
    by_id = {b["block_id"]: b for b in view["blocks"]}
    options = by_id["breakglass.request.resource"]["element"]["options"]
    assert {o["value"] for o in options} == {"prod-db", "billing-db"}
    billing = next(o for o in options if o["value"] == "billing-db")
    assert billing["description"]["text"] == "Billing replica, read-only"
    assert "prod-db: 1 h" in by_id["breakglass.request.duration"]["hint"]["text"]
    assert "billing-db: 2 h" in by_id["breakglass.request.duration"]["hint"]["text"]
    emergency = by_id["breakglass.request.emergency"]
    assert emergency["hint"]["text"] == "Only for: prod-db"


def test_request_modal_for_the_minimal_policy(policy: Policy) -> None:
    view = request_blocks.request_modal(policy).to_dict()
    ids = [b["block_id"] for b in view["blocks"]]
    assert "breakglass.request.emergency" in ids
    View(**view).to_dict()  # survives a round trip through slack_sdk's checks


def test_request_modal_has_no_emergency_box_when_nothing_allows_it() -> None:
    view = request_blocks.request_modal(parse_policy(NO_EMERGENCY)).to_dict()
    ids = [b["block_id"] for b in view["blocks"]]
    assert "breakglass.request.emergency" not in ids
    assert "breakglass.request.resource" in ids


def test_read_request_form_round_trip() -> None:
    values = json.loads(
        json.dumps(request_values("prod-db", "45m", JUSTIFICATION, "INC-1", emergency=True))
    )
    assert request_blocks.read_request_form({"state": {"values": values}}) == {
        "resource": "prod-db",
        "duration": "45m",
        "justification": JUSTIFICATION,
        "ticket": "INC-1",
        "emergency": True,
    }


def test_read_request_form_with_nothing_chosen() -> None:
    values = json.loads(json.dumps(request_values(None, None, None)))
    assert request_blocks.read_request_form({"state": {"values": values}}) == {
        "resource": None,
        "duration": None,
        "justification": None,
        "ticket": None,
        "emergency": False,
    }
    assert request_blocks.read_request_form({})["emergency"] is False


@pytest.mark.parametrize("addr", [None, "https://vault.example:8200"])
def test_wrapped_token_is_found_in_the_credential_message(policy: Policy, addr: str | None) -> None:
    card = make_card(policy, state=State.ACTIVE, grant=make_grant())
    token = "hvs.CAESIJ3kwrapped-token_01"
    text_, message_blocks = credential_blocks.credential_message(card, token, addr)
    assert credential_blocks.wrapped_token_from({"text": text_, "blocks": message_blocks}) == token
    buttons = [e for b in message_blocks if b["type"] == "actions" for e in b["elements"]]
    assert {b["action_id"] for b in buttons} == {ActionId.REVEAL, ActionId.REVOKE}
    assert all(b["value"] == "7" for b in buttons)
    revoke = next(b for b in buttons if b["action_id"] == ActionId.REVOKE)
    assert "confirm" in revoke


def test_no_wrapped_token_in_other_messages(policy: Policy) -> None:
    _, message_blocks = approval_blocks.approval_message(make_card(policy))
    assert credential_blocks.wrapped_token_from({"blocks": message_blocks}) is None
    assert credential_blocks.wrapped_token_from({}) is None


def test_approval_message_for_a_pending_request(policy: Policy) -> None:
    card = make_card(policy, justification="DB down <!channel> & <@U0BBB> please")
    text_, message_blocks = approval_blocks.approval_message(card)
    assert text_ == (
        "Break-glass request #7: prod-db: waiting for approval (<@U0AAA> <@U0BBB> <@U0CCC>)"
    )
    joined = "\n".join(all_texts(message_blocks))
    assert "<!channel>" not in joined
    assert "&lt;!channel&gt; &amp; &lt;@U0BBB&gt;" in joined
    assert f"<@{REQUESTER}>" in joined
    assert "30 min" in joined
    assert "0 of 1 approvals" in joined
    decision = next(b for b in message_blocks if b.get("block_id") == BlockId.DECISION)
    approve = next(e for e in decision["elements"] if e["action_id"] == ActionId.APPROVE)
    assert approve["value"] == "7"
    assert "confirm" in approve


def test_approval_message_has_no_buttons_once_decided(policy: Policy) -> None:
    _, message_blocks = approval_blocks.approval_message(make_card(policy, state=State.DENIED))
    assert not [b for b in message_blocks if b["type"] == "actions"]


def test_approval_message_with_a_2000_char_justification(policy: Policy) -> None:
    card = make_card(policy, justification="x" * 2000, ticket="T" * 200)
    _, message_blocks = approval_blocks.approval_message(card)
    sections = [b for b in message_blocks if b["type"] == "section"]
    assert sections
    assert all(len(b["text"]["text"]) <= 3000 for b in sections)
    assert "x" * 2000 in sections[0]["text"]["text"]


@pytest.mark.parametrize("justification", ["&" * 2000, "a <b> c " * 250])
def test_approval_message_with_a_2000_char_escaped_justification(
    policy: Policy, justification: str
) -> None:
    assert len(justification) == 2000
    _, message_blocks = approval_blocks.approval_message(
        make_card(policy, justification=justification)
    )
    sections = [b for b in message_blocks if b["type"] == "section"]
    assert all(len(b["text"]["text"]) <= 3000 for b in sections)


# ---- the request form ----------------------------------------------------------------


def test_check_form_accepts_a_valid_request(policy: Policy) -> None:
    form = RequestForm("prod-db", "45m", f"  {JUSTIFICATION}  ", "  ", emergency=True)
    valid, errors = check_form(policy, form)
    assert errors == {}
    assert valid == ValidRequest("prod-db", timedelta(minutes=45), JUSTIFICATION, None, True)


def test_check_form_keeps_a_ticket(policy: Policy) -> None:
    valid, _ = check_form(policy, RequestForm("prod-db", "1h", JUSTIFICATION, " INC-1 "))
    assert valid is not None
    assert valid.ticket == "INC-1"
    assert valid.duration == timedelta(hours=1)


def test_check_form_names_every_missing_field(policy: Policy) -> None:
    valid, errors = check_form(policy, RequestForm(None, None, None))
    assert valid is None
    assert set(errors) == {"resource", "duration", "justification"}
    assert errors["resource"] == "Choose a resource."
    assert "not a duration" in errors["duration"]
    assert "at least 15 characters" in errors["justification"]


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        (RequestForm("staging-db", "30m", JUSTIFICATION), "resource", "Unknown resource"),
        (RequestForm("prod-db", "soon", JUSTIFICATION), "duration", "is not a duration"),
        (RequestForm("prod-db", "0m", JUSTIFICATION), "duration", "A duration must be longer"),
        (RequestForm("prod-db", "2h", JUSTIFICATION), "duration", "Too long: at most 1 h"),
        (RequestForm("prod-db", "30m", "   it is broken   "), "justification", "at least 15"),
    ],
)
def test_check_form_field_errors(
    policy: Policy, form: RequestForm, field: str, message: str
) -> None:
    valid, errors = check_form(policy, form)
    assert valid is None
    assert list(errors) == [field]
    assert message in errors[field]
    assert errors[field].endswith(".")


def test_check_form_refuses_emergency_where_not_allowed() -> None:
    policy = parse_policy(NO_EMERGENCY)
    form = RequestForm("billing-db", "30m", JUSTIFICATION, emergency=True)
    valid, errors = check_form(policy, form)
    assert valid is None
    assert list(errors) == ["emergency"]
    assert "not allowed" in errors["emergency"]


def test_check_form_error_keys_are_form_fields(policy: Policy) -> None:
    from bot.slack.ids import FIELD_BLOCKS

    _, errors = check_form(policy, RequestForm("nope", "x", "", emergency=True))
    assert errors
    assert set(errors) <= set(FIELD_BLOCKS)


def test_check_form_huge_duration_is_a_field_error(policy: Policy) -> None:
    valid, errors = check_form(policy, RequestForm("prod-db", "9999999999d", JUSTIFICATION))
    assert valid is None
    assert "duration" in errors


@given(
    seq=st.integers(min_value=1, max_value=10**12),
    actor=st.text(max_size=40),
    action=st.text(max_size=30),
    request_id=st.none() | st.integers(min_value=0, max_value=10**12),
    details_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    prev_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_spelled_out_event_hash_is_sha256_of_the_canonical_json(
    seq, actor, action, request_id, details_hash, prev_hash
) -> None:
    at = NOW + timedelta(microseconds=seq % 10**6)
    body = audit.canonical(
        {
            "v": 2,
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "request_id": request_id,
            "details_hash": details_hash,
            "prev_hash": prev_hash,
        }
    )
    expected = hashlib.sha256(body.encode()).hexdigest()
    assert expected == audit.event_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        request_id=request_id,
        details_hash=details_hash,
        prev_hash=prev_hash,
    )
