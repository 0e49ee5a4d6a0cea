"""The notebooks under ``notebooks/`` run against a store: one tiny store (toy reviews, a quality run, a tiny BERT
and one owner's deletion unlearned with the plain task functions), then each notebook executed in a temporary copy
by a real Jupyter kernel with ``CUSTODY_HOME`` pointing at that store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("lineage.ipynb", "scores.ipynb", "unlearning.ipynb")


@pytest.fixture(scope="module")
def notebook_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """80 toy reviews from 8 owners, quality scores, a tiny unsharded model, and one owner deleted and unlearned."""
    from tasks.deletion import requests
    from tasks.scoring import quality
    from tasks.selection import owner_shares
    from tasks.storage import Store
    from tasks.training import run_training
    from tasks.unlearning import UnlearnConfig, unlearn_request
    from tests.helpers import reviews_store, tiny_train_config

    home = tmp_path_factory.mktemp("notebooks") / "custody"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CUSTODY_HOME", str(home))
        for var in ("CUSTODY_STORAGE_URL", "CUSTODY_STORAGE_OPTIONS", "CUSTODY_DASK_ADDRESS"):
            mp.delenv(var, raising=False)
        store = Store.from_settings()
        store.ensure_bucket()
        ref, _ = reviews_store(store, n=80, owners=8, shards=1)
        quality.run(store, quality.QualityConfig())
        model = run_training(store, tiny_train_config(ref, epochs=1))["ref"]
        owner = owner_shares(store, ref)[0][0]  # an owner with training records, so there is something to forget
        request = requests.submit(store, "owner", [owner], "consent withdrawn")
        doc = unlearn_request(store, request["request_id"], UnlearnConfig(max_steps=5))
        assert doc["status"] == "certified"
        yield {"home": home, "model": model, "owner": owner, "request_id": request["request_id"]}


def execute(name: str, workdir: Path) -> Any:
    import nbformat
    from nbclient import NotebookClient

    path = workdir / name
    shutil.copy(ROOT / "notebooks" / name, path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # run from the source, not from the committed outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def outputs(nb: Any) -> tuple[str, int]:
    """All text a notebook printed or displayed, and how many PNG images it produced."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{out.get('ename')}: {out.get('evalue')}"
            if out["output_type"] == "stream":
                text.append(out["text"])
            data = out.get("data", {})
            images += "image/png" in data
            text.append(data.get("text/plain", ""))
    return "\n".join(text), images


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_against_the_store(notebook_store, name, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CUSTODY_HOME", str(notebook_store["home"]))
    for var in ("CUSTODY_STORAGE_URL", "CUSTODY_STORAGE_OPTIONS", "CUSTODY_DASK_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    text, images = outputs(execute(name, tmp_path))
    assert str(notebook_store["home"]) in text  # it read the store of the current settings
    if name == "lineage.ipynb":
        assert notebook_store["request_id"] in text and "certified" in text
        assert notebook_store["model"] in text  # the source model held the deleted records
    elif name == "scores.ipynb":
        assert images >= 1 and "model_score" in text
        assert "dynamics: no run yet" in text  # a scorer that never ran is skipped, not an error
    else:
        assert notebook_store["request_id"] in text
        assert images >= 2  # forget-set loss distributions and the MIA AUC / accuracy bars
