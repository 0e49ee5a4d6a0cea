"""Lineage from manifests written here and a real MLflow registry on SQLite."""

from __future__ import annotations

import pyarrow as pa
import pytest
from mlflow import MlflowClient

from tasks import layout, lineage
from tasks.errors import Fatal
from tests.helpers import ingest_without_engine, jsonl, write_source


def _manifest(store, name: str, version: str, ids: list[str]) -> None:
    store.write_parquet(layout.manifest(name, version),
                        pa.table({"record_id": ids, "weight": [1.0] * len(ids), "shard": [0] * len(ids)}))


@pytest.fixture
def world(store, tmp_path):
    rows = [{"id": str(i), "text": f"review {i} " + " ".join(f"w{i}x{j}" for j in range(12)), "label": "fresh",
             "owner": "alice" if i < 3 else "bob"} for i in range(8)]
    write_source(store, "rt", {"a.jsonl": jsonl(rows)})
    ingest_without_engine(store)
    ids = {r["owner_id"]: [] for r in store.read_parquets("records", ["owner_id"]).to_pylist()}
    for r in store.read_parquets("records", ["record_id", "owner_id"]).to_pylist():
        ids[r["owner_id"]].append(r["record_id"])
    _manifest(store, "sentiment", "v1", ids["alice"][:2] + ids["bob"][:3])
    _manifest(store, "sentiment", "v2", ids["bob"])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("clf")
    client.create_model_version("clf", source="file:///nowhere", tags={lineage.DATASET_TAG: "sentiment@v1"})
    client.create_model_version("clf", source="file:///nowhere", tags={lineage.DATASET_TAG: "sentiment@v2"})
    return store, uri, ids


def test_owner_record_dataset_and_model_queries(world) -> None:
    store, uri, ids = world
    summary = lineage.build_index(store, uri)
    assert summary["manifests"] == 2 and summary["models"] == 2 and summary["rows"] == 10
    by_owner = lineage.query(store, owner="alice")
    assert by_owner["records"] == 3
    assert by_owner["datasets"] == [{"dataset": "sentiment", "version": "v1", "records": 2}]
    assert [(m["model"], m["model_version"]) for m in by_owner["models"]] == [("clf", "1")]
    by_id = lineage.query(store, record_ids=[ids["bob"][0]])
    assert {d["version"] for d in by_id["datasets"]} == {"v1", "v2"} and len(by_id["models"]) == 2
    by_model = lineage.query(store, model="clf@2")
    assert by_model["records"] == 5 and set(by_model["record_ids"]) == set(ids["bob"])
    assert lineage.query(store, dataset="sentiment@v1")["records"] == 5
    with pytest.raises(Fatal, match="NAME@VERSION"):
        lineage.query(store, dataset="sentiment")


def test_index_is_derived_and_rebuilt_when_sources_change(world) -> None:
    store, uri, ids = world
    first = lineage.build_index(store, uri)
    assert lineage.build_index(store, uri)["built_at"] == first["built_at"]  # unchanged: not rebuilt
    _manifest(store, "sentiment", "v3", ids["alice"])
    assert lineage.build_index(store, uri)["manifests"] == 3
    assert lineage.query(store, owner="alice")["datasets"][-1] == {"dataset": "sentiment", "version": "v3",
                                                                    "records": 3}
    store.delete("lineage", recursive=True)  # throw it away: it comes back from the sources of truth
    assert lineage.build_index(store, uri)["rows"] == 13
