"""Usage-and-credit pipeline: usage events in, exact money out."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
"""The checkout the package runs from: its `sql/`, `data/` and `deploy/`."""
