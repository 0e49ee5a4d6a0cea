"""Training-data transparency documents, filled from the ledger rather than by hand.

- ``summary``: the EU AI Act public summary of a model version's training content (the Commission's template);
- ``croissant``: a dataset version as Croissant 1.1 with the Responsible-AI vocabulary (checked by mlcroissant);
- ``spdx``: a dataset version as SPDX 3.0.1 Dataset packages (checked by the SPDX 3.0.1 Python bindings);
- ``facts``: what all three are filled from; ``publish``: writing them under ``reports/transparency/``.

``custody summary --model NAME@VERSION`` and ``custody export --dataset NAME@VERSION --format croissant|spdx``.
"""

from tasks.transparency.publish import FILES, export_dataset, refresh_after_certificate, write_summary

__all__ = ["FILES", "export_dataset", "refresh_after_certificate", "write_summary"]
