"""The booking plan's modules, compiled with mypyc when the package is installed (setup.py),
and the check that none of them runs older than its source.

They are pure, typed and run once or more per event (planning is the largest of our
stages: docs/benchmarks.md, the lever row on mypyc). A compiled module is an extension module beside
its source, and Python imports the extension first, so a source edited or checked out
after the install would not run at all: `stale` names such sources, and the CLI and the
test session refuse to start with one. USAGE_PIPELINE_COMPILE=0 installs without compiling.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SOURCES = (
    "pipeline/core/alerts.py",
    "pipeline/core/deduction.py",
    "pipeline/core/plan.py",
    "pipeline/core/pricing.py",
    "pipeline/core/rollup.py",
    "pipeline/core/tariff.py",
)


def extension_of(source: Path) -> Path | None:
    """The extension module Python imports instead of `source`, if there is one."""
    stem = source.with_suffix("")
    for suffix in EXTENSION_SUFFIXES:
        extension = stem.with_name(stem.name + suffix)
        if extension.exists():
            return extension
    return None


def stale(root: Path = ROOT, sources: tuple[str, ...] = SOURCES) -> list[str]:
    """The sources changed after their extension module was built (it would run instead)."""
    found = []
    for name in sources:
        source = root / name
        extension = extension_of(source)
        if extension is not None and source.stat().st_mtime > extension.stat().st_mtime:
            found.append(name)
    return found


def stale_message(names: list[str]) -> str:
    return (
        f"compiled before their source last changed: {', '.join(names)} (the old build would "
        "run); run `make dev` (or `pip install -e .`) to compile again"
    )
