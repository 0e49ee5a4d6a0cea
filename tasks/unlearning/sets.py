"""The sets every model made from one source version is judged on: forget, retain and test.

``judged_sets`` derives the dataset version without the request's records (written like any other version),
points the source's training config at it, and builds the *forget* set — the deleted records the source trained
on, with their texts from the request's vault, since the records themselves are purged by now — and a *retain*
sample of the derived train split. The test split is the derived dataset's own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks import model_registry as registry
from tasks.errors import Fatal
from tasks.selection import derive_without, load_manifest
from tasks.storage import Store
from tasks.training import Split, TrainConfig, load_splits, subsample, take, version_doc


@dataclass
class Sets:
    cfg: TrainConfig  # the source's config, pointed at the derived dataset
    labels: list[str]
    selection: dict[str, Any]  # of the derived dataset
    splits: dict[str, Split]  # of the derived dataset
    forget: Split  # deleted records the source trained on
    retain: Split  # a sample of the derived train split

    @property
    def sharded(self) -> bool:
        return self.cfg.shards > 1

    def touched_shards(self) -> list[int]:
        """The shards that held forget records: the only ones an unlearning method has to change."""
        return sorted(set(self.forget.shard.tolist()))


def _vault_texts(store: Store, request_id: str) -> dict[str, str]:
    """record id -> text of the request's vault, the last copy of the deleted texts until certification."""
    key = layout.vault(request_id)
    if not store.exists(key):
        raise Fatal(f"the forget texts of {request_id} are gone ({store.uri(key)}): was it certified already?")
    vault = store.read_parquet(key, ["record_id", "text"])
    return dict(zip(vault.column("record_id").to_pylist(), vault.column("text").to_pylist(), strict=True))


def _forget_split(store: Store, request_id: str, source_dataset: str, deleted: set[str], labels: list[str],
                  sharded: bool) -> Split:
    """The deleted records in the source dataset's train split, in manifest order, with their vaulted texts (for a
    classifier only those with one of its ``labels``; a language model, with none, trained on every text)."""
    manifest, _ = load_manifest(store, source_dataset)
    hit = pc.and_(pc.is_in(manifest.column("record_id"), value_set=pa.array(sorted(deleted), pa.string())),
                  pc.equal(manifest.column("split"), "train"))
    rows = manifest.filter(hit)
    if labels:
        rows = rows.filter(pc.is_in(rows.column("label"), value_set=pa.array(labels, pa.string())))
    if rows.num_rows == 0:
        return Split([], [], np.zeros(0, np.int64), np.zeros(0, np.int64))
    texts = _vault_texts(store, request_id)
    rows = rows.filter(pc.is_in(rows.column("record_id"), value_set=pa.array(sorted(texts), pa.string())))
    ids = rows.column("record_id").to_pylist()
    shard = np.array(rows.column("shard").to_pylist(), np.int64) if sharded else np.zeros(len(ids), np.int64)
    y = np.array([labels.index(x) for x in rows.column("label").to_pylist()] if labels else np.zeros(len(ids)),
                 np.int64)
    return Split(ids, [texts[r] for r in ids], y, shard)


def judged_sets(store: Store, request: dict[str, Any], source_ref: str, retain_sample: int) -> Sets:
    """Derive the dataset without the request's records and build forget / retain / test for ``source_ref``.

    Raises:
        Fatal: the deletion removed a whole label (retrain instead), or the vault is gone.
    """
    name, _ = registry.split_ref(source_ref)
    source = version_doc(store, source_ref)
    deleted = set(request["resolved"]["record_ids"])
    derived = derive_without(store, source["dataset"], deleted, request["request_id"])
    cfg = replace(TrainConfig(**source["config"]), dataset=derived["ref"], registered_model=name)
    splits, labels, selection = load_splits(store, cfg)
    if labels != source["labels"]:
        raise Fatal(f"{source_ref}: labels changed after deletion ({source['labels']} -> {labels}); retrain instead")
    forget = _forget_split(store, request["request_id"], source["dataset"], deleted, labels, cfg.shards > 1)
    return Sets(cfg, labels, selection, splits, forget, subsample(splits["train"], retain_sample, cfg.seed))


def shard_rows(split: Split, shard: int, sharded: bool) -> Split:
    """The rows of ``split`` in ``shard`` (all of them for an unsharded model)."""
    return take(split, np.flatnonzero(split.shard == shard)) if sharded else split
