"""The store layout: docs/layout.md and tasks/layout.py describe the same keys, and keys parse back."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tasks import layout

DOC = Path(__file__).resolve().parents[1] / "docs" / "layout.md"
PART = layout.Partition("<source>", f"{layout.RECORD_PART_PREFIX}<file_id>")


def _calls(fn: object) -> list[str]:
    """Every key ``fn`` builds from placeholder arguments (optional arguments both left out and given)."""
    params = inspect.signature(fn).parameters.values()
    full = {p.name: PART if p.annotation in ("Partition", "layout.Partition") else f"<{p.name}>" for p in params}
    required = {k: v for k, v in full.items() if inspect.signature(fn).parameters[k].default is inspect._empty}
    return [fn(**args) for args in (full, required)]


def module_templates() -> set[str]:
    """Keys the layout module can build; a directory is left out when the keys under it are listed."""
    found: set[str] = set()
    for name, value in vars(layout).items():
        if name.startswith("_") or name.startswith(("is_", "source_of", "raw_relative", "staged_partition",
                                                    "partition_of", "dataset_of")):
            continue
        if isinstance(value, str):
            found.add(value)
        elif inspect.isfunction(value) and value.__module__ == layout.__name__:
            found.update(k for k in _calls(value) if isinstance(k, str))
    keys = {k for k in found if k.split("/")[0] in layout.PREFIXES}
    return {k for k in keys if not any(other.startswith(k + "/") for other in keys)}


def doc_templates() -> set[str]:
    block = re.search(r"```text\n(.*?)```", DOC.read_text(), re.S)
    assert block, f"{DOC} has no ```text block with the layout"
    return {line.split()[0] for line in block.group(1).splitlines() if line.strip()}


def test_document_and_module_list_the_same_keys() -> None:
    module, doc = module_templates(), doc_templates()
    assert not module - doc, f"built by tasks/layout.py, missing from {DOC.name}: {sorted(module - doc)}"
    assert not doc - module, f"in {DOC.name}, built by no function of tasks/layout.py: {sorted(doc - module)}"


def test_every_top_level_prefix_is_documented() -> None:
    documented = {t.split("/")[0] for t in doc_templates()}
    assert documented == set(layout.PREFIXES)


def test_partition_keys_parse_back() -> None:
    key = layout.records("news", "0001.jsonl-ab12cd34")
    part = layout.partition_of(key)
    assert part == layout.Partition("news", "part-0001.jsonl-ab12cd34")
    assert part.file_id == "0001.jsonl-ab12cd34"
    assert layout.partition_key(part) == key
    assert layout.staged_partition(layout.staging("news", "f-1")) == ("news", "f-1")
    assert layout.dataset_of(layout.manifest("reviews", "v3")) == ("reviews", "v3")
    assert layout.is_manifest(layout.manifest("reviews", "v3"))
    assert not layout.is_manifest(layout.selection("reviews", "v3"))


def test_validation_quarantine_of_a_partition_matches_only_it() -> None:
    part = layout.Partition("news", "part-a")
    other = layout.Partition("news", "part-ab")
    assert layout.is_validation_quarantine_of(layout.validation_quarantine(part, "h1"), part)
    assert not layout.is_validation_quarantine_of(layout.validation_quarantine(other, "h1"), part)


def test_a_key_without_a_source_folder_is_refused() -> None:
    with pytest.raises(ValueError, match="source="):
        layout.source_of("dedup/clusters.parquet")
