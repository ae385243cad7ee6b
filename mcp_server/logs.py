"""JSON-lines logging on stderr, with the request id and caller of the current call on every line.

PII policy: a log line never carries an API key, a query parameter value or session content. Code
logs names, ids and counts, never values; exceptions are logged as their types and stack frames
without their messages (a driver's message can quote a value); and as defense in depth every line
passes `redact`, which masks DSN passwords, Bearer tokens and `amcp_` keys.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback
from types import TracebackType
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "analytics_mcp_request_id", default=None
)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "analytics_mcp_user_id", default=None
)

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
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record still gets logged, without its args
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for key, value in list(record.__dict__.items()):
            if key not in _RESERVED and not key.startswith("_") and isinstance(value, str):
                setattr(record, key, redact(value))
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
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            line["exc"] = safe_traceback(record.exc_info)  # type: ignore[arg-type]
        return redact(json.dumps(line, default=str))


def install_handler(handler: logging.Handler, level: str = "INFO") -> None:
    """Make `handler` the root's only handler, JSON formatted and redacting; libraries stay quiet."""
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastMCP installs its own (rich, non-JSON) handler and stops propagation: bring it back to ours.
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
