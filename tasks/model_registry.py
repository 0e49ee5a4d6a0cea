"""The MLflow model registry as Custody uses it: every tag, alias and experiment name, and every operation on them.

A registered version is named ``NAME@VERSION`` (a *ref*). Training registers a version tagged with its dataset
(``custody.dataset``, which lineage reads) and gives it the ``serving`` alias; unlearning registers versions made
from a source for a request (``custody.request``, ``custody.unlearned_from``, ``custody.method``), moves the
aliases to the one that passed the gate and retires the rest (``custody.status``) so they are never served.
Nothing else in tasks/ or flows/ spells these names.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from tasks.config import get_settings

# experiments
TRAINING_EXPERIMENT = "custody-training"
UNLEARNING_EXPERIMENT = "custody-unlearning"
# the alias a served version carries
SERVING = "serving"
# tags of a training run and of the version it registers
DATASET_TAG = "custody.dataset"  # NAME@VERSION of the dataset the version was trained on (lineage reads it)
MANIFEST_TAG = "custody.manifest"
DATASET_VERSION_TAG = "custody.dataset_version"
POLICY_TAG = "custody.policy_hash"
CODE_VERSION_TAG = "custody.code_version"
DEVICE_TAG = "custody.device"
SHARDS_TAG = "custody.shards"
# tags unlearning adds
REQUEST_TAG = "custody.request"
FROM_TAG = "custody.unlearned_from"
METHOD_TAG = "custody.method"
ROLE_TAG = "custody.role"  # candidate | oracle | unlearned
STATUS_TAG = "custody.status"  # serving | live | retired | rejected
RETIRED_BY_TAG = "custody.retired_by"
GATE_TAG = "custody.gate"  # passed | failed
UNLEARN_SECONDS_TAG = "custody.unlearn_seconds"
EXAMPLES_TAG = "custody.examples_processed"
KIND_TAG = "custody.kind"  # on a certificate's run
# values
ORACLE, CANDIDATE, UNLEARNED = "oracle", "candidate", "unlearned"
RETIRED, REJECTED, LIVE = "retired", "rejected", "live"
NEVER_SERVED = (RETIRED, REJECTED)


def client() -> Any:
    """A client of the configured tracking store (follows ``CUSTODY_HOME``)."""
    from mlflow import MlflowClient

    return MlflowClient(get_settings().mlflow_tracking_uri)


def split_ref(ref: str) -> tuple[str, str]:
    """``(name, version)`` of ``NAME@VERSION``."""
    name, version = ref.split("@", 1)
    return name, version


def ref_of(name: str, version: str | int) -> str:
    return f"{name}@{version}"


def tags(ref: str) -> dict[str, str]:
    return dict(_version(ref).tags or {})


def aliases(ref: str) -> list[str]:
    return list(_version(ref).aliases or [])


def run_id(ref: str) -> str:
    """The training (or unlearning) run that logged ``ref``'s artifacts."""
    return _version(ref).run_id


def _version(ref: str) -> Any:
    return client().get_model_version(*split_ref(ref))


def set_tag(ref: str, key: str, value: str) -> None:
    client().set_model_version_tag(*split_ref(ref), key, value)


def set_aliases(ref: str, names: list[str]) -> None:
    """Point each alias in ``names`` at ``ref`` (an alias names one version of a model at a time)."""
    name, version = split_ref(ref)
    for alias in names:
        client().set_registered_model_alias(name, alias, version)


def log_metrics(ref: str, metrics: dict[str, float]) -> None:
    """Log ``metrics`` on the run behind ``ref`` (evaluations arrive after the run ended)."""
    run = run_id(ref)
    mlflow_client = client()
    for key, value in metrics.items():
        mlflow_client.log_metric(run, key, value)


def retire(ref: str, status: str, request_id: str) -> list[str]:
    """Take every alias from ``ref`` and mark it never to be served; returns the aliases it had."""
    name, _ = split_ref(ref)
    had = aliases(ref)
    for alias in had:
        client().delete_registered_model_alias(name, alias)
    set_tag(ref, STATUS_TAG, status)
    set_tag(ref, RETIRED_BY_TAG, request_id)
    return had


def promote(source_ref: str, final_ref: str, moved: list[str], request_id: str) -> None:
    """Give the unlearned version the source's aliases ``moved`` and retire the source (idempotent)."""
    retire(source_ref, RETIRED, request_id)
    set_aliases(final_ref, moved)
    set_tag(final_ref, STATUS_TAG, SERVING if moved else LIVE)
    set_tag(final_ref, ROLE_TAG, UNLEARNED)


def find_version(request_id: str, source_ref: str, method: str) -> str | None:
    """A version already made from ``source_ref`` by ``method`` for the request (a re-run after a crash reuses
    it rather than registering it twice)."""
    name, _ = split_ref(source_ref)
    found = client().search_model_versions(
        f"name='{name}' and tags.`{REQUEST_TAG}`='{request_id}' and tags.`{FROM_TAG}`='{source_ref}' "
        f"and tags.`{METHOD_TAG}`='{method}'")
    return ref_of(name, found[0].version) if found else None


def create_version(name: str, run: Any, version_tags: dict[str, str], description: str) -> int:
    """Register the ``model`` artifacts of ``run`` as a new version of ``name`` (created if new); returns the
    version number."""
    mlflow_client = client()
    if not mlflow_client.search_registered_models(filter_string=f"name='{name}'"):
        mlflow_client.create_registered_model(name, description="Custody-trained classifier")
    version = mlflow_client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                                 run_id=run.info.run_id, tags=version_tags, description=description)
    return version.version


def use_experiment(name: str) -> None:
    """Point MLflow at the configured tracking store and experiment ``name`` (created with our artifact root)."""
    import mlflow

    settings = get_settings()
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI, which Settings would then take for the user's choice and
    # keep using after CUSTODY_HOME changes; leave the environment as the user set it
    if configured is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    if mlflow.get_experiment_by_name(name) is None:
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # another process may create it first
            mlflow.create_experiment(name, artifact_location=settings.mlflow_artifact_location)
    mlflow.set_experiment(name)
