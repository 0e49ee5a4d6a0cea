"""One settings object for the whole platform, read from ``CUSTODY_*`` environment variables.

Embedded defaults put everything under ``./.custody``: file:// storage, a Dask LocalCluster, Prefect's
temporary server and MLflow on SQLite. Production points the same variables at S3, a Dask scheduler, a
Prefect server and an MLflow tracking server.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.secrets import known_secrets, mask


class Settings(BaseSettings):
    """Resolved runtime configuration; ``custody doctor`` prints it."""

    model_config = SettingsConfigDict(env_prefix="CUSTODY_", extra="ignore")

    home: Path = Field(default=Path(".custody"), description="local working directory for embedded services")
    storage_url: str | None = Field(default=None, description="root URL of the store (file:// or s3://)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options, JSON")
    dask_address: str | None = Field(default=None, description="existing Dask scheduler; LocalCluster if unset")
    dask_workers: int = Field(default=2, description="LocalCluster worker processes")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="torch device")
    max_record_bytes: int = Field(default=1_000_000, description="rows with longer text are quarantined", gt=0)
    # Reader limits (tasks.readers.ReadLimits has the same names): exceeding one quarantines the row or the file
    max_depth: int = Field(default=64, gt=0, description="nesting of objects and lists in one row")
    max_field_bytes: int | None = Field(default=None, gt=0, description="bytes of one field; unset: max_record_bytes")
    max_decompressed_bytes: int = Field(default=1 << 30, gt=0, description="bytes one compressed file may inflate to")
    max_compression_ratio: int = Field(default=100, gt=0, description="inflated : compressed, past ratio_min_bytes")
    ratio_min_bytes: int = Field(default=16 << 20, ge=0, description="inflated size below which any ratio is fine")
    max_files_per_source: int = Field(default=100_000, gt=0, description="files past it are quarantined")
    torch_threads: int | None = Field(default=None, gt=0, description="torch threads of a scorer's model in a Dask "
                                      "worker, where it runs alone (unset: every core this process may use)")
    purge_deadline_hours: float = Field(default=24.0, gt=0, description="hours within which an applied deletion's "
                                        "bytes must be physically purged (the batched `custody purge`)")

    @field_validator("storage_options", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @cached_property
    def store_url(self) -> str:
        """The store root, defaulting to ``file://<home>/store``."""
        if self.storage_url:
            return self.storage_url.rstrip("/")
        return (self.home.resolve() / "store").as_uri()

    @property
    def prefect_api_url(self) -> str | None:
        return os.environ.get("PREFECT_API_URL") or None

    @property
    def prefect_server_configured(self) -> bool:
        """A real Prefect server (not the temporary one flows.runtime starts) that serves our deployments."""
        url = self.prefect_api_url
        return bool(url) and url != os.environ.get("CUSTODY_TEMPORARY_PREFECT_URL")

    @property
    def mlflow_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.home.resolve() / 'mlflow.db')}"

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Where new experiments keep artifacts: under ``home`` for the embedded SQLite tracking store (MLflow
        would otherwise write ``./mlruns`` wherever the command runs); a tracking server decides for itself."""
        if os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"):
            return None
        return (self.home.resolve() / "mlartifacts").as_uri()

    def resolved_device(self) -> str:
        """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_torch_threads(self) -> int:
        """``torch_threads``, else the cores this process may run on."""
        if self.torch_threads:
            return self.torch_threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain JSON-able values, every credential masked at any depth (``tasks/secrets.py``)."""
        return mask({
            "home": str(self.home.resolve()),
            "storage_url": self.store_url,
            "storage_options": self.storage_options,
            "dask_address": self.dask_address or f"LocalCluster({self.dask_workers} workers)",
            "device": self.device,
            "prefect_api_url": self.prefect_api_url or "temporary local server",
            "mlflow_tracking_uri": self.mlflow_tracking_uri,
        }, known_secrets(self.storage_options))


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; tests change the environment)."""
    return Settings()
