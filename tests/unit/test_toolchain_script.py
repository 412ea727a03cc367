"""deploy/toolchain.sh: what `make dev` and `.ci/run` install, or the one line saying what to install.

Each test runs the script on a PATH holding only fake tools, so what is "installed" is
exactly what the test put there; a fake apt-get records its calls instead of installing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "toolchain.sh"
BASH = shutil.which("bash") or "/bin/bash"
CHMOD = shutil.which("chmod") or "/bin/chmod"

JAVA_17 = 'openjdk version "17.0.2" 2022-01-18'
JAVA_11 = 'openjdk version "11.0.22" 2024-01-16'
JAVA_8 = 'java version "1.8.0_392"'
OTHERS = ("mvn", "promtool", "make", "go", "cc", "chromium", "chromedriver")
"""Every tool the script checks but java (and the system PostgreSQL)."""


def fake(bin_dir: Path, name: str, body: str = "exit 0") -> Path:
    tool = bin_dir / name
    tool.write_text(f"#!{BASH}\n{body}\n")
    tool.chmod(0o755)
    return tool


def fake_java(bin_dir: Path, version_line: str) -> None:
    # Like the real one, `java -version` writes to stderr.
    fake(bin_dir, "java", f"echo '{version_line}' >&2")


def fake_apt_get(bin_dir: Path, installs: dict[str, str] | None = None) -> Path:
    """An apt-get that logs each call; `install` creates the fake tools in ``installs``."""
    log = bin_dir.parent / "apt-get.log"
    creates = "".join(
        f"  printf '#!{BASH}\\n{body}\\n' > {bin_dir / name}; {CHMOD} +x {bin_dir / name}\n"
        for name, body in (installs or {}).items()
    )
    fake(bin_dir, "apt-get", f'echo "$*" >> {log}\nif [ "$1" = install ]; then\n{creates}  :\nfi')
    return log


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def postgres_dir(bin_dir: Path, present: bool = True) -> Path:
    """Where the script looks for the system's PostgreSQL (Debian's /usr/lib/postgresql)."""
    root = bin_dir.parent / "postgresql"
    if present:
        (root / "15" / "bin").mkdir(parents=True, exist_ok=True)
        fake(root / "15" / "bin", "pg_ctl")
    return root


def run(
    bin_dir: Path, install: str = "never", postgres: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT)],
        env={
            "PATH": str(bin_dir),
            "TOOLCHAIN_INSTALL": install,
            "TOOLCHAIN_POSTGRES_DIR": str(postgres_dir(bin_dir, postgres)),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_nothing_installed_is_one_line_naming_every_tool(bin_dir: Path) -> None:
    log = fake_apt_get(bin_dir)
    result = run(bin_dir)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "toolchain: missing java 17+, mvn, promtool, make, go, cc, chromium, chromedriver: "
        "apt-get install openjdk-17-jdk-headless maven prometheus make golang-go gcc chromium "
        "chromium-driver (Debian/Ubuntu, as root) "
        "or brew install openjdk@17 maven prometheus make go gcc chromium chromedriver (macOS)"
    ]
    assert not log.exists()


@pytest.mark.parametrize(
    ("present", "missing", "debian"),
    [
        (
            ["mvn", "make", "go", "cc", "chromium", "chromedriver"],
            "java 17+, promtool",
            "openjdk-17-jdk-headless prometheus",
        ),
        (["java", "promtool", "make", "go", "cc", "chromium", "chromedriver"], "mvn", "maven"),
        (["java", "mvn", "promtool", "go", "cc", "chromium", "chromedriver"], "make", "make"),
        (["java", "mvn", "promtool", "make", "cc", "chromium", "chromedriver"], "go", "golang-go"),
        (["java", "mvn", "promtool", "make", "go", "chromium", "chromedriver"], "cc", "gcc"),
        (
            ["java", "mvn", "promtool", "make", "go", "cc"],
            "chromium, chromedriver",
            "chromium chromium-driver",
        ),
    ],
)
def test_the_line_names_exactly_the_missing_tools(
    bin_dir: Path, present: list[str], missing: str, debian: str
) -> None:
    for name in present:
        if name == "java":
            fake_java(bin_dir, JAVA_17)
        else:
            fake(bin_dir, name)
    result = run(bin_dir)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"toolchain: missing {missing}: apt-get install {debian} (Debian/Ubuntu")


@pytest.mark.parametrize(("version_line", "major"), [(JAVA_11, 11), (JAVA_8, 8)])
def test_a_java_older_than_17_counts_as_missing(
    bin_dir: Path, version_line: str, major: int
) -> None:
    fake_java(bin_dir, version_line)
    for name in OTHERS:
        fake(bin_dir, name)
    result = run(bin_dir)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"toolchain: missing java 17+ (found {major}): "
        "apt-get install openjdk-17-jdk-headless (Debian/Ubuntu, as root) "
        "or brew install openjdk@17 (macOS)"
    ]


@pytest.mark.parametrize("install", ["auto", "never"])
def test_with_every_tool_present_it_succeeds_and_installs_nothing(
    bin_dir: Path, install: str
) -> None:
    fake_java(bin_dir, JAVA_17)
    for name in OTHERS:
        fake(bin_dir, name)
    log = fake_apt_get(bin_dir)
    result = run(bin_dir, install)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not log.exists()


def test_it_installs_only_the_missing_packages_with_apt_get(bin_dir: Path) -> None:
    fake_java(bin_dir, JAVA_17)
    for name in ("make", "go", "cc", "chromium", "chromedriver"):
        fake(bin_dir, name)
    log = fake_apt_get(bin_dir, installs={"mvn": "exit 0", "promtool": "exit 0"})
    result = run(bin_dir, "always")  # as `auto` does as root
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["toolchain: installing maven prometheus"]
    assert log.read_text().splitlines() == [
        "update -q",
        "install -y -q --no-install-recommends maven prometheus",
    ]


def test_an_install_that_leaves_a_tool_missing_still_fails_in_one_line(bin_dir: Path) -> None:
    fake_java(bin_dir, JAVA_11)
    for name in OTHERS:
        fake(bin_dir, name)
    log = fake_apt_get(bin_dir)
    result = run(bin_dir, "always")
    assert result.returncode == 1
    assert log.read_text().splitlines() == [
        "update -q",
        "install -y -q --no-install-recommends openjdk-17-jdk-headless",
    ]
    assert result.stderr.splitlines() == [
        "toolchain: installing openjdk-17-jdk-headless",
        "toolchain: missing java 17+ (found 11): "
        "apt-get install openjdk-17-jdk-headless (Debian/Ubuntu, as root) "
        "or brew install openjdk@17 (macOS)",
    ]


def test_a_failing_apt_get_ends_with_one_line_naming_it(bin_dir: Path) -> None:
    fake(bin_dir, "apt-get", "echo 'E: Could not get lock' >&2; exit 100")
    result = run(bin_dir, "always")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "toolchain: apt-get update failed (exit 100)"


def test_an_unknown_install_mode_is_refused(bin_dir: Path) -> None:
    result = run(bin_dir, "sometimes")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "toolchain: TOOLCHAIN_INSTALL must be auto, never or always, got 'sometimes'"
    ]


def test_a_missing_system_postgresql_is_named(bin_dir: Path) -> None:
    fake_java(bin_dir, JAVA_17)
    for name in OTHERS:
        fake(bin_dir, name)
    result = run(bin_dir, postgres=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "toolchain: missing PostgreSQL server: apt-get install postgresql (Debian/Ubuntu, as root) "
        "or brew install postgresql@17 (macOS)"
    ]
