"""The deployments of ``prefect.yaml``, served in-process for one-machine use (``custody server``).

``prefect deploy --all`` reads the same file for a work pool in production; reading it here too keeps the
schedule and the deletion trigger in one place.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import Fatal

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
DELETION_EVENT = "custody.deletion.requested"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["deployments"]


def load_flow(entrypoint: str) -> Any:
    """``flows/unlearn.py:unlearn_flow`` → the flow object."""
    file, name = entrypoint.split(":")
    return getattr(importlib.import_module(file.removesuffix(".py").replace("/", ".")), name)


def build_deployments(schedules: bool = True) -> list[Any]:
    """Runner deployments for ``serve``, with the file's schedules and event triggers."""
    from prefect.events import DeploymentEventTrigger

    out = []
    for spec in deployment_specs():
        triggers = [DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"})
                    for t in spec.get("triggers", [])]
        out.append(load_flow(spec["entrypoint"]).to_deployment(
            name=spec["name"], description=spec.get("description"), tags=spec.get("tags"), triggers=triggers,
            schedules=[schedule_of(s) for s in spec.get("schedules", [])] if schedules else None))
    return out


def schedule_of(spec: dict[str, Any]) -> Any:
    """A ``prefect.yaml`` schedule entry (``cron`` or ``interval`` seconds) as a Prefect schedule."""
    from prefect.schedules import Cron, Interval

    if "cron" in spec:
        return Cron(spec["cron"], timezone=spec.get("timezone", "UTC"))
    if "interval" in spec:
        return Interval(spec["interval"])
    raise Fatal(f"{PREFECT_YAML}: a schedule needs `cron` or `interval` (seconds), got {sorted(spec)}")


def emit_deletion_requested(request_id: str, kind: str) -> None:
    """Tell the Prefect server a deletion request was filed; the unlearning deployment's trigger runs on it."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    emit_event(event=DELETION_EVENT, resource={"prefect.resource.id": f"custody.deletion.{request_id}",
                                               "prefect.resource.name": request_id},
               payload={"request_id": request_id, "selector": kind})
    EventsWorker.drain_all()
