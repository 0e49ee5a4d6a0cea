"""Transparency documents from the ledger: the public summary's numbers are the ledger's, the Croissant and SPDX 3
exports pass the real validators (mlcroissant, the SPDX 3.0.1 Python bindings), a text-and-data-mining reservation
is rejected by the commercial policy and counted, and a certified deletion makes a new summary and supersedes the
old one. A real store, real MLflow (SQLite), tiny BERTs; Prefect only for the artifact test."""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from tasks import layout, provenance
from tasks import model_registry as registry
from tasks.datasheet import parse_datasheet
from tasks.deletion import requests
from tasks.policy import load_policy
from tasks.rows import Rejected, to_record
from tasks.selection import SelectionConfig, load_manifest, select
from tasks.storage import Store
from tasks.training import run_training
from tasks.transparency import croissant, export_dataset, refresh_after_certificate, spdx, write_summary
from tasks.transparency.publish import SUMMARY_JSON, SUMMARY_MD
from tasks.unlearning import UnlearnConfig, unlearn_request
from tests.helpers import (
    datasheet,
    ingest_without_engine,
    jsonl,
    module_home,
    review_rows,
    tiny_train_config,
    write_source,
)

RESERVED_EVERY = 5  # every fifth crawled row carries a TDM reservation
OWNER = "o03"


