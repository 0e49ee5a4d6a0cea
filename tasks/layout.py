"""The store's layout: every key the platform reads or writes is built and parsed here, and nowhere else.

One root (``file://`` or ``s3://``) holds everything; keys are relative to it. Partitioned prefixes use Hive-style
``source=<name>`` folders so a source's files sit together, and every partition of a source is named by the raw
file it came from (its *file id*), so a record can be followed from ``raw/`` to ``records/``, its verdicts, its
attributes and its markers by one name. ``docs/layout.md`` shows the same tree; a test holds the two together.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

# top-level prefixes: one per kind of thing stored
RAW = "raw"
STAGING = "staging"
RECORDS = "records"
QUARANTINE = "quarantine"
DEDUP = "dedup"
VALIDATION = "validation"
ATTRIBUTES = "attributes"
DATASETS = "datasets"
MODELS = "models"
LEDGER = "ledger"
REPORTS = "reports"
LINEAGE = "lineage"
LOCATOR = "locator"
DONE = "_done"
PREFIXES = (RAW, STAGING, RECORDS, QUARANTINE, DEDUP, VALIDATION, ATTRIBUTES, DATASETS, MODELS, LEDGER, REPORTS,
            LINEAGE, LOCATOR, DONE)
# prefixes whose Parquet rows carry record ids or content hashes: a purge rewrites them
PURGED_PREFIXES = (RECORDS, STAGING, QUARANTINE, VALIDATION, ATTRIBUTES, DEDUP, REPORTS)  # reports: flagged snippets

DATASHEET_FILE = "source.yaml"
RECORD_PART_PREFIX = "part-"
PARQUET = ".parquet"
ARROW = ".arrow"  # Arrow IPC: files mapped, bisected or patched in place (copy index, locator, signatures)


@dataclass(frozen=True)
class Partition:
    """One partition of a source: ``name`` is the records file's stem (``part-<file id>``)."""

    source: str
    name: str

    @property
    def file_id(self) -> str:
        return self.name.removeprefix(RECORD_PART_PREFIX)


def _source_dir(prefix: str, source: str) -> str:
    return f"{prefix}/source={source}"


def _stem(key: str, suffix: str) -> str:
    return posixpath.basename(key).removesuffix(suffix)


def source_of(key: str) -> str:
    """The source named by a key's ``source=<name>`` folder (any partitioned prefix)."""
    for part in key.split("/"):
        if part.startswith("source="):
            return part.removeprefix("source=")
    raise ValueError(f"{key!r} has no source= folder")


# -- raw/ : files as delivered, one folder per source, with its datasheet ----------------------------------------
def raw_dir(source: str | None = None) -> str:
    return f"{RAW}/{source}" if source else RAW


def raw_file(source: str, relative: str) -> str:
    return f"{RAW}/{source}/{relative}"


def raw_source(key: str) -> str:
    """The source a raw file belongs to (``raw/<source>/...``)."""
    return key.removeprefix(f"{RAW}/").split("/", 1)[0]


def raw_relative(source: str, key: str) -> str:
    """A raw file's path inside its source folder (what its file id is made from)."""
    return key.removeprefix(f"{RAW}/{source}/")


def datasheet(source: str) -> str:
    return raw_file(source, DATASHEET_FILE)


def is_datasheet(key: str) -> bool:
    return key.endswith("/" + DATASHEET_FILE)


# -- staging/ and records/ ----------------------------------------------------------------------------------------
def staging_dir(source: str | None = None) -> str:
    return _source_dir(STAGING, source) if source else STAGING


def staging(source: str, file_id: str) -> str:
    return f"{staging_dir(source)}/{file_id}{PARQUET}"


# rows per row group of every Parquet file the store writes (``Store.write_parquet``): a purge encodes again only
# the groups that lose a row (``tasks.splice``), so the smaller they are the less it re-encodes, and the copy index
# names each staged row's group, so a deletion's copy search reads only its candidates' groups; rewrites keep every
# group where it was. 2,048: a purge of 10 rows from a partition of 100k re-encodes ~20% of each file, and a footer
# of 49 groups is walked in ~8 ms (bench/README.md, "Deletions at 10M (2026-12-06)")
GROUP_ROWS = 2048


