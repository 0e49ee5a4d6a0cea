"""The deployments of ``prefect.yaml``, served in-process for one-machine use (``custody server``).

``prefect deploy --all`` reads the same file for a work pool in production; reading it here too keeps the
schedule and the deletion trigger in one place.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.events.worker import EventsWorker
from prefect.schedules import Cron, Interval

from flows.runtime import configure_environment, wait_for_api
from tasks.config import get_settings
from tasks.deletion.requests import SelectorKind
from tasks.deletion.selector import deletion_event
from tasks.errors import Fatal

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["deployments"]


def load_flow(entrypoint: str) -> Any:
    """``flows/unlearn.py:unlearn_flow`` → the flow object."""
    file, name = entrypoint.split(":")
    return getattr(importlib.import_module(file.removesuffix(".py").replace("/", ".")), name)


def build_deployments(schedules: bool = True) -> list[Any]:
    """Runner deployments for ``serve``, with the file's parameters, schedules and event triggers."""
    out = []
    for spec in deployment_specs():
        triggers = [DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"})
                    for t in spec.get("triggers", [])]
        out.append(load_flow(spec["entrypoint"]).to_deployment(
            name=spec["name"], description=spec.get("description"), tags=spec.get("tags"), triggers=triggers,
            parameters=spec.get("parameters"),
            schedules=[schedule_of(s) for s in spec.get("schedules", [])] if schedules else None))
    return out


def schedule_of(spec: dict[str, Any]) -> Any:
    """A ``prefect.yaml`` schedule entry (``cron`` or ``interval`` seconds) as a Prefect schedule."""
    if "cron" in spec:
        return Cron(spec["cron"], timezone=spec.get("timezone", "UTC"))
    if "interval" in spec:
        return Interval(spec["interval"])
    raise Fatal(f"{PREFECT_YAML}: a schedule needs `cron` or `interval` (seconds), got {sorted(spec)}")


def emit_deletion_requested(request_id: str, kind: SelectorKind) -> None:
    """Tell the Prefect server a deletion request was filed; the unlearning deployment's trigger runs on it."""
    emit_event(**deletion_event(request_id, kind))
    EventsWorker.drain_all()


def serve_here(host: str, port: int, schedules: bool, on_ready: Callable[[str], None]) -> None:
    """Serve the deployments until interrupted, on the server ``PREFECT_API_URL`` names or on one started here
    (UI and API at ``http://host:port``, stopped on the way out). ``on_ready`` gets the API URL once it answers."""
    configure_environment()
    proc = None
    if not get_settings().prefect_server_configured:
        url = f"http://{host}:{port}/api"
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port",
                                 str(port)], env={**os.environ, "PREFECT_API_URL": url})  # one process group
        os.environ["PREFECT_API_URL"] = url
    try:
        wait_for_api(os.environ["PREFECT_API_URL"], proc)
        on_ready(os.environ["PREFECT_API_URL"])
        serve(*build_deployments(schedules))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