def _home(store: Store) -> dict[str, Any]:
    """Two sources (a public dataset, and crawled pages with per-record reservations) validated under the
    commercial policy, one dataset version, one tiny model."""
    rows = review_rows(120, owners=8)
    write_source(store, "rt", {"a.jsonl": jsonl(rows[:60])},
                 datasheet("rt", acquisition="public_dataset", languages=["en"], tdm_reservation=False))
    crawled = [{**r, "id": f"w{i}", "tdm": int(i % RESERVED_EVERY == 0)} for i, r in enumerate(rows[60:])]
    sheet = datasheet("web", acquisition="crawled", homepage="https://news.example.org/reviews", languages=["en"],
                      tdm_policy="https://news.example.org/tdm-policy.json")
    sheet["fields"] = {**sheet["fields"], "tdm_reservation": "tdm"}
    write_source(store, "web", {"p.jsonl": jsonl(crawled)}, sheet)
    ingest_without_engine(store)
    policy = load_policy("commercial")
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list("records", ".parquet")])
    ref = select(store, SelectionConfig(name="sent", budget=10_000, shards=1, fractions=(0.7, 0.15, 0.15)))["ref"]
    model = run_training(store, tiny_train_config(ref, epochs=1))["ref"]
    return {"dataset": ref, "model": model, "reserved": sum(r["tdm"] for r in crawled)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    with module_home(tmp_path_factory, "transparency") as (home, store):
        yield home, _home(store)


@pytest.fixture
def home(built: tuple[Path, dict[str, Any]], custody_env: Path) -> tuple[Store, dict[str, Any]]:
    """A copy of the built home as this test's ``CUSTODY_HOME``."""
    shutil.copytree(built[0], custody_env)
    return Store.from_settings(), built[1]


def _ledger(store: Store, ref: str) -> dict[str, Any]:
    """The numbers a summary must show, computed here from the raw ledger files (not through the library)."""
    manifest, _ = load_manifest(store, ref)
    train = set(manifest.filter(pc.equal(manifest.column("split"), "train")).column("record_id").to_pylist())
    records = store.read_parquets(layout.records_dir()).to_pylist()
    mine = [r for r in records if r["record_id"] in train]
    verdicts = store.read_parquets(layout.VALIDATION, ["reasons"]).column("reasons").to_pylist()
    return {"records": len(mine), "characters": sum(r["n_chars"] for r in mine),
            "by_source": Counter(r["source"] for r in mine), "by_license": Counter(r["license"] for r in mine),
            "reserved_rejected": sum("tdm_reserved" in rs for rs in verdicts),
            "reserved_in_store": sum(bool(r["tdm_reservation"]) for r in records)}


def test_a_reservation_is_read_per_record_and_a_bad_one_is_refused() -> None:
    sheet, _ = parse_datasheet(json.dumps({**datasheet("web"), "tdm_reservation": True,
                                           "fields": {"text": "text", "tdm_reservation": "tdm"}}), "web")
    text = "a text long enough to pass"
    assert to_record({"text": text, "tdm": "0"}, sheet, 10_000)["tdm_reservation"] is False
    assert to_record({"text": text, "tdm": 1}, sheet, 10_000)["tdm_reservation"] is True
    assert to_record({"text": text}, sheet, 10_000)["tdm_reservation"] is True  # the datasheet's default
    with pytest.raises(Rejected, match="tdm_reservation"):
        to_record({"text": text, "tdm": "maybe"}, sheet, 10_000)


def test_the_commercial_policy_rejects_reserved_records_with_a_reason(home: tuple) -> None:
    store, setup = home
    ledger = _ledger(store, setup["dataset"])
    assert ledger["reserved_rejected"] == ledger["reserved_in_store"] == setup["reserved"] > 0
    quarantined = store.read_parquets(layout.quarantine_dir("web"), ["reasons"]).column("reasons").to_pylist()
    assert sum(rs == ["tdm_reserved"] for rs in quarantined) == setup["reserved"]


def test_the_summary_numbers_are_the_ledgers(home: tuple) -> None:
    store, setup = home
    result = write_summary(store, setup["model"], provider="Example AI, transparency@example.org")
    doc = store.read_json(layout.model_summary(*registry.split_ref(setup["model"]), SUMMARY_JSON))
    ledger = _ledger(store, setup["dataset"])
    size = doc["general"]["training_size"]
    assert (size["records"], size["characters"]) == (ledger["records"], ledger["characters"])
    assert result["training_records"] == ledger["records"] and size["size_band"] == "less than 1 billion tokens"
    assert doc["figures"]["source"] == dict(ledger["by_source"])
    assert doc["figures"]["license"] == dict(ledger["by_license"])
    sources = doc["sources"]
    assert sources["public_dataset"]["records"] == ledger["by_source"]["rt"]
    assert [s["source"] for s in sources["public_dataset"]["sources"]] == ["rt"]  # above the 3% threshold
    assert sources["crawled"]["records"] == ledger["by_source"]["web"]
    assert sources["crawled"]["top_domains"][0]["domain"] == "news.example.org"
    assert not sources["user"]["used"] and not sources["unclassified"]["sources"]
    tdm = doc["processing"]["tdm_reservations"]
    assert (tdm["honoured"], tdm["reserved_in_training"]) == (setup["reserved"], 0)
    assert tdm["policy_respects_reservations"] is True and tdm["sources_reserving"] == []
    assert result["tdm_reservations_honoured"] == setup["reserved"]
    assert doc["unknown"] == [{"question": "screening for unlawful content beyond the policy's rules (e.g. CSAM, "
                                           "terrorist content)", "datasheet_field": "notes"}]
    md = store.read_bytes(layout.model_summary(*registry.split_ref(setup["model"]), SUMMARY_MD)).decode()
    assert "## 3. Data processing aspects" in md and f"**{setup['reserved']}** records rejected" in md
    run = store.read_json(layout.model_doc(*registry.split_ref(setup["model"])))["run_id"]
    logged = {Path(a.path).name for a in registry.client().list_artifacts(run, "transparency")}
    assert logged == {SUMMARY_JSON, SUMMARY_MD}


def test_what_the_ledger_cannot_know_names_its_datasheet_field(home: tuple) -> None:
    store, setup = home
    sheet = store.read_bytes(layout.datasheet("rt")).decode().replace("acquisition: public_dataset\n", "")
    store.write_bytes(layout.datasheet("rt"), sheet.encode())
    write_summary(store, setup["model"])
    doc = store.read_json(layout.model_summary(*registry.split_ref(setup["model"]), SUMMARY_JSON))
    fields = {u["datasheet_field"] for u in doc["unknown"]}
    assert {"acquisition", "none: pass --provider"} <= fields
    assert [s["source"] for s in doc["sources"]["unclassified"]["sources"]] == ["rt"]


def test_both_exports_pass_the_real_validators(home: tuple) -> None:
    import mlcroissant as mlc
    import spdx_python_model

    store, setup = home
    name, version = setup["dataset"].split("@")
    manifest, _ = load_manifest(store, setup["dataset"])
    paths = {fmt: export_dataset(store, setup["dataset"], fmt)["path"] for fmt in ("croissant", "spdx")}
    assert paths["croissant"].endswith(f"/{name}/{version}/croissant.json") and paths["spdx"].endswith("spdx.json")

    local = store.path(layout.dataset_export(name, version, "croissant.json"))
    dataset = mlc.Dataset(jsonld=local)  # validates on load; then reads the manifest, checking its sha256
    assert dataset.metadata.version == f"1.0.0+{version}"
    assert len(list(dataset.records("manifest-records"))) == manifest.num_rows

    model, objects = spdx_python_model.load(Path(store.path(layout.dataset_export(name, version, "spdx.json"))))
    model.JSONLDSerializer().serialize_data(objects)  # every cardinality holds
    packages = {p.name: p for p in objects.foreach_type("dataset_DatasetPackage")}
    assert set(packages) == {setup["dataset"], "rt", "web"}
    assert packages[setup["dataset"]].software_packageVersion == version


def test_the_validators_refuse_a_broken_document(home: tuple) -> None:
    import mlcroissant as mlc

    store, setup = home
    export_dataset(store, setup["dataset"], "spdx")
    name, version = setup["dataset"].split("@")
    doc = store.read_json(layout.dataset_export(name, version, "spdx.json"))
    broken = copy.deepcopy(doc)
    next(n for n in broken["@graph"] if n["type"] == "dataset_DatasetPackage")["dataset_datasetType"] = ["prose"]
    with pytest.raises(ValueError, match="not a valid value"):
        spdx.validate(broken)
    export_dataset(store, setup["dataset"], "croissant")
    doc = store.read_json(layout.dataset_export(name, version, "croissant.json"))
    doc["recordSet"][0]["field"][0]["dataType"] = "sc:Nonsense"
    with pytest.raises(mlc.ValidationError):
        croissant.validate(doc)


def test_a_certified_deletion_makes_a_new_summary_and_supersedes_the_old(home: tuple) -> None:
    store, setup = home
    write_summary(store, setup["model"])
    old_key = layout.model_summary(*registry.split_ref(setup["model"]), SUMMARY_JSON)
    before = store.read_json(old_key)
    manifest, _ = load_manifest(store, setup["dataset"])
    owned = manifest.filter(pc.equal(manifest.column("owner_id"), OWNER))
    deleted_train = sum(s == "train" for s in owned.column("split").to_pylist())
    request = requests.submit(store, "owner", [OWNER], "consent withdrawn")
    doc = unlearn_request(store, request["request_id"], UnlearnConfig(method="retrain", max_steps=3,
                                                                      retain_sample=40, mink_sample=20))
    assert doc["status"] == "certified"

    (result,) = refresh_after_certificate(store, doc)
    new = store.read_json(layout.model_summary(*registry.split_ref(result["model"]), SUMMARY_JSON))
    assert result["superseded"] == setup["model"] and new["supersedes"] == setup["model"]
    assert new["general"]["training_size"]["records"] == before["general"]["training_size"]["records"] - deleted_train
    removed = new["processing"]["deletions"]
    assert removed["records_removed"] == owned.num_rows and removed["requests"][0]["status"] == "certified"
    old = store.read_json(old_key)
    assert (old["status"], old["superseded_by"]) == ("superseded", result["model"])
    assert old["general"] == before["general"] and old["sources"] == before["sources"]  # kept as it was issued
    assert store.read_bytes(old_key.replace(SUMMARY_JSON, SUMMARY_MD)).decode().count("**Superseded**") == 1
    assert write_summary(store, setup["model"])["kept"] is True  # a superseded summary is never rewritten


@pytest.mark.integration
def test_the_summary_flow_publishes_an_artifact(home: tuple, prefect_api: str) -> None:
    from flows.transparency import ARTIFACT, summary_flow
    from tests.helpers import artifacts

    _, setup = home
    result = summary_flow(setup["model"])
    assert result["status"] == "current"
    (latest, *_) = artifacts(ARTIFACT)
    assert latest.description == f"public summary of {setup['model']}" and "## 2. List of data sources" in latest.data


@pytest.mark.parametrize("fmt", ["croissant", "spdx"])
def test_the_export_command_prints_the_path_and_imports_no_engine(home: tuple, fmt: str) -> None:
    import os
    import subprocess
    import sys

    _, setup = home
    engines = ("prefect", "prefect_dask", "dask", "distributed", "mlflow", "torch")
    code = ("import json, sys\nfrom typer.main import get_command\nfrom flows.cli import app\n"
            "code = get_command(app).main(sys.argv[1:], standalone_mode=False) or 0\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {engines!r})))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    proc = subprocess.run([sys.executable, "-c", code, "export", "--dataset", setup["dataset"], "--format", fmt,
                           "--json"], env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          timeout=120)
    *_, answer, imported = proc.stdout.strip().splitlines()
    result = json.loads(answer)
    assert (result["ok"], result["format"], json.loads(imported)) == (True, fmt, []), proc.stderr
    assert Path(result["path"].removeprefix("file://")).name == f"{fmt}.json"
