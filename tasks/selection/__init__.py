"""Dataset selection: a budgeted subset of the validated pool, written as a content-addressed manifest.

``select`` builds ``datasets/<name>/<version>/manifest.parquet`` (record_id, weight, label, split, shard,
source, owner_id, canary) and ``selection.json`` beside it. The budget applies to the train split; validation and
test are every pool record in those splits, so versions are evaluated on the same held-out data. The version
id hashes the sorted record ids and the configuration, so the same selection is the same version. With
``canaries`` the train split also holds that many audit canaries (``tasks.canaries``), flagged ``canary`` and
left out of the data counts (``counts``, ``records``; they are counted as ``canaries``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tasks import layout, passed
from tasks.errors import Fatal, NotFound, unknown_name
from tasks.names import check_name, check_names, parse_ref
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.scoring.embeddings import EmbeddingConfig, embed
from tasks.selection import strategies
from tasks.selection.pool import (
    attribute_column,
    canary_rows,
    embeddings_for,
    exclusion_mask,
    load_pool,
    parse_exclusion,
    split_mask,
)
from tasks.storage import Store
from tasks.tables import without_ids

SPLITS = ("train", "validation", "test")
STRATEGIES = ("random", "quality", "kcenter", "facility", "target", "dsir", "influence")
RANKED_BY = {"quality": ("quality", "model_score"), "influence": ("influence", "tracin_target")}  # top-k strategies
MANIFEST_SCHEMA = pa.schema([("record_id", pa.string()), ("weight", pa.float32()), ("label", pa.string()),
                             ("split", pa.string()), ("shard", pa.int32()), ("source", pa.string()),
                             ("owner_id", pa.string()), ("canary", pa.bool_())])


@dataclass(frozen=True)
class SelectionConfig:
    """What to select. ``budget`` >= 1 is a record count, < 1 a fraction of the train-split pool."""

    name: str
    strategy: str = "random"
    budget: float = 0.2
    target: str | None = None  # source:NAME | label:VALUE | a text file, one example per line
    balance: str | None = None  # "label": equal counts per label
    exclude: tuple[str, ...] = ()
    seed: int = 0
    sources: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    owners: tuple[str, ...] | None = None  # only these owners' records (a language model on a few accounts)
    shards: int = 4
    fractions: tuple[float, float, float] = field(default=(0.8, 0.1, 0.1))
    canaries: int = 0  # audit canaries of the current generation added to the train split (tasks/canaries.py)

    def __post_init__(self) -> None:
        check_name("--name", self.name)  # a folder of datasets/: '/' would hide it from lineage, '..' leave the store
        check_names("--source", self.sources)
        check_names("--exclude scorer", [parse_exclusion(spec)[0] for spec in self.exclude])
        if self.strategy not in STRATEGIES:
            raise unknown_name("strategy", self.strategy, STRATEGIES)
        if self.budget <= 0:
            raise Fatal("--budget must be positive")
        if self.canaries < 0:
            raise Fatal("--canaries must be 0 or more")
        if self.balance not in (None, "label"):
            raise Fatal("--balance only supports 'label'")
        if self.strategy in ("target", "dsir") and not self.target:
            raise Fatal(f"strategy {self.strategy} needs --target (source:NAME, label:VALUE or a text file)")


def _target_texts(store: Store, spec: str) -> list[str]:
    if spec.startswith(("source:", "label:")):
        kind, value = spec.split(":", 1)
        table = passed.read_all(store, ["text", "source", "label"])
        column = table.column(kind).to_pylist()
        return [t for t, v in zip(table.column("text").to_pylist(), column, strict=True) if v == value]
    path = Path(spec)
    if not path.exists():
        raise Fatal(f"--target {spec!r}: not source:NAME, label:VALUE or an existing file")
    return [line for line in path.read_text().splitlines() if line.strip()]


def _target_embeddings(store: Store, texts: list[str], rid: str) -> np.ndarray:
    cfg = store.read_json(layout.attribute_run(EMBEDDINGS, rid))["config"]
    return embed(texts, EmbeddingConfig(**cfg))


def _pick(store: Store, cfg: SelectionConfig, cand: pa.Table, k: int, rng: np.random.Generator,
          used: dict[str, str]) -> np.ndarray:
    """Indices into ``cand`` chosen by the strategy."""
    n = cand.num_rows
    if cfg.strategy == "random":
        return strategies.random_pick(n, k, rng)
    if cfg.strategy in RANKED_BY:
        scorer, column = RANKED_BY[cfg.strategy]
        scores, used[scorer] = attribute_column(store, cand, scorer, column)
        return strategies.top_k(scores, k)
    if cfg.strategy == "dsir":
        return strategies.dsir(cand.column("text").to_pylist(), _target_texts(store, cfg.target), k, rng)
    x, used[EMBEDDINGS] = embeddings_for(store, cand)
    if cfg.strategy == "kcenter":
        return strategies.kcenter(x, k, rng)
    if cfg.strategy == "facility":
        return strategies.facility_location(x, k, rng)
    targets = _target_embeddings(store, _target_texts(store, cfg.target), used[EMBEDDINGS])
    return strategies.top_k(strategies.target_similarity(x, targets), k)


def choose(store: Store, cfg: SelectionConfig, train: pa.Table) -> tuple[np.ndarray, dict[str, str]]:
    """Indices of the selected train rows (balanced per label when asked)."""
    rng = np.random.default_rng(cfg.seed)
    k = int(cfg.budget) if cfg.budget >= 1 else round(cfg.budget * train.num_rows)
    k = min(k, train.num_rows)
    used: dict[str, str] = {}
    if cfg.balance != "label":
        return np.sort(_pick(store, cfg, train, k, rng, used)), used
    labels = np.array(train.column("label").to_pylist(), dtype=object)
    groups = sorted({lab for lab in labels if lab is not None})
    chosen = []
    for lab in groups:
        rows = np.flatnonzero(labels == lab)
        picked = _pick(store, cfg, train.take(pa.array(rows)), min(k // len(groups), len(rows)), rng, used)
        chosen.append(rows[picked])
    return np.sort(np.concatenate(chosen)), used


def _version(*parts: Any) -> str:
    """Content address of a version: its sorted record ids and how they were chosen, as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=list).encode()).hexdigest()[:12]


