"""Deduplication: exact (content hash) and near-duplicate (MinHash + LSH) clustering.

``minhash`` computes signatures in batches (Arrow shingling, the ``rensa`` library's MinHash); ``clusters`` and
``sharded`` group records into exact and near-duplicate clusters, streaming the store, and keep the membership,
not just a drop list, so deletions can follow the text into its copies. Short texts need finer pieces: ``copies``
finds lightly edited copies by character shingles (an index written at ingest, searched when a deletion resolves)
and ``withdrawn`` finds them among new rows from a deletion's fingerprints alone.
"""

from tasks.dedup.clusters import ClusterStats, cluster_records
from tasks.dedup.minhash import MinhashConfig, estimate_jaccard, shingles, signatures

__all__ = ["ClusterStats", "MinhashConfig", "cluster_records", "estimate_jaccard", "shingles", "signatures"]
