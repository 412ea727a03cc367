# Short commands for the README. `make help` lists them.

PYTHON ?= python3
KAFKA_POM := deploy/kafka/pom.xml

.DEFAULT_GOAL := help
.PHONY: help toolchain dev kafka-jars test test-fast lint bench demo chaos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

toolchain: ## Install a missing JDK 17+, Maven or promtool (apt-get, as root), or say what to install
	@deploy/toolchain.sh

dev: toolchain ## Install the toolchain, the package with its dev tools, and the Kafka broker's jars
	$(PYTHON) -m pip install -e '.[dev]'
	$(MAKE) kafka-jars

kafka-jars: ## Resolve the local Kafka broker's jars into the Maven cache (needs mvn, JDK 17+)
	mvn --batch-mode --quiet -f $(KAFKA_POM) dependency:resolve -DincludeScope=runtime

test: dev ## Install, lint with ruff, then run every test (the session starts its own Kafka + PostgreSQL)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest

test-fast: dev ## The same without the long drills (chaos, benchmarks, random streams with kills)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -m "not drill"

lint: ## ruff check, ruff format --check, mypy (strict)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

bench: dev ## Benchmark in its own local stack (3 runs side by side, rate sweep, queries); rewrites docs/benchmarks.md
	$(PYTHON) -m pip install -e '.[bench]'
	usage-pipeline bench all

demo: dev ## Install, then run the whole product on this machine: stack, schema, sample traffic, books
	usage-pipeline demo

chaos: ## Replay traffic while killing workers and restarting PostgreSQL and Kafka; check the books
	usage-pipeline chaos
