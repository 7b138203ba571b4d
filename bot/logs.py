"""Logging for every process, set up in one place: LOG_LEVEL, LOG_FORMAT (text or json), one
format for every logger (ours, gunicorn's, Bolt's, APScheduler's, Alembic's, hvac's, urllib3's),
the id of the request being acted for on each line, and no library chatter at the default level.

Records are masked when they are made (`bot.logmask`'s record factory): the formatter here
receives the masked message and exception text, and masks again whatever else it prints (bound
context, extra fields), so neither format can carry a secret.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, clear_contextvars

from bot.domain.redaction import mask

__all__ = [
    "LEVELS",
    "ContextExecutor",
    "LogSettingError",
    "acting_for",
    "bind",
    "clear",
    "configure",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
HANDLER_NAME = "breakglass"

# Libraries whose INFO lines are chatter an operator cannot act on, quietened at their source
# (the logger), not by raising the global level. With LOG_LEVEL=DEBUG they speak again.
QUIET = {
    # "setup plugin alembic.autogenerate.…", 7 lines on every command that touches Alembic
    "alembic.runtime.plugins": logging.WARNING,
    # "Context impl SQLiteImpl.", "Will assume non-transactional DDL." and one line per
    # revision applied: bot.migrate says in one line what it applied.
    "alembic.runtime.migration": logging.WARNING,
    # "Added job …" / "Removed job …" for every deadline, "Scheduler started"
    "apscheduler.scheduler": logging.WARNING,
    # "Running job …" / "… executed successfully" for the sweep every minute; a job that
    # raised is still logged (ERROR), and so is a missed run (WARNING)
    "apscheduler.executors": logging.WARNING,
}


class LogSettingError(ValueError):
    """LOG_LEVEL or LOG_FORMAT has a value we do not know (the message names it)."""


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(level, format) from LOG_LEVEL (default INFO) and LOG_FORMAT (default text)."""
    env = os.environ if environ is None else environ
    level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    fmt = (env.get("LOG_FORMAT") or "text").strip().lower()
    if level not in LEVELS:
        raise LogSettingError(
            f"LOG_LEVEL {level[:20]!r} is not a level; use one of {', '.join(LEVELS)}"
        )
    if fmt not in FORMATS:
        raise LogSettingError(f"LOG_FORMAT {fmt[:20]!r} is not a format; use text or json")
    return logging.getLevelNamesMapping()[level], fmt


# ---- the request being acted for --------------------------------------------------------


def bind(**ids: Any) -> None:
    """Put `ids` (request_id, actor) on every line this context logs from now on."""
    bind_contextvars(**ids)


def clear() -> None:
    """A new unit of work begins (an HTTP request, a Slack event): nothing bound."""
    clear_contextvars()


@contextmanager
def acting_for(request_id: int | None, **more: Any) -> Iterator[None]:
    """Lines logged inside carry `request_id` (and `more`); the previous values come back
    after (a timer's or the outbox's thread goes on to other requests)."""
    if request_id is None and not more:
        yield
        return
    ids = {"request_id": request_id, **more} if request_id is not None else more
    with bound_contextvars(**ids):
        yield


class ContextExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks run in a copy of the submitter's context: a Slack listener
    run in Bolt's pool logs the request id its middleware bound."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


# ---- formatting --------------------------------------------------------------------------


