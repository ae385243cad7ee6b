"""REDIS_URL with TLS (`rediss://`) and a password: sessions work through a real TLS Redis server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastmcp import Client

from core.errors import Unavailable
from mcp_server.runtime import Runtime, start_runtime
from tests.conftest import app_for
from tests.support import call, free_port

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs the redis-server binary")


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost that it signed."""
    now = dt.datetime.now(dt.UTC)

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer, ca: bool):  # type: ignore[no-untyped-def]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "analytics-mcp test CA")])
    ca_cert = issue("analytics-mcp test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = issue("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, Path]]:
    """A private redis-server that speaks only TLS and needs a password: (port, password, CA file)."""
    folder = tmp_path_factory.mktemp("tls-redis")
    ca, cert, key = _certificates(folder)
    port, password = free_port(), "s3cret-" + folder.name
    process = subprocess.Popen(
        [
            str(REDIS_SERVER),
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no",
            "--requirepass", password,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.skip("this redis-server was built without TLS support")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port, password, ca
    finally:
        process.terminate()
        process.wait(10)


async def test_sessions_work_over_rediss_with_a_password_and_a_wrong_password_is_refused_at_start(
    sessions_runtime: Runtime, tls_redis: tuple[int, str, Path]
) -> None:
    port, password, ca = tls_redis
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    runtime = await start_runtime(sessions_runtime.settings.with_changes(redis_url=url), seed_demo=False)
    try:
        async with Client(app_for(runtime, "analyst").mcp) as analyst:
            session = (await call(analyst, "session_create", data_source="db"))["session_id"]
            await call(analyst, "session_update", session_id=session, key="over_tls", value={"ok": 1})
            assert (await call(analyst, "session_read", session_id=session, key="over_tls"))["value"] == {
                "ok": 1
            }
        assert await runtime.redis.exists(runtime.services.session_store.hash_key(session)) == 1
    finally:
        await runtime.close()
    for bad_url in (
        f"rediss://:wrong@127.0.0.1:{port}/0?ssl_ca_certs={ca}",  # wrong password
        f"redis://:{password}@127.0.0.1:{port}/0",  # plain text to a TLS-only port
    ):
        with pytest.raises(Unavailable, match="Redis does not answer"):
            await start_runtime(sessions_runtime.settings.with_changes(redis_url=bad_url), seed_demo=False)
