"""Labels a pooled connection with the request it serves, so PostgreSQL shows which call runs what."""

from __future__ import annotations

import re
from typing import Any

from warehouse import sql

# application_name is at most 63 bytes and shown verbatim: keep it to our own characters.
_LABEL = re.compile(r"^[A-Za-z0-9_./:-]{1,63}$")


async def label_connection(conn: Any, label: str) -> None:
    """Set the connection's application_name to `label` until the pool resets it on release."""
    if not _LABEL.match(label):
        raise ValueError("a connection label is 1-63 letters, digits or _ . / : -")
    await conn.execute(sql.load("connection_label"), label)


def label_statement(label: str) -> str:
    """The same as one statement to run in a batch the caller sends anyway (no round trip of its own).

    Inside a transaction the label holds until it ends (a rollback takes it back). The label is
    checked against the pattern above, so it can be written as a literal.
    """
    if not _LABEL.match(label):
        raise ValueError("a connection label is 1-63 letters, digits or _ . / : -")
    return f"SELECT set_config('application_name', '{label}', false)"
