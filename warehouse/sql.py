"""Named SQL: every statement lives in sql/*.sql and is loaded here by name."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@cache
def load(name: str) -> str:
    """The statement in sql/<name>.sql; names are ours, never an agent's.

    The file's leading comment block documents the statement for its readers here; it is left out of
    the text that runs, which analyses also report in their metadata, so answers stay lean.
    """
    lines = (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8").splitlines(keepends=True)
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return "".join(lines)
