"""Deletion: requests that are never lost, resolved through content, tombstoned at once, purged physically.

One module per step, in the order a request goes through them (see each module's docstring):

- ``selector``: what a request deletes by (owner, record ids, source, texts as hashes), and its event;
- ``requests``: submit (durable before anything else), load, list, statuses, pending and overdue purges;
- ``locator``: which partitions hold a record id, a content hash or an owner (written at ingest);
- ``resolve``: the selectors of open requests to record ids together, following the text into exact and near
  copies, reading only the located partitions;
- ``vault``: the short-lived copy of the texts models learned, for unlearning;
- ``tombstones``: the ids every read leaves out from then on;
- ``blocklist``: what every later ingest refuses from the moment a request is received (a standing rule);
- ``purge``: the rows removed from Parquet partitions, the quarantine and the raw files (ingested or not);
- ``apply``: the soft step for every open request, once, under ``locks.store_lock``: unreadable at once;
- ``batch``: the hard step, one purge pass over the partitions of every request applied since the last one;
- ``listing``: requests as people read them;
- ``verify`` (with ``scan_files``, ``scan_sources``): afterwards, every byte the platform wrote scanned for the
  deleted texts by their fingerprints (``custody verify-deletion``).

Nothing is re-exported here: importing one step never loads the others.
"""
