"""The JVM toolchain of the local broker: a Java 17+ runtime and Maven to fetch the jars.

Maven resolves `deploy/kafka/pom.xml` into its local repository (~/.m2 unless configured)
and writes the broker's classpath. The classpath is cached in the state directory keyed
by the POM's hash, so a warm start runs no Maven at all and a changed POM resolves again.
A missing or too old tool is a one-line `ToolMissing` that says how to install it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import REPOSITORY
from pipeline.ops.devstack.stack_errors import INSTALL_HINT, StackError, ToolMissing
from pipeline.ops.devstack.state import StackPaths, write_atomically

DEFAULT_POM = REPOSITORY / "deploy" / "kafka" / "pom.xml"

MIN_JAVA = 17
"""Kafka 4 brokers need Java 17 or newer."""

Progress = Callable[[str], None]


def java_major_version(version_output: str) -> int | None:
    """The major version from `java -version` output: '1.8.0_392' gives 8, '17.0.15' 17."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def pom_key(pom_text: bytes) -> str:
    return hashlib.sha256(pom_text).hexdigest()


def render_classpath_cache(key: str, entries: Sequence[str]) -> str:
    return f"{key}\n{os.pathsep.join(entries)}\n"


def parse_classpath_cache(text: str, key: str) -> list[str] | None:
    """The cached classpath entries if the cache was made from the POM with ``key``."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[0].strip() != key or not lines[1].strip():
        return None
    return lines[1].strip().split(os.pathsep)


def require_java() -> str:
    """The `java` to run the broker with, or ToolMissing with the fix."""
    java = shutil.which("java")
    if java is None:
        raise ToolMissing(f"java not found on PATH; install a JDK {MIN_JAVA}+: {INSTALL_HINT}")
    result = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False, timeout=60
    )
    major = java_major_version(result.stderr + result.stdout)
    if major is None or major < MIN_JAVA:
        found = f"java {major}" if major is not None else f"{java} (version unknown)"
        raise ToolMissing(
            f"{found} is too old for Kafka 4, which needs {MIN_JAVA}+: {INSTALL_HINT}"
        )
    return java


def classpath(paths: StackPaths, pom: Path, progress: Progress) -> list[str]:
    """The broker's classpath: from the state directory's cache, else resolved by Maven."""
    if not pom.is_file():
        raise StackError(f"{pom} not found: run from a checkout of usage-pipeline")
    key = pom_key(pom.read_bytes())
    try:
        cached = parse_classpath_cache(paths.kafka_classpath.read_text(), key)
    except FileNotFoundError:
        cached = None
    if cached is not None and all(Path(entry).is_file() for entry in cached):
        return cached
    entries = _resolve_with_maven(paths, pom, progress)
    write_atomically(paths.kafka_classpath, render_classpath_cache(key, entries))
    return entries


def _resolve_with_maven(paths: StackPaths, pom: Path, progress: Progress) -> list[str]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissing(f"mvn not found on PATH; install Maven: {INSTALL_HINT}")
    progress("kafka: resolving the broker's jars with Maven (a cold cache downloads ~65 MB)")
    paths.kafka.mkdir(parents=True, exist_ok=True)
    output = paths.kafka / "classpath.resolved"
    maven_log = paths.kafka / "maven.log"
    with maven_log.open("w") as log:
        result = subprocess.run(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                "dependency:build-classpath",
                "-Dmdep.includeScope=runtime",
                f"-Dmdep.outputFile={output}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0 or not output.is_file():
        raise StackError(
            f"Maven could not resolve {pom} ({_first_error(maven_log)}); see {maven_log}"
        )
    entries = [entry for entry in output.read_text().strip().split(os.pathsep) if entry]
    output.unlink()
    return entries


def _first_error(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if "[ERROR]" in line:
            return line.replace("[ERROR]", "").strip()[:200]
    return "no error message"
