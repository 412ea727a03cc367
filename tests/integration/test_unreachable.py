"""A server that is not there is a one-line error naming its setting and address, and a
non-zero exit: never a traceback (issue 11). No server is needed: the ports are closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.ops.devstack.ports import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def closed() -> str:
    return f"127.0.0.1:{free_port()}"


def env(tmp_path: Path) -> dict[str, str]:
    host, port = closed().split(":")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": closed(),
        "DATABASE_URL": f"host={host} port={port} dbname=books user=worker password=s3cret-pw",
        "USAGE_PIPELINE_STATE_DIR": str(tmp_path),
    }


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["publish", "-"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["dlq", "show"], "KAFKA_BOOTSTRAP_SERVERS"),
        (["reconcile"], "DATABASE_URL"),
        (["report", "daily", "--from", "2026-01-01", "--to", "2026-01-02"], "DATABASE_URL"),
        (["db", "status"], "DATABASE_URL"),
    ],
)
def test_commands_answer_an_unreachable_server_in_one_line(
    tmp_path: Path, args: list[str], setting: str
) -> None:
    environment = env(tmp_path)
    result = CliRunner().invoke(main, args, env=environment, input="{}\n")
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert setting in lines[0] and "Traceback" not in result.output
    address = (
        environment[setting] if setting.startswith("KAFKA") else environment[setting].split()[1]
    )
    assert address.removeprefix("port=") in lines[0]
    assert "s3cret-pw" not in result.output


@pytest.mark.parametrize("down", ["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"])
def test_the_worker_answers_an_unreachable_server_before_faust_starts(
    tmp_path: Path, pg_admin_url: str, down: str
) -> None:
    environment = os.environ | env(tmp_path)
    if down == "KAFKA_BOOTSTRAP_SERVERS":  # the database is there, the broker is not
        environment["DATABASE_URL"] = pg_admin_url
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"], env=environment, cwd=REPO,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and down in lines[0], done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
