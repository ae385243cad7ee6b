"""JSON-lines logging on stderr, with the request id and caller of the current call on every line.

PII policy: a log line never carries an API key, a query parameter value or session content. Code
logs names, ids and counts, never values; exceptions are logged as their types and stack frames
without their messages (a driver's message can quote a value); and as defense in depth every line
passes `redact`, which masks DSN passwords, Bearer tokens and `amcp_` keys.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from opentelemetry import trace

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "analytics_mcp_request_id", default=None
)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "analytics_mcp_user_id", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


@contextlib.contextmanager
def request_bound(request_id: str, user_id: str | None) -> Iterator[None]:
    """Every log line (and audit row) inside names this request and its caller."""
    request_token, user_token = request_id_var.set(request_id), user_id_var.set(user_id)
    try:
        yield
    finally:
        user_id_var.reset(user_token)
        request_id_var.reset(request_token)


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

# scheme://user:password@host -> scheme://user:***@host (postgresql://, redis://, amqp://, ...)
_DSN_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@'\"]+@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}")
_AMCP_KEY = re.compile(r"\bamcp_[A-Za-z0-9_-]{6,}")
_KEY_ASSIGNMENT = re.compile(
    r"(?i)\b(x-api-key|api[_-]?key|password|passwd|secret)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&]+"
)
# An absolute path with at least two components (/srv/data/x.csv, C:\data\x.csv); URLs are left alone.
_POSIX_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"]+/)+[^\s/'\"]*")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s\\'\"]+\\)+[^\s\\'\"]*")


# Loggers whose lines we write ourselves (names, ids and counts only). Every other logger is a
# library's (fastmcp, mcp, uvicorn, asyncio, py.warnings ...), whose messages may quote agent input: a
# tool name, a resource URI, an argument. Theirs are reduced to their first line with values masked.
OWN_LOGGERS = (
    "analytics_mcp",
    "mcp_server",
    "analytics",
    "warehouse",
    "sessions",
    "resources",
    "prompts",
    "importers",
)
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_LIBRARY_MESSAGE_CHARS = 200
_WITHHELD = "<withheld>"


def is_own_logger(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


def library_message(record: logging.LogRecord) -> str:
    """A library's log message without the values in it: string arguments and quoted text masked,
    first line only, bounded (`Error reading resource 'x://../..'` -> `Error reading resource '…'`)."""
    message = str(record.msg)
    if record.args:
        args = record.args
        try:
            if isinstance(args, dict):
                message = message % {key: _masked(value) for key, value in args.items()}
            else:
                message = message % tuple(_masked(value) for value in args)
        except (TypeError, ValueError, KeyError):
            pass  # the template itself, unformatted
    lines = message.strip().splitlines() or [""]
    message = _QUOTED.sub("'…'", lines[0])
    if len(message) > _LIBRARY_MESSAGE_CHARS:
        message = message[:_LIBRARY_MESSAGE_CHARS] + "…"
    return message


def _masked(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float)) else _WITHHELD


def _expected(error: BaseException) -> bool:
    """An error that is an answer to the agent (ours or FastMCP's), not a fault: no stack needed."""
    from fastmcp.exceptions import FastMCPError, NotFoundError
    from mcp import MCPError

    from core.errors import AnalyticsError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (AnalyticsError, FastMCPError, NotFoundError, MCPError)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def redact(text: str) -> str:
    """Mask secrets that look like secrets: DSN passwords, Bearer tokens, amcp_ keys, key=value."""
    text = _DSN_PASSWORD.sub(r"\1***@", text)
    text = _BEARER.sub(r"\1***", text)
    text = _AMCP_KEY.sub("amcp_***", text)
    return _KEY_ASSIGNMENT.sub(r"\1\2***", text)


def sanitize_error(message: str) -> str:
    """An error message fit for an agent: secrets redacted and the server's file paths hidden."""
    message = redact(message)
    message = _POSIX_PATH.sub("<path>", message)
    return _WINDOWS_PATH.sub("<path>", message)


def safe_traceback(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """Stack frames and exception types, without messages: messages may quote data or secrets."""
    lines: list[str] = []
    error: BaseException | None = exc_info[1]
    seen: set[int] = set()
    chain: list[BaseException] = []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for position, error in enumerate(reversed(chain)):
        if position:
            lines.append("-- while handling the above --")
        for frame in traceback.extract_tb(error.__traceback__):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        lines.append(f"{type(error).__module__}.{type(error).__qualname__} (message withheld)")
    return "\n".join(lines)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (and string extras) through `redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "fastmcp.server.server" and record.exc_info:
            return False  # a component's failure: the edge's ShapeErrors answers it and logs a fault itself
        own = is_own_logger(record.name)
        if own:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record still gets logged, without its args
                message = str(record.msg)
        else:
            message = library_message(record)
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and not key.startswith("_") and isinstance(value, str):
                setattr(record, key, redact(value) if own else _WITHHELD)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id, user_id = request_id_var.get(), user_id_var.get()
        if request_id:
            line["request_id"] = request_id
        if user_id:
            line["user_id"] = user_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # tracing is on: the line links to the call's trace
            line["trace_id"] = format(span.trace_id, "032x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            if is_own_logger(record.name) or not _expected(error):
                line["exc"] = safe_traceback(record.exc_info)  # type: ignore[arg-type]
            else:  # a library logging a refusal we (or FastMCP) answered: its type is enough
                line["exc_type"] = f"{type(error).__module__}.{type(error).__qualname__}"
        return redact(json.dumps(line, default=str))


def install_handler(handler: logging.Handler, level: str = "INFO") -> None:
    """Make `handler` the root's only handler, JSON formatted and redacting; libraries stay quiet."""
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastMCP installs its own (rich, non-JSON) handler when it is first imported, and stops
    # propagation: import it now (the CLI would import it later, after this), then bring it to ours.
    import fastmcp  # noqa: F401

    fastmcp_logger = logging.getLogger("fastmcp")
    fastmcp_logger.handlers[:] = []
    fastmcp_logger.propagate = True
    # Libraries' chatter stays at warning unless asked for.
    for noisy in (
        "uvicorn.access",
        "httpx",
        "httpx2",
        "mcp",
        "fastmcp",
        "asyncio",
        "docket",
        "sse_starlette",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def configure_logging(level: str = "INFO") -> None:
    install_handler(logging.StreamHandler(sys.stderr), level)
    # What would otherwise reach stderr as raw multi-line text goes through the JSON handler too.
    logging.captureWarnings(True)
    crash = logging.getLogger("analytics_mcp")

    def uncaught(kind: type[BaseException], error: BaseException, stack: TracebackType | None) -> None:
        crash.critical("uncaught exception", exc_info=(kind, error, stack))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            crash.critical(
                "uncaught exception in a thread",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            )

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
