"""Health checks behind ``custody doctor``: is each configured part reachable and usable?"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tasks.config import Settings
from tasks.secrets import known_secrets, mask
from tasks.storage import Store


def _check(name: str, fn: Callable[[], str]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        detail, ok = fn(), True
    except Exception as exc:  # a doctor reports every failure instead of stopping at the first
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return {"check": name, "ok": ok, "detail": detail, "seconds": round(time.perf_counter() - start, 3)}


def check_storage(settings: Settings) -> str:
    store = Store.from_settings(settings)
    store.ensure_bucket()
    key = f"_doctor/{uuid.uuid4().hex}.txt"
    store.write_bytes(key, b"ok")
    if store.read_bytes(key) != b"ok":
        raise OSError("read back different bytes")
    store.delete(key)
    return f"{store.url} is writable"


def check_dask(settings: Settings) -> str:
    if not settings.dask_address:
        import distributed

        return f"LocalCluster with {settings.dask_workers} workers on demand (distributed {distributed.__version__})"
    from distributed import Client

    with Client(settings.dask_address, timeout=10) as client:
        return f"{settings.dask_address}: {len(client.scheduler_info()['workers'])} workers"


def check_prefect(settings: Settings) -> str:
    import httpx
    import prefect

    if not settings.prefect_api_url:
        return f"prefect {prefect.__version__}; a temporary local server starts with each flow command"
    response = httpx.get(f"{settings.prefect_api_url.rstrip('/')}/health", timeout=10)
    response.raise_for_status()
    return f"prefect {prefect.__version__} at {settings.prefect_api_url}"


def check_mlflow(settings: Settings) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    n = len(client.search_experiments(max_results=100))
    return f"mlflow {mlflow.__version__} at {settings.mlflow_tracking_uri}: {n} experiments"


def check_device(settings: Settings) -> str:
    import torch

    device = settings.resolved_device()
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUSTODY_DEVICE=cuda but torch sees no CUDA device")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    return f"torch {torch.__version__} on {device} ({name})"


def run_checks(settings: Settings) -> dict[str, Any]:
    """Every check, and the settings, with credentials masked: a failing check's message may quote a URL with its
    password, or an endpoint's error may echo a key."""
    checks = [_check(name, lambda fn=fn: fn(settings)) for name, fn in
              (("storage", check_storage), ("dask", check_dask), ("prefect", check_prefect),
               ("mlflow", check_mlflow), ("device", check_device))]
    return {"ok": all(c["ok"] for c in checks), "settings": settings.public_dict(),
            "checks": mask(checks, known_secrets(settings.storage_options))}
