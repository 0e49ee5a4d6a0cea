"""Cores for torch: the flow's own process keeps its thread settings after starting Dask workers, the workers keep
one thread each, and the embeddings scorer's model takes ``CUSTODY_TORCH_THREADS`` (every core by default) with
the same vectors whatever the thread count."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from flows.runtime import shared_dask
from tasks.config import Settings, get_settings
from tasks.scoring.embeddings import EmbeddingConfig, embedding_matrix, embedding_table, torch_threads

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_threads() -> tuple[str | None, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_starting_dask_workers_leaves_this_process_its_thread_settings(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path) -> None:
    from distributed import Client

    monkeypatch.setenv("CUSTODY_HOME", str(tmp_path))
    monkeypatch.setenv("CUSTODY_DASK_WORKERS", "1")
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # a user's own setting survives too
    with shared_dask(get_settings()) as runner, Client(runner().address) as client:
        # the nanny's one thread per worker (distributed.nanny.pre-spawn-environ) still reaches the worker
        assert list(client.run(worker_threads).values()) == [("1", 1)]
    assert os.environ.get("OMP_NUM_THREADS") is None
    assert os.environ.get("MKL_NUM_THREADS") is None
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"


def test_torch_threads_default_to_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTODY_TORCH_THREADS", raising=False)
    assert get_settings().resolved_torch_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("CUSTODY_TORCH_THREADS", "1")
    assert get_settings().resolved_torch_threads() == 1
    monkeypatch.setenv("CUSTODY_TORCH_THREADS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_torch_threads_are_restored_after_the_block() -> None:
    import torch

    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_embeddings_are_the_same_on_one_thread_and_on_two(monkeypatch: pytest.MonkeyPatch) -> None:
    records = pa.table({"record_id": [f"r{i}" for i in range(40)],
                        "text": [f"record {i} says {'very ' * (i % 5)}little about anything" for i in range(40)]})
    vectors = {}
    for threads in (1, 2):
        monkeypatch.setenv("CUSTODY_TORCH_THREADS", str(threads))
        vectors[threads] = embedding_matrix(embedding_table(records, EmbeddingConfig(model="tiny")))
    assert vectors[1].shape == (40, vectors[1].shape[1]) and np.abs(vectors[1]).sum() > 0
    np.testing.assert_allclose(vectors[1], vectors[2], atol=1e-5)
