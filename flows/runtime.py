"""Where flows run: the Prefect API (one shared server) and the Dask task runner, from ``Settings``.

Dask *process* workers would each start their own temporary Prefect server unless ``PREFECT_API_URL`` points
at one, so without a configured server we start one temporary server per process tree and export its URL
before any worker starts. It is spawned as soon as a command knows it will run flows (``start_prefect_api``), so it
boots while the command imports them, and waited for when the first flow needs it (``ensure_prefect_api``).

Logs: Prefect, Dask and MLflow write INFO lines to ``$CUSTODY_HOME/logs/custody.log``; the terminal shows their
warnings and errors, and the command's own progress and results (``flows/logging.yml``).

Prefect keeps its home (the temporary server's database) and its result storage under ``CUSTODY_HOME``: a failed
flow run always pickles its exception there, and nothing of Custody's may land in the user's ``~/.prefect``.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tasks.config import Settings, get_settings
from tasks.secrets import SecretFilter

log = logging.getLogger(__name__)
_server: Any = None
LOGGING_CONFIG = Path(__file__).with_name("logging.yml")
LIBRARY_LOGGERS = ("distributed",)  # libraries that print to the terminal with handlers of their own
ENGINES = ("prefect", "distributed", "mlflow", "torch")  # what commands that start flows import; read-only ones don't


def log_file(settings: Settings) -> Path:
    """Where INFO lines of Prefect, Dask and MLflow go (the terminal keeps WARNING and above)."""
    return settings.home.resolve() / "logs" / "custody.log"


def prefect_storage(settings: Settings) -> Path:
    """Where Prefect persists results, and the exception of every failed flow run (Prefect always writes that)."""
    return settings.home.resolve() / "prefect" / "storage"


QUIET_LIBRARIES = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "TOKENIZERS_PARALLELISM": "false"}


def configure_environment(settings: Settings | None = None) -> None:
    """Embedded defaults for Prefect, before it is imported: its home and result storage under ``CUSTODY_HOME``,
    our loggers, and the log file. Child processes (Dask workers, the temporary server) inherit them through the
    environment.

    Result storage follows the current ``CUSTODY_HOME`` on every call, whatever an earlier call or the user's
    ``PREFECT_HOME`` said. Prefect freezes its settings when first imported (a test, a notebook or a library may
    import it before a command runs), so an imported Prefect re-reads them here.
    """
    settings = settings or get_settings()
    os.environ.setdefault("PREFECT_HOME", str(settings.home.resolve() / "prefect"))
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(prefect_storage(settings))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")  # task and flow results stay in memory
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks")
    os.environ.setdefault("PREFECT_LOGGING_CONFIG_PATH", str(LOGGING_CONFIG))
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_FILE_FILENAME", str(log_file(settings)))
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's loggers then go where the root's go
    # the terminal shows Custody's progress and results: third-party progress bars and load reports stay quiet
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # rensa's pool: Dask already runs one task per core
    # torch's OpenMP threads sleep between parallel regions instead of spinning first (libgomp's default): where
    # another process holds a core, a spinning thread wastes it. Under load 5-6 on 2 cores, the quick demo's
    # unlearning took 283 s and 157 CPU s on two spinning threads, 120 s and 50 CPU s on one.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    log_file(settings).parent.mkdir(parents=True, exist_ok=True)
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def mask_log_secrets() -> None:
    """Mask credentials in every record this process prints or logs. ``flows/logging.yml`` puts ``SecretFilter`` on
    the handlers it configures (with Prefect's import, here and in workers and the server); this covers the
    handlers already on the root logger and the last-resort one that prints when no handler is configured."""
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())


def exit_cleanly(run: Callable[[], Any]) -> Any:
    """Run the program; if it loaded no engine (a read-only command), end the process without native teardown.

    Arrow's threads can still be winding down when the interpreter exits and abort the process after its output
    ("terminate called without an active exception", rc 134; apache/arrow#34314). A read-only command has nothing
    left to do at exit but flush, so it flushes and leaves with ``os._exit``. Commands that loaded an engine exit
    normally: Prefect, Dask and MLflow stop their servers, clusters and runs at exit.
    """
    try:
        return run()
    except SystemExit as exc:
        if any(name in sys.modules for name in ENGINES):
            raise
        code = exc.code
    stop_prefect_api()  # one spawned for a command that failed before loading its flows: os._exit skips atexit
    if isinstance(code, str):
        sys.stderr.write(code + "\n")  # what SystemExit("message") prints
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code if isinstance(code, int) else int(code is not None))


def route_library_logs() -> None:
    """Send the loggers of ``LIBRARY_LOGGERS`` through the root logger's handlers (file for INFO, terminal for
    WARNING+) instead of the stderr handlers those libraries install when imported."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


class TemporaryServer:
    """The temporary Prefect server of one command: Prefect's API app under uvicorn in a child process, as
    Prefect's own ephemeral server runs it (no UI, no services), spawned without importing Prefect's server here,
    so that it boots (~5 s) while the command imports its flows and files its work instead of after."""

    def __init__(self) -> None:
        self.port = _free_port()
        app_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent  # type: ignore[arg-type,union-attr]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                 "PREFECT__SERVER_FINAL": "1"})
        atexit.register(self.stop)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait(self) -> str:
        """The API URL once it answers (a loaded 2-core machine can take far longer than Prefect's 20 s)."""
        wait_for_api(self.api_url, self.proc, timeout=120, poll=0.1)
        return self.api_url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_prefect_api(settings: Settings | None = None) -> None:
    """Start the temporary server in the background when no server is configured and none is started yet: a
    command that will run flows calls this first, ``ensure_prefect_api`` then waits for it."""
    global _server
    configure_environment(settings)
    if not os.environ.get("PREFECT_API_URL") and _server is None:
        _server = TemporaryServer()


def ensure_prefect_api(settings: Settings | None = None) -> str:
    """The Prefect API URL in use; starts one temporary local server if none is configured (or waits for the one
    ``start_prefect_api`` started)."""
    global _server
    configure_environment(settings)
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    start_prefect_api(settings)
    try:
        url = _server.wait()
    except RuntimeError:  # it exited (its port taken since it was chosen, say): once more, on another port
        _server = TemporaryServer()
        url = _server.wait()
    os.environ["PREFECT_API_URL"] = os.environ["CUSTODY_TEMPORARY_PREFECT_URL"] = url
    configure_environment(settings)  # an imported Prefect re-reads its settings: its client then uses this server
    log.info("started a temporary Prefect server at %s", url)
    return url


def wait_for_api(url: str, proc: Any = None, timeout: float = 180.0, poll: float = 0.5) -> None:
    """Block until the Prefect API at ``url`` answers its health check (or ``proc`` dies, or time runs out)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise TimeoutError(f"no Prefect API at {url} after {timeout:.0f} s")


def stop_prefect_api() -> None:
    """Stop the temporary server started by :func:`ensure_prefect_api`, if any."""
    global _server
    if _server is not None:
        _server.stop()
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop("CUSTODY_TEMPORARY_PREFECT_URL", None)
        _server = None


def _local_cluster_kwargs(settings: Settings) -> dict[str, Any]:
    return {"n_workers": settings.dask_workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "silence_logs": logging.WARNING}


def dask_task_runner(settings: Settings | None = None, address: str | None = None) -> Any:
    """A DaskTaskRunner on ``address``, ``CUSTODY_DASK_ADDRESS``, or a LocalCluster of single-threaded processes."""
    from prefect_dask import DaskTaskRunner

    route_library_logs()
    settings = settings or get_settings()
    if address or settings.dask_address:
        return DaskTaskRunner(address=address or settings.dask_address)
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=_local_cluster_kwargs(settings))


@contextmanager
def own_thread_settings() -> Iterator[None]:
    """This process's thread settings as they were before the block, which starts Dask workers.

    Before spawning each worker, Dask's nanny exports ``distributed.nanny.pre-spawn-environ`` (``OMP_NUM_THREADS=1``
    and the MKL and OpenBLAS ones: one thread per single-threaded worker) into the environment of the process that
    starts the cluster, and leaves it there. Torch first used in that process afterwards (training, evaluation and
    unlearning run in the flow's own process) would then run on one core of two. The workers keep their setting.
    """
    import dask

    saved = {name: os.environ.get(name) for name in dask.config.get("distributed.nanny.pre-spawn-environ")}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def local_cluster(**kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` (its workers up when this returns) that leaves this process's thread
    settings as they were (``own_thread_settings``)."""
    from distributed import LocalCluster

    with own_thread_settings():
        return LocalCluster(**kwargs)


@contextmanager
def shared_dask(settings: Settings | None = None) -> Iterator[Callable[[], Any]]:
    """Task runners for several sub-flows on one Dask cluster: the configured scheduler, or one LocalCluster for
    the whole block. Starting and stopping a cluster per sub-flow is slow, and on a loaded machine a cluster's
    shutdown can time out and fail the parent flow."""
    settings = settings or get_settings()
    if settings.dask_address:
        yield lambda: dask_task_runner(settings)
        return
    route_library_logs()
    cluster = local_cluster(**_local_cluster_kwargs(settings))
    try:
        yield lambda: dask_task_runner(settings, cluster.scheduler_address)
    finally:
        with suppress(Exception):  # a slow shutdown must not fail a finished pipeline
            cluster.close(timeout=120)