def is_canary(manifest: pa.Table) -> np.ndarray:
    """Which rows of a manifest (as ``load_manifest`` returns it) are audit canaries."""
    return np.array(manifest.column("canary").fill_null(False).to_pylist(), dtype=bool)


def _counts(manifest: pa.Table) -> dict[str, Any]:
    """The data counts of a summary: records per split and in all, canaries apart (they are not data)."""
    canary = is_canary(manifest)
    return {"counts": {s: int((split_mask(manifest, s) & ~canary).sum()) for s in SPLITS},
            "records": int((~canary).sum()),
            "canaries": int(canary.sum())}


def _publish(store: Store, name: str, version: str, manifest: pa.Table, summary: dict[str, Any]) -> None:
    store.write_parquet(layout.manifest(name, version), manifest, MANIFEST_SCHEMA)
    store.write_json(layout.selection(name, version), summary)  # written last: a version is complete when it exists


def select(store: Store, cfg: SelectionConfig) -> dict[str, Any]:
    """Build (or find) the dataset version for ``cfg``; returns its selection summary."""
    scores = [parse_exclusion(spec)[:2] for spec in cfg.exclude]  # attached partition by partition: no store-wide
    scores += [RANKED_BY[cfg.strategy]] if cfg.strategy in RANKED_BY else []  # score table, no store-wide hash
    pool = load_pool(store, cfg.sources, cfg.labels, cfg.fractions, cfg.shards, cfg.owners,
                     with_text=cfg.strategy == "dsir", scores=scores)
    drop, exclusions = exclusion_mask(store, pool, cfg.exclude)
    pool = pool.filter(pa.array(~drop))
    in_train = split_mask(pool, "train")
    train = pool.filter(pa.array(in_train))
    picked, used = choose(store, cfg, train)
    manifest = pa.concat_tables([train.take(pa.array(picked, pa.int64())), pool.filter(pa.array(~in_train))])
    manifest = manifest.append_column("weight", pa.array(np.ones(manifest.num_rows), pa.float32()))
    manifest = manifest.append_column("canary", pa.array(np.zeros(manifest.num_rows, dtype=bool)))
    labels = sorted({lab for lab in manifest.column("label").to_pylist() if lab is not None})
    canaries = canary_rows(store, cfg.canaries, labels, cfg.shards)
    manifest = pa.concat_tables([manifest.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA),
                                 canaries.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)]).sort_by("record_id")
    config = {k: v for k, v in asdict(cfg).items() if k not in ("canaries", "owners") or v}  # the ids stay as before
    version = _version(manifest.column("record_id").to_pylist(), config)
    summary = {"name": cfg.name, "version": version, "ref": f"{cfg.name}@{version}", "strategy": cfg.strategy,
               "config": config, "attribute_runs": used, "exclusions": exclusions,
               "policy_hash": passed.current_policy(store), "pool_records": pool.num_rows + int(drop.sum()),
               "excluded": int(drop.sum()), **_counts(manifest),
               "created_at": dt.datetime.now(dt.UTC).isoformat(),
               "manifest": store.uri(layout.manifest(cfg.name, version))}
    if store.exists(layout.selection(cfg.name, version)):
        return {**store.read_json(layout.selection(cfg.name, version)), "existing": True}
    _publish(store, cfg.name, version, manifest, summary)
    return summary