def staged_partition(key: str) -> tuple[str, str]:
    """``(source, file id)`` of a staging key."""
    return source_of(key), _stem(key, PARQUET)


def records_dir(source: str | None = None) -> str:
    return _source_dir(RECORDS, source) if source else RECORDS


def records(source: str, file_id: str) -> str:
    return f"{records_dir(source)}/{RECORD_PART_PREFIX}{file_id}{PARQUET}"


def partition_of(records_key: str) -> Partition:
    """The partition a ``records/`` key holds."""
    return Partition(source_of(records_key), _stem(records_key, PARQUET))


def partition_key(part: Partition) -> str:
    return records(part.source, part.file_id)


def locator(source: str, file_id: str) -> str:
    """The deletion locator of a partition (``tasks.deletion.locator``): which keys its rows have (Arrow IPC)."""
    return f"{_source_dir(LOCATOR, source)}/{file_id}{ARROW}"


def locator_before_ipc(source: str, file_id: str) -> str:
    """Where stores ingested before 2026-12-05 kept a partition's locator (Parquet): converted when first read."""
    return f"{_source_dir(LOCATOR, source)}/{file_id}{PARQUET}"


def partition_named(key: str) -> tuple[str, str] | None:
    """``(source, stem)`` of a file named by its partition, under any prefix: the stem is the file id with the
    prefix's decoration (``part-``, ``ingest-``, a validation quarantine's policy) as ``partition_stems`` lists it;
    None for a whole-store file (no ``source=`` folder, or a scorer's ``all`` table)."""
    if "/source=" not in key or posixpath.basename(key) == f"all{PARQUET}":
        return None
    stem = _stem(key, PARQUET)
    return source_of(key), stem.rpartition(".")[0] if stem.startswith("validate-") else stem


def partition_stems(file_id: str) -> set[str]:
    """Every stem a partition's files have (see ``partition_named``)."""
    part = RECORD_PART_PREFIX + file_id
    return {file_id, part, f"ingest-{file_id}", f"dedup-{file_id}", f"validate-{part}"}


# -- quarantine/ : rejected rows with reasons, one file per stage and partition -------------------------------------
def quarantine_dir(source: str | None = None) -> str:
    return _source_dir(QUARANTINE, source) if source else QUARANTINE


def quarantine(source: str, stage: str, file_id: str) -> str:
    """Ingest-time quarantine (``stage`` is ``ingest`` or ``dedup``)."""
    return f"{quarantine_dir(source)}/{stage}-{file_id}{PARQUET}"


def validation_quarantine(part: Partition, policy_hash: str) -> str:
    return f"{quarantine_dir(part.source)}/validate-{part.name}.{policy_hash}{PARQUET}"


def is_validation_quarantine_of(key: str, part: Partition) -> bool:
    """True for any policy's validation quarantine file of ``part`` (older policies' files retire)."""
    return source_of(key) == part.source and posixpath.basename(key).startswith(f"validate-{part.name}.")


# -- dedup/ : a folder per kind, with one file per staging partition, named as staging --------------------------------
SIGNATURES, CLUSTERS, ID_CONFLICTS, DEDUP_STATS = "signatures", "clusters", "id_conflicts", f"{DEDUP}/stats.json"


def dedup_part(kind: str, source: str | None = None, file_id: str | None = None) -> str:
    """A staging partition's file of ``kind`` (CLUSTERS, ID_CONFLICTS; SIGNATURES before 2026-12-06); their folder
    without ``source``."""
    return f"{_source_dir(f'{DEDUP}/{kind}', source)}/{file_id}{PARQUET}" if source else f"{DEDUP}/{kind}"


def signatures(source: str, file_id: str) -> str:
    """A staging partition's MinHash band keys (Arrow IPC, ``tasks.dedup.signature_files``)."""
    return f"{_source_dir(f'{DEDUP}/{SIGNATURES}', source)}/{file_id}{ARROW}"


COPIES = f"{DEDUP}/copies"