def _exception_text(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The exception as the record factory masked it (`exc_text`); never formatted anew from
    the live exception, whose text the factory has not seen."""
    record = event.get("_record")
    exc_info = event.pop("exc_info", None)
    text = getattr(record, "exc_text", None)
    if not text and exc_info:
        text = logging.Formatter().formatException(exc_info)
    if text:
        event["exception"] = text
    stack = event.pop("stack_info", None)
    if stack:
        event["stack"] = stack
    return event


def _no_formatter_leftovers(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """`message` and `asctime` are set on a record by whichever handler formatted it first (a
    test's capture, another handler): not extra fields of the call."""
    event.pop("message", None)
    event.pop("asctime", None)
    return event


def _masked(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Every value that is printed passes the redaction function."""
    for key, value in event.items():
        if key.startswith("_") or value is None or isinstance(value, bool | int | float):
            continue
        event[key] = mask(value if isinstance(value, str) else str(value))
    return event


_FIRST = ("timestamp", "level", "logger", "message")
# An access line's fields for JSON that its text line says already (`POST /x 200 3.1 ms`).
_ACCESS_FIELDS = ("method", "path", "status", "duration_ms")


def _text_access(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    if event.get("logger") == "gunicorn.access":
        for key in _ACCESS_FIELDS:
            event.pop(key, None)
    return event


def _json_order(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """The fixed fields first, so a line reads the same way every time."""
    return {
        **{k: event[k] for k in _FIRST if k in event},
        **{k: v for k, v in event.items() if k not in _FIRST},
    }


def _text_renderer() -> Any:
    from structlog.dev import Column, ConsoleRenderer, KeyValueColumnFormatter, plain_traceback

    def plain(key_style: str | None = None, *, postfix: str = "", repr_: Any = str) -> Any:
        return KeyValueColumnFormatter(
            key_style=key_style,
            value_style="",
            reset_style="",
            value_repr=repr_,
            postfix=postfix,
        )

    return ConsoleRenderer(
        columns=[
            Column("timestamp", plain()),
            Column("level", plain(repr_=lambda v: str(v).upper())),
            Column("logger", plain(postfix=":")),
            Column("event", plain()),
            Column("", plain("")),  # the rest: request_id=12 actor=U0ALICE
        ],
        exception_formatter=plain_traceback,
        sort_keys=True,
    )


def formatter(fmt: str) -> logging.Formatter:
    """The one formatter: `text` (a line a person reads) or `json` (one object per line)."""
    pre_chain = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _no_formatter_leftovers,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _exception_text,
    ]
    renderer: list[Any] = (
        [
            structlog.processors.EventRenamer("message"),
            _json_order,
            structlog.processors.JSONRenderer(),
        ]
        if fmt == "json"
        else [_text_access, _text_renderer()]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _masked, *renderer],
    )


# ---- libraries ---------------------------------------------------------------------------


def _bolt_token_warning(record: logging.LogRecord) -> bool:
    """Bolt warns that its `token` is unused when it is given a client: it read
    SLACK_BOT_TOKEN from the environment itself; our client carries that token."""
    from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

    return record.getMessage() != warning_client_prioritized_and_token_skipped()


def quiet_libraries(level: int) -> None:
    """Each library's chatter off at its logger, unless the operator asked for DEBUG."""
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet if level > logging.DEBUG else logging.NOTSET)
    bolt = logging.getLogger("slack_bolt.App")
    if _bolt_token_warning not in bolt.filters:
        bolt.addFilter(_bolt_token_warning)


def configure(
    level: int | None = None, fmt: str | None = None, *, force: bool = False
) -> logging.Handler | None:
    """Set up logging for this process (and the workers it forks): one handler on the root,
    to stderr, in LOG_FORMAT; LOG_LEVEL; libraries quietened; every record masked.

    Like `logging.basicConfig`, the handler is added only when the root has none of another
    kind (a test runner's capture keeps its own), unless `force`. Idempotent.
    """
    from bot.logmask import quiet_secret_loggers

    env_level, env_fmt = settings_from_env()
    level = env_level if level is None else level
    fmt = env_fmt if fmt is None else fmt
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
    for h in ours:
        root.removeHandler(h)
    handler = None
    if force or len(root.handlers) == 0:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(HANDLER_NAME)
        handler.setFormatter(formatter(fmt))
        root.addHandler(handler)
        root.setLevel(level)
    quiet_libraries(level)
    quiet_secret_loggers()  # the masking record factory, and no library DEBUG payloads
    return handler