def derive_without(store: Store, ref: str, drop_ids: set[str], request_id: str) -> dict[str, Any]:
    """The dataset version ``ref`` minus ``drop_ids``, written as a version like any other (for unlearning).

    Its ``selection.json`` records what it came from and which deletion request removed what; the version id
    hashes the remaining ids with that derivation, so re-running yields the same version.
    """
    manifest, selection = load_manifest(store, ref)
    kept = without_ids(manifest, frozenset(drop_ids)).sort_by("record_id")
    derivation = {"from": ref, "request_id": request_id, "removed": manifest.num_rows - kept.num_rows}
    name = selection["name"]
    version = _version(kept.column("record_id").to_pylist(), selection["config"], derivation)
    if store.exists(layout.selection(name, version)):
        return store.read_json(layout.selection(name, version))
    summary = {**selection, "version": version, "ref": f"{name}@{version}", **_counts(kept),
               "derived": [*selection.get("derived", []), derivation],
               "created_at": dt.datetime.now(dt.UTC).isoformat(),
               "manifest": store.uri(layout.manifest(name, version))}
    _publish(store, name, version, kept, summary)
    return summary


def owner_shares(store: Store, ref: str) -> list[tuple[str, int, float]]:
    """Owners of a dataset version's train split with their record counts and shares, closest to 1% first
    (the demo's and the unlearning bench's typical deletion: one owner holding about 1% of the training data)."""
    from collections import Counter

    manifest, _ = load_manifest(store, ref)
    manifest = manifest.filter(pa.array(~is_canary(manifest)))  # the platform's canaries are no one's data
    owners = [o for o, s in zip(manifest.column("owner_id").to_pylist(), manifest.column("split").to_pylist(),
                                strict=True) if s == "train" and o]
    counts = Counter(owners)
    return sorted(((o, n, n / len(owners)) for o, n in counts.items()), key=lambda t: (abs(t[2] - 0.01), t[0]))


def list_datasets(store: Store) -> list[dict[str, Any]]:
    """Every complete dataset version, oldest first."""
    rows = []
    for key in store.list(layout.DATASETS, "selection.json"):
        doc = store.read_json(key)
        rows.append({"name": doc["name"], "version": doc["version"], "strategy": doc["strategy"],
                     "records": doc["records"], **doc["counts"], "created_at": doc["created_at"][:19]})
    return sorted(rows, key=lambda r: r["created_at"])


def load_manifest(store: Store, ref: str) -> tuple[pa.Table, dict[str, Any]]:
    """Manifest and selection summary of ``NAME@VERSION``; clear errors when missing or corrupt."""
    name, version = parse_ref("dataset", ref)
    if not store.exists(layout.selection(name, version)):
        raise NotFound(f"no dataset version {ref}; see `custody datasets`")
    try:
        manifest = store.read_parquet(layout.manifest(name, version))
    except Exception as exc:
        raise Fatal(f"{store.uri(layout.manifest(name, version))} is missing or corrupt: {exc}") from exc
    if "canary" not in manifest.column_names:  # written before canaries existed: it holds none
        manifest = manifest.append_column("canary", pa.array(np.zeros(manifest.num_rows, dtype=bool)))
    missing = set(MANIFEST_SCHEMA.names) - set(manifest.column_names)
    if missing:
        raise Fatal(f"{ref}: manifest lacks columns {sorted(missing)}")
    return manifest, store.read_json(layout.selection(name, version))


def canary_ids(store: Store, ref: str) -> frozenset[str]:
    """The audit canaries in ``NAME@VERSION`` (their record ids): what model cards leave out of data figures."""
    manifest, _ = load_manifest(store, ref)
    return frozenset(np.array(manifest.column("record_id").to_pylist(), dtype=object)[is_canary(manifest)])