def copies(source: str, file_id: str) -> str:
    """The copy index of a staging partition: LSH band keys of its rows' character shingles (Arrow IPC)."""
    return f"{_source_dir(COPIES, source)}/{file_id}{ARROW}"


def copies_before_ipc(source: str, file_id: str) -> str:
    """Where stores ingested before 2026-12-05 kept a partition's copy index (Parquet): removed when it is rebuilt."""
    return f"{_source_dir(COPIES, source)}/{file_id}{PARQUET}"


# -- validation/ -----------------------------------------------------------------------------------------------------
CURRENT_POLICY = f"{VALIDATION}/current.json"


def verdicts_dir(policy_hash: str) -> str:
    return f"{VALIDATION}/{policy_hash}"


def verdicts(policy_hash: str, part: Partition) -> str:
    return f"{_source_dir(verdicts_dir(policy_hash), part.source)}/{part.name}{PARQUET}"


def validation_report(policy_hash: str, part: Partition) -> str:
    return f"{_source_dir(f'{REPORTS}/{VALIDATION}/{policy_hash}', part.source)}/{part.name}.json"


def validation_suite(policy_hash: str) -> str:
    return f"{REPORTS}/{VALIDATION}/{policy_hash}/suite.json"


# -- _done/ : completion markers, written last ----------------------------------------------------------------------
def ingest_markers(step: str) -> str:
    """The folder of every source's ``step`` markers (``parse`` or ``publish``)."""
    return f"{DONE}/{step}"


def ingest_marker(step: str, source: str, file_id: str) -> str:
    """``step`` is ``parse`` or ``publish``."""
    return f"{_source_dir(ingest_markers(step), source)}/{file_id}.json"


def validation_marker(policy_hash: str, part: Partition) -> str:
    return f"{_source_dir(f'{DONE}/validate/{policy_hash}', part.source)}/{part.name}.json"


def score_marker(scorer: str, run_id: str, part: Partition) -> str:
    return f"{_source_dir(f'{DONE}/score/{scorer}/{run_id}', part.source)}/{part.name}.json"


# -- attributes/ : scores beside records, one folder per scorer run ------------------------------------------------
def scorer_dir(scorer: str) -> str:
    return f"{ATTRIBUTES}/{scorer}"


def attribute_run_dir(scorer: str, run_id: str) -> str:
    return f"{ATTRIBUTES}/{scorer}/{run_id}"


def attribute(scorer: str, run_id: str, part: Partition) -> str:
    """One partition's scores."""
    return f"{_source_dir(attribute_run_dir(scorer, run_id), part.source)}/{part.name}{PARQUET}"


def attribute_whole(scorer: str, run_id: str, source: str | None = None) -> str:
    """Scores of a scorer that works on the whole store (or one source) at once."""
    folder = _source_dir(attribute_run_dir(scorer, run_id), source) if source else attribute_run_dir(scorer, run_id)
    return f"{folder}/all{PARQUET}"


def attribute_run(scorer: str, run_id: str) -> str:
    return f"{attribute_run_dir(scorer, run_id)}/run.json"


def attribute_failures(scorer: str, run_id: str) -> str:
    return f"{attribute_run_dir(scorer, run_id)}/failures.json"


def attribute_checkpoints(scorer: str, run_id: str) -> str:
    return f"{attribute_run_dir(scorer, run_id)}/checkpoints.safetensors"


def latest_attribute_run(scorer: str) -> str:
    return f"{scorer_dir(scorer)}/latest.json"


def scoring_report(run_id: str, name: str) -> str:
    return f"{REPORTS}/scoring/{run_id}/{name}"


# -- datasets/ and models/ -------------------------------------------------------------------------------------------
def dataset_dir(name: str, version: str) -> str:
    return f"{DATASETS}/{name}/{version}"


def manifest(name: str, version: str) -> str:
    return f"{dataset_dir(name, version)}/manifest{PARQUET}"


def selection(name: str, version: str) -> str:
    return f"{dataset_dir(name, version)}/selection.json"


