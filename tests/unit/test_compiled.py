"""pipeline.compiled: the booking plan's modules run compiled, never older than their source."""

from __future__ import annotations

import importlib
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import cli, compiled


def test_the_plan_modules_run_compiled_unless_the_install_said_not_to() -> None:
    # CI installs with the default: the suite then tests the code the worker runs.
    plain = os.environ.get("USAGE_PIPELINE_COMPILE") == "0"
    for source in compiled.SOURCES:
        module = importlib.import_module(source.removesuffix(".py").replace("/", "."))
        assert str(module.__file__).endswith(".py") == plain, module.__file__


def _module(root: Path, source_age: float, extension_age: float | None) -> str:
    source = root / "pkg" / "mod.py"
    source.parent.mkdir(exist_ok=True)
    source.write_text("X = 1\n")
    os.utime(source, (source_age, source_age))
    if extension_age is not None:
        extension = source.with_name("mod" + EXTENSION_SUFFIXES[0])
        extension.write_bytes(b"")
        os.utime(extension, (extension_age, extension_age))
    return "pkg/mod.py"


def test_a_source_changed_after_its_build_is_stale(tmp_path: Path) -> None:
    name = _module(tmp_path, source_age=2_000_000, extension_age=1_000_000)
    assert compiled.stale(tmp_path, (name,)) == [name]


def test_a_build_newer_than_its_source_or_no_build_is_not_stale(tmp_path: Path) -> None:
    name = _module(tmp_path, source_age=1_000_000, extension_age=2_000_000)
    assert compiled.stale(tmp_path, (name,)) == []
    (tmp_path / "pkg" / ("mod" + EXTENSION_SUFFIXES[0])).unlink()
    assert compiled.stale(tmp_path, (name,)) == []


def test_the_cli_refuses_to_run_a_stale_build_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "stale", lambda: ["pipeline/core/plan.py"])
    result = CliRunner().invoke(cli.main, ["db", "migrate"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: compiled before their source last changed: pipeline/core/plan.py (the old "
        "build would run); run `make dev` (or `pip install -e .`) to compile again"
    ]
