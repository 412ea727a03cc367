"""The virtual environment the LiteLLM oracle runs in, and the call that runs it.

`litellm_costs(requests)` prices a list of request dicts (the fields
tests/oracle/litellm_oracle.py documents) with LiteLLM's own cost calculator, in one
subprocess for the whole list, and returns {id: (cost, error)}.

The venv has the LiteLLM release whose price map data/ holds (litellm-model-prices-<version>.json,
identical to that release's bundled map), with nothing else: the cost calculator needs only
LiteLLM's core. The LiteLLM proxy tests' venv (tests/integration/litellm_proxy.py `installed()`,
.state/litellm-<version>) is used instead when our `litellm` extra pins that same release and
`installed()` left it complete for this pyproject.toml; this module never builds that one
(`litellm[proxy]==1.110.2` needs `litellm-proxy==1.110.2`, which the registry does not serve),
it builds .state/litellm-oracle-<version> with `pip install litellm==<version>`, once per
machine (about a minute). Each answer's litellm_version is checked against <version>.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().with_name("litellm_oracle.py")
CATALOG = next(iter(sorted((REPO / "data").glob("litellm-model-prices-*.json"))))
"""The LiteLLM price map we import (data/README.md): the oracle must be that same release."""
VERSION = CATALOG.name.removeprefix("litellm-model-prices-").removesuffix(".json")
ORACLE_PIN = f"litellm=={VERSION}"
EXTRA_PIN = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
    "optional-dependencies"]["litellm"] if d.startswith("litellm=="))  # fmt: skip
"""Our `litellm` extra's pin (the proxy tests' release), which may lag the catalog's."""
STATE = REPO / ".state"
PROXY_VENV = STATE / f"litellm-{EXTRA_PIN.removeprefix('litellm==')}"
"""tests/integration/litellm_proxy.py's VENV: reused only when it has the catalog's release."""
ORACLE_VENV = STATE / f"litellm-oracle-{VERSION}"


def _proxy_venv_python() -> Path | None:
    """The proxy tests' venv python when `installed()` left it complete for this pyproject.toml."""
    if EXTRA_PIN != ORACLE_PIN:
        return None
    python, done = PROXY_VENV / "bin" / "python", PROXY_VENV / ".installed"
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if python.is_file() and (PROXY_VENV / "bin" / "litellm").is_file() and done.is_file():
        return python if done.read_text() == wanted else None
    return None


def oracle_python() -> Path:
    """A python with the pinned `litellm`, (re)building .state/litellm-oracle-<version> if needed."""
    if (found := _proxy_venv_python()) is not None:
        return found
    python, done = ORACLE_VENV / "bin" / "python", ORACLE_VENV / ".installed"
    if python.is_file() and done.is_file() and done.read_text() == ORACLE_PIN:
        return python
    STATE.mkdir(exist_ok=True)
    with (STATE / f"litellm-oracle-{VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it
        if python.is_file() and done.is_file() and done.read_text() == ORACLE_PIN:
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(ORACLE_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ORACLE_PIN],
            check=True, env=os.environ | {"PIP_ROOT_USER_ACTION": "ignore"},
        )  # fmt: skip
        done.write_text(ORACLE_PIN)
    return python


def litellm_cost_details(
    requests: Iterable[Mapping[str, Any]], *, timeout: float = 900.0
) -> dict[Any, dict[str, Any]]:
    """Every answer line of the oracle by request id: cost (repr of LiteLLM's float), error,
    prompt_cost, completion_cost, tool_cost, resolved_key, route_provider, path, litellm_version."""
    batch = list(requests)
    if not batch:
        return {}
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    environment |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "CRITICAL"}
    done = subprocess.run(
        [str(oracle_python()), str(SCRIPT)],
        input="".join(json.dumps(dict(r)) + "\n" for r in batch),
        capture_output=True, text=True, timeout=timeout, env=environment, cwd=STATE,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"the LiteLLM oracle exited with {done.returncode}: {done.stderr[-3000:]}"
        )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if len(answers) != len(batch):
        raise RuntimeError(
            f"the LiteLLM oracle answered {len(answers)} of {len(batch)} requests: {done.stderr[-3000:]}"
        )
    wrong = {a.get("litellm_version") for a in answers} - {VERSION}
    if wrong:
        raise RuntimeError(
            f"the LiteLLM oracle ran litellm {sorted(map(str, wrong))}, not {VERSION}"
        )
    return {answer["id"]: answer for answer in answers}


def litellm_costs(
    requests: Iterable[Mapping[str, Any]], *, timeout: float = 900.0
) -> dict[Any, tuple[str | None, str | None]]:
    """LiteLLM's total cost of each request, {id: (cost, error)}: cost is repr() of LiteLLM's
    float (Decimal(cost) is then exact to what LiteLLM computed), None when error says why."""
    return {
        key: (answer.get("cost"), answer.get("error"))
        for key, answer in litellm_cost_details(requests, timeout=timeout).items()
    }
