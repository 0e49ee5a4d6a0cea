"""Shared fixtures: isolated settings per test, one Prefect server per session, a moto S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.storage import Store

MOTO_REGION = "eu-west-1"  # moto rejects us-east-1 as a bucket location constraint


@pytest.fixture
def custody_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Embedded defaults under a temporary CUSTODY_HOME."""
    home = tmp_path / "custody"
    monkeypatch.setenv("CUSTODY_HOME", str(home))
    for var in ("CUSTODY_STORAGE_URL", "CUSTODY_STORAGE_OPTIONS", "CUSTODY_DASK_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def store(custody_env: Path) -> Store:
    s = Store.from_settings()
    s.ensure_bucket()
    return s


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect server for the whole session, exported so Dask worker processes share it."""
    from flows import runtime

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect"))
    previous = os.environ.pop("PREFECT_API_URL", None)
    url = runtime.ensure_prefect_api()
    yield url
    runtime.stop_prefect_api()
    if previous:
        os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[dict]:
    """A real S3 protocol endpoint on 127.0.0.1 (moto server); yields fsspec storage options."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"key": "testing", "secret": "testing",
           "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": MOTO_REGION}}
    server.stop()
