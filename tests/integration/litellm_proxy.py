"""The real LiteLLM proxy for the tests: installed from PyPI into a virtual environment of
its own (once per machine, under .state/), started on a free loopback port with a config
of mock deployments (no network), and stopped like our processes.

The proxy's environment is a user's: `usage-pipeline[litellm]` installed next to
`litellm[proxy]`, the callback named in `litellm_settings.callbacks`, our settings from
the environment. It never gets DATABASE_URL: LiteLLM would take it for its own database.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ops.devstack.ports import free_port
from pipeline.ops.devstack.waiting import wait_until
from pipeline.ops.worker_process import stop_worker

REPO = Path(__file__).resolve().parents[2]
PIN = next(d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
    "optional-dependencies"]["litellm"] if d.startswith("litellm=="))  # fmt: skip
"""Our `litellm` extra's pin, e.g. litellm==1.108.7: the proxy installed is that release's."""
VERSION = PIN.removeprefix("litellm==")
VENV = REPO / ".state" / f"litellm-{VERSION}"
START_SECONDS = 120.0
CALLBACK = "pipeline.gateways.litellm_callback.handler"
SECOND_CALLBACK = """\
# A second copy of our callback (its own spool): every call is published twice, as when
# LiteLLM logs one success twice. A class of its own: LiteLLM drops a second logger of the
# same class.
from pipeline.gateways.litellm_callback import KafkaUsageLogger
from pipeline.settings import from_environment


class SecondKafkaUsageLogger(KafkaUsageLogger):
    pass


found = from_environment()
handler = SecondKafkaUsageLogger(found.model_copy(
    update={"litellm_spool_path": found.litellm_spool_path.with_suffix(".second")}))
"""
"""`twice.py` next to the config: LiteLLM loads `twice.handler` from the config's folder."""

CACHED_USAGE = {"prompt_tokens": 2000, "completion_tokens": 50, "total_tokens": 2050,
                "prompt_tokens_details": {"cached_tokens": 1500}}  # fmt: skip
MODELS: dict[str, dict[str, Any]] = {
    "gpt-4o-mini": {"model": "openai/gpt-4o-mini", "mock_response": "hi"},
    "gpt-4o-cached": {"model": "openai/gpt-4o", "mock_response": {
        "choices": [{"message": {"role": "assistant", "content": "from the cache"}}],
        "usage": CACHED_USAGE,
    }},
    "claude-haiku": {"model": "anthropic/claude-haiku-4-5-20251001", "mock_response": "hi"},
    "rate-limited": {"model": "openai/gpt-4o-mini", "mock_response": "litellm.RateLimitError"},
}  # fmt: skip
"""Deployments that answer from LiteLLM's mock: its usage and its cost, no provider."""


def installed() -> Path:
    """The venv's `litellm` command, (re)installing the venv first unless it is complete
    for this pyproject.toml (our package is installed editable: the proxy runs this tree)."""
    command, done = VENV / "bin" / "litellm", VENV / ".installed"
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if command.is_file() and done.is_file() and done.read_text() == wanted:
        return command
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", PIN.replace("litellm", "litellm[proxy]", 1), "-e", f"{REPO}[litellm]"],
        # Not compiled again: this tree's extension modules are in use by the test session
        # (a build rewrites them in place), and the venv's python imports them as they are.
        check=True, env=os.environ | {"PIP_ROOT_USER_ACTION": "ignore", "USAGE_PIPELINE_COMPILE": "0"},
    )  # fmt: skip
    done.write_text(wanted)
    return command


def config(
    callbacks: Sequence[str] = (CALLBACK,), generic_api: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A proxy config (JSON is YAML) of the mock deployments, logging through `callbacks`
    (our Kafka callback) and/or LiteLLM's generic_api logger."""
    found: dict[str, Any] = {
        "model_list": [
            {"model_name": name, "litellm_params": {**params, "api_key": "sk-mock"}}
            for name, params in MODELS.items()
        ],
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"num_retries": 0, "request_timeout": 30},
        "general_settings": {},
    }
    found["litellm_settings"]["callbacks"] = list(callbacks)
    if generic_api is not None:
        found["litellm_settings"]["callbacks"].append("usage_pipeline")
        found["callback_settings"] = {"usage_pipeline": {"callback_type": "generic_api",
                                                         **generic_api}}  # fmt: skip
    return found


@dataclass
class Proxy:
    url: str
    master_key: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def stop(self) -> None:
        stop_worker(self.process)


def start(
    command: Path, workdir: Path, proxy_config: dict[str, Any], env: Mapping[str, str]
) -> Proxy:
    """The proxy serving `proxy_config` with our settings `env`, answering its liveness probe."""
    master_key = f"sk-{secrets.token_hex(16)}"
    proxy_config = {**proxy_config, "general_settings": {
        **proxy_config["general_settings"], "master_key": master_key}}  # fmt: skip
    path, log, port = workdir / "config.yaml", workdir / "proxy.log", free_port()
    path.write_text(json.dumps(proxy_config, indent=2))
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    environment |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "INFO", **env}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(command), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
            env=environment, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    proxy = Proxy(f"http://127.0.0.1:{port}", master_key, process, log)

    def live() -> bool:
        if process.poll() is not None:
            raise RuntimeError(
                f"the proxy exited with {process.returncode}: {proxy.log_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(proxy.url + "/health/liveliness", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    if not wait_until(live, START_SECONDS, 0.5):
        proxy.stop()
        raise RuntimeError(
            f"the proxy did not answer in {START_SECONDS:.0f}s: {proxy.log_text()[-3000:]}"
        )
    return proxy
