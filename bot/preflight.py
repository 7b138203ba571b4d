"""`check-config --online`: can the bot, with this configuration, reach what it needs and do
what a grant will ask of Vault? Better found now than at 2 a.m."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from bot import migrate
from bot.policy import Policy
from bot.settings import Settings
from bot.store import create_db_engine
from providers import ProviderError
from providers.vault import vault_client_from_env, vault_errors

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
    return {path: (caps, ", ".join(who)) for path, (caps, who) in needed.items()}


def online_problems(settings: Settings, policy: Policy) -> tuple[list[str], list[str]]:
    """(problems, notes) found by talking to the database, Vault and Slack."""
    problems: list[str] = []
    notes: list[str] = []

    engine = create_db_engine(settings.database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        todo = migrate.pending(engine)
        if todo:
            notes.append(
                f"database {where}: {len(todo)} migration(s) pending "
                "(`breakglass serve` applies them at start)"
            )
    except SQLAlchemyError as exc:
        problems.append(
            f"database {where}: cannot connect ({type(getattr(exc, 'orig', None) or exc).__name__})"
        )
    finally:
        engine.dispose()

    if settings.vault_addr:
        token = settings.vault_token.get_secret_value() if settings.vault_token else None
        try:
            client = vault_client_from_env(settings.vault_addr, token, timeout=5)
            needed = required_capabilities(policy)
            with vault_errors("sys/capabilities-self"):
                resp = client.adapter.post(
                    "/v1/sys/capabilities-self", json={"paths": sorted(needed)}
                )
            granted = resp.get("data", resp) if isinstance(resp, dict) else resp.json()
            for path, (caps, who) in sorted(needed.items()):
                have = set(granted.get(path, []))
                if "root" in have or caps <= have:
                    continue
                missing = ", ".join(sorted(caps - have))
                problems.append(
                    f"vault {settings.vault_addr}: the bot's token lacks {missing} on {path} "
                    f"(needed by {who}); see bot/vault/breakglass-bot.hcl"
                )
        except ProviderError as exc:
            problems.append(f"vault {settings.vault_addr}: {exc}")

    if settings.slack_bot_token:
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        client = WebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_base_url() or WebClient.BASE_URL,
            timeout=5,
        )
        try:
            client.auth_test()
        except SlackApiError as exc:
            problems.append(f"slack: SLACK_BOT_TOKEN refused ({exc.response.get('error')})")
        except OSError as exc:
            problems.append(f"slack: cannot reach the Slack API ({type(exc).__name__})")
    return problems, notes
