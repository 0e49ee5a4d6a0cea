"""infra/compose.yaml against the code it configures: the env names Settings reads, the services they point at,
the work pool prefect.yaml deploys to, and ports that stay on loopback. Static: needs no Docker."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tasks.config import Settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SHARED = {"CUSTODY_STORAGE_URL", "CUSTODY_STORAGE_OPTIONS", "CUSTODY_DASK_ADDRESS", "MLFLOW_TRACKING_URI",
          "PREFECT_API_URL"}
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with its defaults (what an empty infra/.env gives)."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def custody_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run Custody code: Prefect workers (flow runs) and Dask workers (tasks)."""
    return {name: s for name, s in compose["services"].items() if command(s)[:2] in (["prefect", "worker"],
                                                                                        ["dask", "worker"])}


def listen_port(service: dict[str, Any]) -> int | None:
    args = command(service)
    for i, arg in enumerate(args):
        if arg == "--port":
            return int(args[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return None


def env_names(compose: dict[str, Any]) -> set[str]:
    names = set(compose["x-custody-env"])
    for service in compose["services"].values():
        env = service.get("environment") or {}
        names |= set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
    return names


def test_custody_services_share_the_env(compose: dict[str, Any]) -> None:
    shared = compose["x-custody-env"]
    assert set(shared) >= SHARED
    services = custody_services(compose)
    assert "prefect-worker" in services
    assert sum(command(s)[:2] == ["dask", "worker"] for s in services.values()) >= 2
    for name, service in services.items():
        env = service.get("environment") or {}
        assert isinstance(env, dict), name
        assert {k: env.get(k) for k in shared} == shared, f"{name} drifted from x-custody-env"


def test_every_custody_variable_is_a_setting(compose: dict[str, Any]) -> None:
    prefix = Settings.model_config["env_prefix"]
    custody = {n for n in env_names(compose) if n.startswith(prefix)}
    assert custody
    unknown = {n for n in custody if n.removeprefix(prefix).lower() not in Settings.model_fields}
    assert not unknown, f"compose sets variables that tasks.config.Settings does not read: {sorted(unknown)}"


def test_settings_resolve_to_compose_services(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CUSTODY_")]:
        monkeypatch.delenv(name)
    for name, value in compose["x-custody-env"].items():
        monkeypatch.setenv(name, interpolate(str(value)))
    settings = Settings()
    services = compose["services"]

    assert settings.store_url.startswith("s3://")
    bucket = urlsplit(settings.store_url).netloc
    init = " ".join(" ".join(command(s)) for s in services.values() if "mc" in " ".join(command(s)).split())
    assert f"/{bucket}" in init, "no one-shot service creates the store's bucket"

    s3 = urlsplit(settings.storage_options["client_kwargs"]["endpoint_url"])
    assert s3.hostname in services
    minio = services[s3.hostname]["environment"]
    assert settings.storage_options["key"] == interpolate(minio["MINIO_ROOT_USER"])
    assert settings.storage_options["secret"] == interpolate(minio["MINIO_ROOT_PASSWORD"])

    dask = urlsplit(settings.dask_address)
    assert dask.hostname in services and listen_port(services[dask.hostname]) == dask.port
    for service in custody_services(compose).values():
        if command(service)[:2] == ["dask", "worker"]:
            assert command(service)[2] == settings.dask_address

    for url in (settings.mlflow_tracking_uri, settings.prefect_api_url):
        parts = urlsplit(url)
        assert parts.hostname in services, url
        assert listen_port(services[parts.hostname]) == parts.port, url


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:  # "HOST_IP:HOST_PORT:CONTAINER_PORT[/PROTO]"; fewer parts means all interfaces
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
    assert published


def test_dependencies_wait_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for target, spec in depends.items():
            condition = spec.get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), (name, target)
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{name} waits on {target}: no healthcheck"


def test_prefect_yaml_runs_on_the_compose_worker(compose: dict[str, Any]) -> None:
    """The deployments' work pool is the one the worker polls; every {{ $VAR }} they use is set in the worker."""
    path = ROOT / "prefect.yaml"
    if not path.exists():
        pytest.skip("no prefect.yaml")
    text = path.read_text()
    spec = yaml.safe_load(text)
    worker = command(compose["services"]["prefect-worker"])
    pool = worker[worker.index("--pool") + 1]
    for deployment in spec["deployments"]:
        assert deployment["work_pool"]["name"] == pool, deployment["name"]
    image_env = set(re.findall(r"^\s*(?:ENV\s+)?(\w+)=", (INFRA / "Dockerfile").read_text(), re.MULTILINE))
    worker_env = set(compose["services"]["prefect-worker"].get("environment") or {}) | image_env
    needed = set(re.findall(r"\{\{\s*\$(\w+)\s*\}\}", text))
    assert needed <= worker_env, f"prefect.yaml needs {sorted(needed - worker_env)} in the worker"
