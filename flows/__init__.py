"""Prefect flows: thin compositions of ``tasks`` functions over URIs, plus the ``custody`` CLI."""
