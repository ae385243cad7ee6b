"""Redis Lua scripts live in <package>/lua/*.lua, one script a file that says what it does and its KEYS and
ARGV, loaded by name and shipped with the installed package."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from sessions import scripts

ROOT = Path(__file__).resolve().parents[2]
LUA_FILES = sorted(ROOT.glob("*/lua/*.lua"))


def python_modules() -> list[Path]:
    packages = [path.parent for path in ROOT.glob("*/__init__.py") if path.parent.name != "tests"]
    return [module for package in packages for module in package.rglob("*.py")]


def test_the_lua_scripts_are_files_beside_their_packages() -> None:
    assert {path.parent.parent.name for path in LUA_FILES} == {"sessions", "mcp_server"}
    assert len(LUA_FILES) >= 14


def test_no_python_module_holds_lua_text() -> None:
    holding = [
        str(module.relative_to(ROOT)) for module in python_modules() if "redis.call(" in module.read_text()
    ]
    assert holding == [], "move the Lua into <package>/lua/<name>.lua and load it with sessions.scripts.load"


def test_every_lua_script_starts_by_saying_what_it_does_and_its_keys_and_argv() -> None:
    for path in LUA_FILES:
        first = path.read_text().splitlines()[0]
        assert first.startswith("-- ") and "KEYS" in first and "ARGV" in first, path.name


def test_every_lua_script_is_loaded_by_name_and_reads_as_its_file() -> None:
    sources = "\n".join(module.read_text() for module in python_modules())
    for path in LUA_FILES:
        assert f'"{path.stem}"' in sources, f"{path.name} is loaded by no module"
        assert scripts.load(path.parent.parent.name, path.stem) == path.read_text()


def test_an_installed_package_ships_its_lua_scripts() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data = setuptools.get("package-data", {})
    for path in LUA_FILES:
        package, relative = path.parent.parent.name, str(path.relative_to(path.parent.parent))
        patterns = package_data.get(package, [])
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{package}: {relative}"
