"""Real redis-server processes on loopback for the cluster and Sentinel tests: started in a temp folder,
always killed and removed by the caller's `stop`."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
PASSWORD = "amcp-test-password"  # data nodes ask for it (REDIS_PASSWORD); sentinels do not


def free_port(bus: bool = False) -> int:
    """A loopback port nobody listens on (and, for a cluster node, its bus port 10000 above it)."""
    for _ in range(200):
        port = random.randint(20_000, 50_000)
        wanted = [port, port + 10_000] if bus else [port]
        try:
            for candidate in wanted:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback port")


def wait_for(check: object, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def node(port: int) -> redis.Redis:
    """A client of one data node on loopback."""
    return redis.Redis(port=port, password=PASSWORD, socket_timeout=2)


@dataclass
class RedisProcesses:
    """redis-server processes of one test module and the folder they write in."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="amcp-redis-")))
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, port: int, *arguments: str, config: str | None = None, password: bool = True) -> None:
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER]
        if config is not None:
            path = self.folder / f"{port}.conf"
            path.write_text(config)
            command.append(str(path))
        command += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--daemonize", "no", "--dir", str(self.folder), *arguments]
        if password:
            command += ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
        self.processes[port] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.folder
        )
        client = node(port) if password else redis.Redis(port=port, socket_timeout=1)
        wait_for(client.ping, f"redis-server on port {port}")
        client.close()

    def kill(self, port: int) -> None:
        """SIGKILL one process, as a crash would."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        shutil.rmtree(self.folder, ignore_errors=True)

    def cluster(self, masters: int = 3) -> list[int]:
        """`masters` cluster nodes made into one cluster with redis-cli; returns their ports."""
        assert REDIS_CLI is not None
        ports = [free_port(bus=True) for _ in range(masters)]
        for port in ports:
            self.start(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.folder / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                "2000",
            )
        subprocess.run(
            [
                REDIS_CLI,
                "-a",
                PASSWORD,
                "--no-auth-warning",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        for port in ports:
            client = node(port)
            wait_for(
                lambda c=client: c.execute_command("CLUSTER INFO")["cluster_state"] == "ok", "cluster ok"
            )
            client.close()
        return ports
