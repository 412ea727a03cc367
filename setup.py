"""The booking plan's modules compiled with mypyc (`pipeline.compiled` lists them); the rest
of the package's description is in pyproject.toml. USAGE_PIPELINE_COMPILE=0 installs without
compiling them (what an earlier install compiled stays beside the sources, and is imported)."""

import os
import runpy

from setuptools import setup


def ext_modules() -> list[object]:
    if os.environ.get("USAGE_PIPELINE_COMPILE", "1") == "0":
        return []
    from mypyc.build import mypycify

    sources = runpy.run_path("pipeline/compiled.py")["SOURCES"]
    # The support library they share inside the package (pipeline/core__mypyc.*.so), not a
    # top-level module: an editable install that leaves out the compiling still finds it.
    return list(mypycify(list(sources), opt_level="3", group_name="pipeline.core"))


setup(ext_modules=ext_modules())
