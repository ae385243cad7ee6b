"""Redis Lua scripts: each lives in `<package>/lua/<name>.lua` (package data) and is loaded here by name."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load(package: str, name: str) -> str:
    """The script in <package>/lua/<name>.lua, read once; names are ours, never an agent's.

    The file's leading comment says what the script does and what its KEYS and ARGV are.
    """
    return (files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")
