"""A deletion request through unlearning: the state machine from ``applied`` to ``certified``.

``unlearn_request`` applies the request if it is still open (``tasks.deletion``), then, under the unlearning lock,
runs ``unlearn_version`` for every registered version that learned the records (lineage), moves the request to
``unlearned`` and certifies it (``tasks.certificate``). For one version: build the judged sets, make the
candidate and the oracle, then try the attempts in order (``methods.attempts``) until one passes the gate; the
result is written under ``reports/deletions/<request-id>/models/`` before promotion, so a run killed at any point
is finished by re-running it, and a certified request is returned as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks import layout
from tasks import model_registry as registry
from tasks.certificate import SUMMARY_FIELDS, certify
from tasks.config import get_settings
from tasks.deletion import requests
from tasks.deletion.apply import process_pending
from tasks.deletion.locks import store_lock
from tasks.lineage import build_index, query
from tasks.storage import Store
from tasks.training import version_doc
from tasks.unlearning.base import UnlearnConfig
from tasks.unlearning.gate import assessment, judge
from tasks.unlearning.methods import BY_NAME, ORACLE, SECOND_ORACLE, attempts, resolve_method
from tasks.unlearning.sets import judged_sets

LOCK_TIMEOUT = 3600.0  # seconds a run waits for another one unlearning (they are serialised)


def affected_versions(store: Store, record_ids: list[str]) -> list[str]:
    """Registered versions (``NAME@VERSION``) whose dataset holds any of ``record_ids``, oldest first."""
    build_index(store, get_settings().mlflow_tracking_uri)
    models = query(store, record_ids=record_ids)["models"]
    return [registry.ref_of(m["model"], m["model_version"])
            for m in sorted(models, key=lambda m: (m["model"], int(m["model_version"])))]


def unlearn_version(store: Store, request: dict[str, Any], source_ref: str, ucfg: UnlearnConfig) -> dict[str, Any]:
    """Candidate → evaluation against the oracle → gate → promotion (or exact fallback) for one version."""
    request_id = request["request_id"]
    key = layout.model_result(request_id, source_ref)
    if store.exists(key):
        return _promoted(store, request_id, key, store.read_json(key))
    tags = registry.tags(source_ref)
    if tags.get(registry.ROLE_TAG) == registry.ORACLE or tags.get(registry.STATUS_TAG) in registry.NEVER_SERVED:
        result = {"source": source_ref, "action": "retired", "note": "never served; nothing to unlearn",
                  "aliases_removed": registry.retire(source_ref, tags.get(registry.STATUS_TAG) or registry.RETIRED,
                                                     request_id)}
        store.write_json(key, result)
        return result
    sets = judged_sets(store, request, source_ref, ucfg.retain_sample)
    if not sets.forget.ids:
        result = {"source": source_ref, "action": "none", "dataset": sets.selection["ref"],
                  "note": "the deleted records were only held out (validation/test), never trained on"}
        store.write_json(key, result)
        return result
    method = resolve_method(ucfg.method, sets.sharded, sets.cfg.is_lm)
    candidate = BY_NAME[method].run(store, request, source_ref, sets, ucfg)
    oracle = candidate if method == ORACLE else BY_NAME[ORACLE].run(store, request, source_ref, sets, ucfg,
                                                                    role=registry.ORACLE)
    evaluations = {"source": assessment(store, request_id, source_ref, sets, ucfg.mink_sample),
                   "oracle": assessment(store, request_id, oracle, sets, ucfg.mink_sample)}
    if ucfg.oracle_seeds == 2:
        second = SECOND_ORACLE.run(store, request, source_ref, sets, ucfg, role=registry.ORACLE)
        evaluations["second_oracle"] = assessment(store, request_id, second, sets, ucfg.mink_sample)
    steps = []
    for attempt in attempts(method, sets.sharded):
        ref = {method: candidate, ORACLE: oracle}.get(attempt) or BY_NAME[attempt].run(store, request, source_ref,
                                                                                      sets, ucfg)
        steps.append(judge(store, request_id, ref, attempt, BY_NAME[attempt].exact, sets, evaluations, ucfg.gate,
                           ucfg.mink_sample))
        if steps[-1]["gate"]["passed"]:
            break
        registry.retire(ref, registry.REJECTED, request_id)
    result = {"source": source_ref, "action": "unlearned", "dataset": sets.selection["ref"],
              "source_dataset": version_doc(store, source_ref)["dataset"], "forget_records": len(sets.forget.ids),
              "requested_method": method, "final": steps[-1]["version"], "final_method": steps[-1]["method"],
              "fell_back": len(steps) > 1, "aliases_moved": registry.aliases(source_ref), "promoted": False,
              "oracle": oracle, "steps": steps, "evaluations": evaluations}
    store.write_json(key, result)  # before promotion: a re-run after a crash finishes it from here
    return _promoted(store, request_id, key, result)


def _promoted(store: Store, request_id: str, key: str, result: dict[str, Any]) -> dict[str, Any]:
    """Promote an unlearned version not yet promoted (the last step; idempotent), and record that it was."""
    if result["action"] == "unlearned" and not result["promoted"]:
        registry.promote(result["source"], result["final"], result["aliases_moved"], request_id)
        result = {**result, "promoted": True}
        store.write_json(key, result)
    return result


def unlearn_request(store: Store, request_id: str, ucfg: UnlearnConfig,
                    on_version: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Apply (if still open), unlearn every affected version, then certify; safe to re-run after a crash.

    ``on_version`` receives each version's result as it is done (progress for a caller).
    """
    doc = requests.load(store, request_id)
    if doc["status"] in requests.OPEN:
        process_pending(store, request_id)
        doc = requests.load(store, request_id)
    if doc["status"] == requests.CERTIFIED:
        return doc
    with store_lock(store, layout.UNLEARN_LOCK, timeout=LOCK_TIMEOUT):
        doc = requests.load(store, request_id)  # another run (event, sweep, CLI) may have finished it meanwhile
        if doc["status"] == requests.CERTIFIED:
            return doc
        results = []
        for ref in affected_versions(store, doc["resolved"]["record_ids"]) if doc["resolved"]["record_ids"] else []:
            results.append(unlearn_version(store, doc, ref, ucfg))
            if on_version:
                on_version(results[-1])
        if doc["status"] == requests.APPLIED:
            doc = requests.set_status(store, doc, requests.UNLEARNED,
                                      unlearned=[{k: r.get(k) for k in SUMMARY_FIELDS} for r in results])
        return certify(store, doc, results)
