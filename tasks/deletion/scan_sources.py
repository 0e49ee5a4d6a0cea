"""Every place the platform writes, as a stream of strings for ``custody verify-deletion`` to match.

Each source yields ``Found`` items: a string (``Blob``) or a skipped file, with its location (a store key, a
database table and column with the row's primary key, an MLflow artifact path) and the bytes read. The places:

- the store (every prefix, raw files included), through ``Store`` on ``file://`` or ``s3://``;
- local directories (``CUSTODY_HOME/logs``, Prefect's local result storage);
- a SQL database read directly with SQLAlchemy, every text and JSON column of every table, streamed in batches:
  Prefect's (SQLite under its home, or Postgres) and MLflow's (SQLite or Postgres) — never through a server;
- an MLflow tracking server through its client API (runs' params and tags, registered models and versions);
- MLflow's artifact store, walked per experiment through MLflow's artifact repositories (local, S3, proxied).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.deletion.scan_files import Blob, Skipped, file_strings, is_binary_name, value_strings
from tasks.storage import Store

SQL_BATCH_ROWS = 1_000
ASYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}


@dataclass(frozen=True)
class Found:
    """One item of a place: ``item`` is a string to match or a skipped file; ``nbytes`` what reading it cost
    (a file's size on its first item, a database value's length)."""

    location: str
    item: Blob | Skipped
    nbytes: int = 0


def _file_items(location: str, name: str, size: int, opener: Any) -> Iterator[Found]:
    """A file's strings, its size counted once; an unreadable file is reported, never fatal to the scan."""
    if is_binary_name(name):
        yield Found(location, Skipped("binary"), size)
        return
    first = True
    try:
        with opener() as fh:
            for item in file_strings(name, fh):
                yield Found(location, item, size if first else 0)
                first = False
    except Exception as exc:  # a corrupt file is a finding of the scan, not its end
        yield Found(location, Skipped(f"unreadable: {type(exc).__name__}"), size if first else 0)
        return
    if first:  # an empty file (or one without strings) was still read
        yield Found(location, Blob("", ""), size)


def store_items(store: Store, skip: Iterable[str] = ()) -> Iterator[Found]:
    """Every file of the store, by key (``skip``: keys known to hold nothing to find, like the scan's own report)."""
    skipped = set(skip)
    for key in store.list(""):
        if key not in skipped:
            yield from _file_items(key, key, store.size(key), lambda k=key: store.open(k))


def directory_items(root: Path) -> Iterator[Found]:
    """Every file under a local directory, by path."""
    if not root.is_dir():
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield from _file_items(str(path), path.name, path.stat().st_size, lambda p=path: p.open("rb"))


def sync_url(url: str) -> str:
    """A database URL SQLAlchemy can read synchronously (Prefect's server uses async drivers)."""
    scheme, _, rest = url.partition("://")
    return f"{ASYNC_DRIVERS.get(scheme, scheme)}://{rest}"


def _text_columns(table: Any) -> list[Any]:
    import sqlalchemy as sa
    from sqlalchemy.sql.sqltypes import NullType

    return [c for c in table.columns if isinstance(c.type, sa.String | sa.Text | sa.JSON | NullType)]


def database_items(url: str) -> Iterator[Found]:
    """Every text and JSON value of every table, in batches of ``SQL_BATCH_ROWS`` rows (server-side cursors where
    the driver has them), located as ``table.column[primary key]``."""
    import sqlalchemy as sa

    engine = sa.create_engine(sync_url(url))
    try:
        meta = sa.MetaData()
        with warnings.catch_warnings():  # expression indexes and FK cycles (Prefect's) do not matter to reading
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            meta.reflect(engine)
        with engine.connect().execution_options(stream_results=True, yield_per=SQL_BATCH_ROWS) as conn:
            for name in sorted(meta.tables):
                yield from _table_items(conn, meta.tables[name])
    finally:
        engine.dispose()


def _table_items(conn: Any, table: Any) -> Iterator[Found]:
    import sqlalchemy as sa

    columns, keys = _text_columns(table), list(table.primary_key.columns)
    if not columns:
        return
    query = sa.select(*keys, *columns)
    for number, row in enumerate(conn.execute(query)):
        row_id = ",".join(str(v) for v in row[:len(keys)]) or f"#{number}"  # no primary key: the row's position
        for column, value in zip(columns, row[len(keys):], strict=True):
            if value is None:
                continue
            nbytes = len(value) if isinstance(value, str | bytes) else len(str(value))
            location = f"{table.name}.{column.name}[{row_id}]"
            for i, blob in enumerate(value_strings(value)):
                yield Found(location, blob, nbytes if i == 0 else 0)


