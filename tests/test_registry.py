"""MLflow bookkeeping that must not leak between stores in one process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.config import get_settings
from tasks.model_registry import use_experiment


def test_tracking_store_follows_custody_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("a", "b"):
        monkeypatch.setenv("CUSTODY_HOME", str(tmp_path / name))
        use_experiment("custody-test")
        assert "MLFLOW_TRACKING_URI" not in os.environ  # mlflow exports it; we take it back
        assert get_settings().mlflow_tracking_uri.endswith(f"/{name}/mlflow.db")
        assert mlflow.get_tracking_uri() == get_settings().mlflow_tracking_uri
        location = mlflow.get_experiment_by_name("custody-test").artifact_location
        assert location == (tmp_path / name / "mlartifacts").as_uri()
