"""Unlearning a deletion request from every registered model that learned it, judged against the oracle.

For a request (already applied: tombstoned, purged, its forget texts in the vault), lineage names each
registered model version whose dataset holds the deleted records. For each live version (``request``):

1. **candidate** (``sets``, then one module per method behind ``base.Method``): a new version without the
   records, by
   - ``sisa``: retrain only the shards that held deleted records (exact; shards follow owners);
   - ``retrain``: train from scratch on the dataset minus the records (exact; this is also the oracle);
   - ``neggrad_plus``: gradient ascent on the forget set with descent on the retain set (GradDiff for a language
     model);
   - ``npo``: negative preference optimisation (Zhang et al., 2024) with a retain term;
   - ``scrub``: teacher–student SCRUB (Kurmanji et al., 2023), classifiers only.
   The approximate methods share one loop (``steps``). The derived dataset version (minus the records) is
   written like any other.
2. **evaluation** (``gate``, with ``tasks.evaluation``): the candidate against the oracle (a registered retrain,
   tagged ``custody.role=oracle``, never served) and the source, on the forget set, a retain sample and test.
3. **promotion** (``tasks.model_registry``): when the gate passes the candidate takes the source's aliases; when
   it fails the next exact method takes over (SISA for sharded models, else the oracle itself), and the report
   says so. The source, the rejected candidate and any other version holding the records lose every alias and
   are tagged ``custody.status`` retired/rejected, never served again.

Every step writes its result under ``reports/deletions/<request-id>/`` and tags what it registers, so a
process killed mid-way is finished by re-running. Then the request moves to ``unlearned``; the certificate
is written (``tasks.certificate``), the vault destroyed, and the request is ``certified``.
"""

from tasks.unlearning.base import METHODS, UnlearnConfig
from tasks.unlearning.gate import GateConfig
from tasks.unlearning.request import unlearn_request, unlearn_version

__all__ = ["METHODS", "GateConfig", "UnlearnConfig", "unlearn_request", "unlearn_version"]