def is_manifest(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[0] == DATASETS and parts[3] == f"manifest{PARQUET}"


def is_selection(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 4 and parts[0] == DATASETS and parts[3] == "selection.json"


def dataset_of(key: str) -> tuple[str, str]:
    """``(name, version)`` of a key under ``datasets/<name>/<version>/``."""
    _, name, version, *_ = key.split("/")
    return name, version


def selection_report(name: str, version: str, file: str) -> str:
    return f"{REPORTS}/selection/{name}/{version}/{file}"


def model_dir(name: str, version: str) -> str:
    return f"{MODELS}/{name}/{version}"


def model_doc(name: str, version: str) -> str:
    return f"{model_dir(name, version)}/model.json"


def model_losses(name: str, version: str) -> str:
    return f"{model_dir(name, version)}/per_example_losses{PARQUET}"


# -- ledger/ : deletion requests, tombstones, the short-lived vault, locks ------------------------------------------
REQUESTS = f"{LEDGER}/deletions"
TOMBSTONES = f"{LEDGER}/tombstones"
TOMBSTONES_COMPACTED = f"{LEDGER}/tombstones-compacted{PARQUET}"  # many requests' tombstones in one file: a cache
FINGERPRINTS_COMPACTED = f"{LEDGER}/fingerprints-compacted{PARQUET}"  # and fingerprints (tasks/deletion/compacted.py)
VAULT = f"{LEDGER}/vault"
FINGERPRINTS = f"{LEDGER}/fingerprints"
FINGERPRINT_SALT = f"{LEDGER}/fingerprint-salt.bin"
APPLY_LOCK = f"{LEDGER}/apply.lock"
CANARIES = f"{LEDGER}/canaries.json"  # the current audit-canary generation (tasks/canaries.py); no text
UNLEARN_LOCK = f"{LEDGER}/unlearn.lock"


def request(request_id: str) -> str:
    return f"{REQUESTS}/{request_id}.json"


def request_id_of(key: str) -> str:
    """The request id a ``request`` key names."""
    return _stem(key, ".json")


def tombstones(request_id: str) -> str:
    return f"{TOMBSTONES}/{request_id}{PARQUET}"


def ledger_request(key: str) -> str:
    """The request id a per-request ledger file (``tombstones``, ``fingerprints``) names."""
    return _stem(key, PARQUET)


def vault(request_id: str) -> str:
    return f"{VAULT}/{request_id}{PARQUET}"


def fingerprints(request_id: str) -> str:
    return f"{FINGERPRINTS}/{request_id}{PARQUET}"


# -- reports/deletions/ : certificates and what they are made of ----------------------------------------------------
DELETION_REPORTS = f"{REPORTS}/deletions"


def deletion_report_dir(request_id: str) -> str:
    return f"{DELETION_REPORTS}/{request_id}"


def deletion_report(request_id: str, file: str) -> str:
    """``certificate.json``, ``certificate.md``, ``per_record_scores.png``, ``verification.json`` of one request."""
    return f"{deletion_report_dir(request_id)}/{file}"


def _model_file(ref: str) -> str:
    return ref.replace("@", "-v") + ".json"


def assessment(request_id: str, model_ref: str) -> str:
    return f"{deletion_report_dir(request_id)}/assessments/{_model_file(model_ref)}"


def model_result(request_id: str, model_ref: str) -> str:
    return f"{deletion_report_dir(request_id)}/models/{_model_file(model_ref)}"


# -- reports/transparency/ : public documents about training content (tasks/transparency) ---------------------------
TRANSPARENCY = f"{REPORTS}/transparency"


def model_summary(name: str, version: str, file: str) -> str:
    """``summary.json`` or ``summary.md`` of a registered model version: the EU AI Act public summary."""
    return f"{TRANSPARENCY}/models/{name}/{version}/{file}"


def dataset_export(name: str, version: str, file: str) -> str:
    """``croissant.json`` or ``spdx.json`` of a dataset version."""
    return f"{TRANSPARENCY}/datasets/{name}/{version}/{file}"


# -- lineage/ : the derived index ------------------------------------------------------------------------------------
LINEAGE_SUMMARY = f"{LINEAGE}/index.json"
RECORD_DATASETS = f"{LINEAGE}/record_datasets{PARQUET}"
DATASET_MODELS = f"{LINEAGE}/dataset_models{PARQUET}"
