"""Named SQL: every statement lives in sql/*.sql and is loaded here by name."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@cache
def load(name: str) -> str:
    """The text of sql/<name>.sql; names are ours, never an agent's."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")
