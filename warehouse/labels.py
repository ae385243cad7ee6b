"""Labels the connection of an agent's query with the request it serves, so PostgreSQL shows which call
runs what (pg_stat_activity, and PostgreSQL's own log with %a in log_line_prefix)."""

from __future__ import annotations

import re

LABEL_PREFIX = "analytics-mcp/"

# application_name is at most 63 bytes and shown verbatim: keep it to our own characters.
_LABEL = re.compile(r"^[A-Za-z0-9_./:-]{1,63}$")


def request_label(request_id: str | None) -> str | None:
    """The application_name for the connection serving request `request_id` (None outside a call)."""
    return None if request_id is None else LABEL_PREFIX + request_id


def label_statement(label: str) -> str:
    """A statement setting the connection's application_name, to run in a batch the caller sends anyway
    (no round trip of its own).

    Inside a transaction the label holds until it ends (a rollback takes it back); the pool's RESET ALL
    removes it on release. The label is checked against the pattern above, so it can be written as a
    literal.
    """
    if not _LABEL.match(label):
        raise ValueError("a connection label is 1-63 letters, digits or _ . / : -")
    return f"SELECT set_config('application_name', '{label}', false)"