def _paged(fetch: Any) -> Iterator[Any]:
    """Every item of a paginated MLflow search (``fetch(page_token)``)."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def mlflow_api_items(client: Any) -> Iterator[Found]:
    """What an MLflow tracking server holds besides artifacts: run names, params and tags; registered models'
    and versions' descriptions and tags."""
    from mlflow.entities import ViewType

    for exp in _paged(lambda t: client.search_experiments(view_type=ViewType.ALL, page_token=t)):
        for run in _paged(lambda t, e=exp: client.search_runs([e.experiment_id], run_view_type=ViewType.ALL,
                                                              page_token=t)):
            fields = {"name": run.info.run_name, **{f"params.{k}": v for k, v in run.data.params.items()},
                      **{f"tags.{k}": v for k, v in run.data.tags.items()}}
            yield from _fields(f"run {run.info.run_id}", fields)
    for model in _paged(lambda t: client.search_registered_models(page_token=t)):
        yield from _fields(f"registered model {model.name}",
                           {"description": model.description, **{f"tags.{k}": v for k, v in model.tags.items()}})
        for version in _paged(lambda t, m=model: client.search_model_versions(f"name = '{m.name}'", page_token=t)):
            yield from _fields(f"model version {model.name}/{version.version}", {
                "description": version.description, **{f"tags.{k}": v for k, v in version.tags.items()}})


def _fields(location: str, fields: dict[str, Any]) -> Iterator[Found]:
    for name, value in fields.items():
        for i, blob in enumerate(value_strings(value, name) if value else ()):
            yield Found(location, blob, len(str(value)) if i == 0 else 0)


def experiment_locations(tracking_uri: str) -> list[str]:
    """Artifact roots of every experiment (deleted ones too): from the database when MLflow's is one we can read,
    else from the tracking server."""
    import mlflow
    from mlflow.entities import ViewType

    if tracking_uri.startswith(("http://", "https://")):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        return [e.artifact_location for e in _paged(lambda t: client.search_experiments(view_type=ViewType.ALL,
                                                                                        page_token=t))]
    import sqlalchemy as sa

    engine = sa.create_engine(sync_url(tracking_uri))
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("experiments"):
                return []
            return [r[0] for r in conn.execute(sa.text("SELECT artifact_location FROM experiments")) if r[0]]
    finally:
        engine.dispose()


def artifact_items(tracking_uri: str, locations: list[str]) -> Iterator[Found]:
    """Every artifact under each experiment's root (runs and logged models), binary ones counted, not fetched.
    Experiments may share a root (the embedded profile gives them all one): each root is walked once."""
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar a file would flood stderr
    mlflow.set_tracking_uri(tracking_uri)  # proxied ``mlflow-artifacts:/`` roots resolve against the server
    for root in outermost(locations):
        repo = get_artifact_repository(root)
        yield from _walk_artifacts(repo, root, None)


def outermost(roots: list[str]) -> list[str]:
    """Distinct roots without those inside another (walking the outer one covers them)."""
    distinct = sorted({r.rstrip("/") for r in roots})
    return [r for r in distinct if not any(r.startswith(f"{o}/") for o in distinct if o != r)]


def _walk_artifacts(repo: Any, root: str, path: str | None) -> Iterator[Found]:
    try:
        entries = repo.list_artifacts(path)
    except Exception as exc:  # an unreachable root is reported, the others still scanned
        yield Found(f"{root}/{path or ''}", Skipped(f"unreadable: {type(exc).__name__}"))
        return
    for entry in entries:
        if entry.is_dir:
            yield from _walk_artifacts(repo, root, entry.path)
            continue
        location, size = f"{root}/{entry.path}", entry.file_size or 0
        if is_binary_name(entry.path):
            yield Found(location, Skipped("binary"), size)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(repo.download_artifacts(entry.path, dst_path=tmp))
            yield from _file_items(location, entry.path, size or local.stat().st_size, lambda p=local: p.open("rb"))


def prefect_database_url(home: Path) -> str:
    """Prefect's database as its server is told (``PREFECT_API_DATABASE_CONNECTION_URL``), else the embedded
    SQLite file under ``PREFECT_HOME`` (``CUSTODY_HOME/prefect`` by default, flows.runtime)."""
    configured = os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
    if configured:
        return configured
    prefect_home = Path(os.environ.get("PREFECT_HOME") or home / "prefect")
    return f"sqlite:///{prefect_home / 'prefect.db'}"
