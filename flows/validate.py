"""Validation flow: the provenance policy's GX suite over every record partition, in parallel on Dask.

Run it with ``custody validate [--policy FILE]``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe, track_futures
from tasks import layout, provenance
from tasks.deletion.tombstones import tombstoned_ids
from tasks.passed import partitions
from tasks.policy import Policy
from tasks.storage import Store

validate_partition = task(text_safe(provenance.validate_partition), name="validate-partition", cache_policy=NONE)


def per_source(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checked, passed and rejected counts (by reason) summed per source."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for stat in stats:
        for key, value in stat.items():
            if isinstance(value, int) and not isinstance(value, bool):
                rows[stat["source"]][key] += value
    return [{"source": s, **dict(r)} for s, r in sorted(rows.items())]


@flow(name="validate")
def validate_flow(policy: Policy) -> dict[str, Any]:
    """Validate every record partition against ``policy`` and make it the current policy."""
    store = Store.from_settings()
    tombstoned = tombstoned_ids(store)
    keys = [layout.partition_key(p) for p in partitions(store)]
    stats = track_futures([validate_partition.submit(store, key, policy, tombstoned) for key in keys],
                          f"validate ({policy.name})")
    provenance.mark_current(store, policy, stats)
    table = per_source(stats)
    create_table_artifact(key="validation-summary", table=table,
                          description=f"Policy {policy.name} ({policy.hash}): records checked, passed, rejected")
    reasons = sorted({k for row in table for k in row if k.startswith("rejected_")})
    lines = [f"# Validation under policy `{policy.name}` ({policy.purpose}, hash `{policy.hash}`)", "",
             "| source | checked | passed | " + " | ".join(r.removeprefix("rejected_") for r in reasons) + " |",
             "|---" * (3 + len(reasons)) + "|"]
    lines += [f"| {r['source']} | {r['checked']} | {r['passed']} | " + " | ".join(str(r.get(k, 0)) for k in reasons)
              + " |" for r in table]
    create_markdown_artifact(key="validation-report", markdown="\n".join(lines))
    return {"policy": policy.name, "policy_hash": policy.hash, "sources": table}
