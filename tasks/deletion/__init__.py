"""Deletion: requests that are never lost, resolved through content, tombstoned at once, purged physically.

One module per step, in the order a request goes through them (see each module's docstring):

- ``selector``: what a request deletes by (owner, record ids, source, texts as hashes), and its event;
- ``requests``: submit (durable before anything else), load, list, statuses;
- ``resolve``: the selector to record ids, following the text into exact and near copies;
- ``vault``: the short-lived copy of the texts models learned, for unlearning;
- ``tombstones``: the ids every read leaves out from then on;
- ``purge``: the rows removed from Parquet partitions and from the raw files;
- ``apply``: the steps above for every open request, once, under ``locks.store_lock``;
- ``listing``: requests as people read them.

Nothing is re-exported here: importing one step never loads the others.
"""
