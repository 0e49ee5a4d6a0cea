"""Prefect flows: thin compositions of ``tasks`` functions over URIs; ``launch`` starts them, ``cli`` is the
``custody`` command."""
