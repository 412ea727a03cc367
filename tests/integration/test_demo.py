"""`usage-pipeline demo` end to end on the test stack: it drains, reconciles, then reports."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pipeline.ops.demo.sample import DEMO_USERS, MODELS
from tests.integration.pipeline_harness import REPO, Harness

if TYPE_CHECKING:
    from tests.conftest import TestStack

pytestmark = pytest.mark.integration


def test_demo_ends_with_a_clean_reconcile_and_the_daily_report(
    stack: TestStack, migrated_db: str
) -> None:
    env = Harness(migrated_db, stack.kafka_bootstrap).env() | {
        "USAGE_PIPELINE_STATE_DIR": str(stack.settings.state_dir),  # reuse the test stack
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--events", "400", "--seed", "3",
         "--timeout", "120"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    reconciled = out.index("reconcile: every invariant holds")
    by_user = out.index("by user (from the summary tables):", reconciled)
    by_model = out.index("by model:", by_user)
    user_table = out[by_user:by_model]
    assert "user_id" in user_table and "credits_deducted" in user_table
    assert all(str(u.id) in user_table for u in DEMO_USERS)
    model_table = out[by_model:]
    assert "provider" in model_table.splitlines()[1]
    assert all(model in model_table for _, model in MODELS)
