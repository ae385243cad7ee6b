"""A round-robin HTTP/1.1 reverse proxy for the benchmarks: what nginx does in docker-compose.scale.yml, on a
machine without nginx. Plain asyncio, so that the proxy costs the shared cores little: each request goes
to the next upstream in turn over a kept-alive connection; answers stream through unbuffered (server-sent
events included) and carry `X-Served-By: <upstream index>` so a bench can see who answered. Requests
carrying `X-Bench-Client: <name>` take turns per client instead: a client's successive requests always go
to different upstreams (with two, a session created on one is next used on the other), however the other
clients' requests interleave.

Usage: python bench/proxy.py --port 8080 http://127.0.0.1:8001 http://127.0.0.1:8002
(benches start it with `start_proxy`, in its own process so its CPU is counted apart.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class BadMessage(Exception):
    """A request or response this small proxy does not forward (e.g. a chunked request body)."""


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The start line and the header fields of an HTTP/1.1 message head (ending in CRLF CRLF)."""
    lines = head.split(b"\r\n")
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            fields.append((name.strip(), value.strip()))
    return lines[0], fields


def field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in fields if key.lower() == name), None)


def join_head(start: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
    return start + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"


class RoundRobin:
    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = [
            (urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 80) for url in upstreams
        ]
        self.idle: list[list[Connection]] = [[] for _ in self.upstreams]
        self.turn = itertools.cycle(range(len(self.upstreams)))
        self.turns_of_client: dict[bytes, int] = {}
        self.serving: set[asyncio.Task[None] | None] = set()

    def choose(self, fields: list[tuple[bytes, bytes]]) -> int:
        client = field(fields, b"x-bench-client")
        if client is None:
            return next(self.turn)
        turn = self.turns_of_client.get(client, -1) + 1
        self.turns_of_client[client] = turn
        return turn % len(self.upstreams)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: its requests one after another (HTTP/1.1 keep-alive, no pipelining)."""
        # Held here: a task left waiting on an answer that never ends (a client's GET stream it has given up)
        # would otherwise be collected with its connections, noisily, while still pending.
        task = asyncio.current_task()
        self.serving.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                start, fields = parse_head(head)
                if field(fields, b"transfer-encoding") is not None:
                    raise BadMessage("chunked request bodies are not forwarded")
                body = await reader.readexactly(int(field(fields, b"content-length") or 0))
                index = self.choose(fields)
                if not await self.forward(index, head + body, start.split(b" ", 1)[0] == b"HEAD", writer):
                    return
        except (BadMessage, ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
            print(f"proxy: {type(error).__name__}: {error}", file=sys.stderr)
        finally:
            writer.close()
            self.serving.discard(task)

    async def send(self, index: int, request: bytes) -> tuple[Connection, bytes]:
        """The request written to upstream `index` and the head of its answer. A kept-alive connection the
        upstream has closed meanwhile (its idle timeout) fails before any answer: then a new one is opened."""
        while self.idle[index]:
            upstream = self.idle[index].pop()
            try:
                upstream[1].write(request)
                return upstream, await upstream[0].readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                upstream[1].close()
        upstream = await asyncio.open_connection(*self.upstreams[index])
        upstream[1].write(request)
        return upstream, await upstream[0].readuntil(b"\r\n\r\n")

    async def forward(
        self, index: int, request: bytes, head_only: bool, client: asyncio.StreamWriter
    ) -> bool:
        """Send the request to upstream `index` and stream its answer to the client; False: close the client."""
        try:
            upstream, head = await self.send(index, request)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            message = f"upstream {index} unreachable: {type(error).__name__}".encode()
            client.write(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: %d\r\nx-served-by: %d\r\n\r\n"
                % (len(message), index)
                + message
            )
            await client.drain()
            return True
        start, fields = parse_head(head)
        client.write(join_head(start, [*fields, (b"x-served-by", b"%d" % index)]))
        status = int(start.split(b" ", 2)[1])
        keep = (field(fields, b"connection") or b"").lower() != b"close"
        reader = upstream[0]
        if head_only or status in (204, 304) or 100 <= status < 200:
            pass
        elif (field(fields, b"transfer-encoding") or b"").lower() == b"chunked":
            while True:  # each chunk passes as soon as it arrives: server-sent events stay live
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    trailer = size_line
                    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                        trailer += line
                    client.write(trailer + b"\r\n")
                    break
                client.write(size_line + await reader.readexactly(size + 2))
                await client.drain()
        elif (length := field(fields, b"content-length")) is not None:
            remaining = int(length)
            while remaining:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    raise ConnectionError("upstream closed mid-answer")
                client.write(chunk)
                remaining -= len(chunk)
        else:  # delimited by the upstream closing the connection
            keep = False
            while chunk := await reader.read(65536):
                client.write(chunk)
        await client.drain()
        if keep:
            self.idle[index].append(upstream)
        else:
            upstream[1].close()
        return keep


async def run(port: int, upstreams: list[str], host: str = "127.0.0.1") -> None:
    proxy = RoundRobin(upstreams)
    server = await asyncio.start_server(proxy.serve, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_proxy(upstreams: list[str], seconds: float = 20) -> tuple[subprocess.Popen[bytes], str]:
    """This proxy in its own process on a free loopback port, once it accepts connections: (process, url)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--port", str(port), *upstreams],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the proxy does not listen on port {port} after {seconds} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("upstreams", nargs="+", help="base URLs, e.g. http://127.0.0.1:8001")
    args = parser.parse_args()
    # Stopped by its bench with SIGTERM: nothing to flush, so no noise about connections still open.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.port, args.upstreams, args.host))


if __name__ == "__main__":
    main()
