"""Custody domain code: plain Python over URIs and Arrow tables, importable without Prefect.

Each stage is one module (``ingest``, ``dedup``, ...); the shared core is ``config``, ``storage``, ``ids``
and ``errors``. Flows in ``flows/`` compose these functions and add orchestration.
"""
