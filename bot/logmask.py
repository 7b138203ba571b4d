"""Every log line passes the redaction function: records are masked when they are made.

A filter on the root handlers would miss handlers that libraries keep for themselves (gunicorn
has its own, that do not propagate) and handlers added later (a test's capture, an operator's
file handler). The record factory sees every record of every logger, once, before any handler:
the message with its arguments, the exception text (traceback included) and the stack are
masked there, so whichever handler and formatter writes the record, no secret is in it.
Crashes outside logging (an exception that ends a thread or the process) go through the same
function before they are printed.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

from bot.domain.redaction import mask

_FORMATTER = logging.Formatter()


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """The record, its text masked in place: message (arguments merged), exception, stack."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging itself would print the raw args
        message = f"{record.msg} {record.args!r}"
    record.msg = mask(str(message))
    record.args = None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # Formatters use `exc_text` when it is set, rather than formatting the exception anew.
        record.exc_text = mask(_FORMATTER.formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask(record.exc_text)
    if record.stack_info:
        record.stack_info = mask(record.stack_info)
    return record


class _MaskingFactory:
    """Wraps the record factory that was in place; installing twice wraps once."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return mask_record(self.inner(*args, **kwargs))


def _print_masked(
    kind: type[BaseException],
    value: BaseException,
    tb: TracebackType | None,
    header: str = "uncaught exception",
) -> None:
    if logging.getLogger().handlers:
        # A log record like any other, in the process's format (LOG_FORMAT=json: one line),
        # masked by the record factory as it is made.
        logging.getLogger("bot.crash").critical(header, exc_info=(kind, value, tb))
        return
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(f"{header}:\n{mask(text)}")


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    _print_masked(
        args.exc_type,
        args.exc_value or args.exc_type(),
        args.exc_traceback,
        f"uncaught exception in thread {name}",
    )


def install() -> None:
    """Mask every log record from now on; idempotent."""
    if not isinstance(logging.getLogRecordFactory(), _MaskingFactory):
        logging.setLogRecordFactory(_MaskingFactory(logging.getLogRecordFactory()))


def install_crash_hooks() -> None:
    """Mask the uncaught exceptions the interpreter prints (the process's own set-up only: a
    test runner keeps its own hooks)."""
    sys.excepthook = _print_masked
    threading.excepthook = _thread_hook


# Libraries whose DEBUG lines carry whole requests and payloads: Slack's Web API bodies (the
# reveal modal holds the credential), Bolt's and Socket Mode's incoming payloads (a Reveal
# click carries the wrapping token), urllib3's request lines.
_TALKATIVE = ("slack_sdk", "slack_bolt", "urllib3", "hvac")


def _no_library_debug(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO or not record.name.startswith(_TALKATIVE)


def quiet_secret_loggers() -> None:
    """Drop those libraries' DEBUG records whatever level anyone sets, in HTTP and Socket Mode
    alike: on their loggers (Bolt copies the root's level into each of its own) and on every
    handler of the root logger, which sees what child loggers propagate. And every record
    made from now on, by any logger, passes the redaction function (`bot.logmask`)."""
    install()
    for name in (*_TALKATIVE, "slack_sdk.web.base_client", "slack_sdk.socket_mode"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if _no_library_debug not in logger.filters:
            logger.addFilter(_no_library_debug)
    for handler in logging.getLogger().handlers:
        if _no_library_debug not in handler.filters:
            handler.addFilter(_no_library_debug)
