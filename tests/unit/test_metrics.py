"""Metrics and structured logs: what a committed batch records, lag, the JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

from prometheus_client.parser import text_string_to_metric_families

from pipeline.core.events import Rejection
from pipeline.core.plan import BatchPlan, Outcome, UsageRow
from pipeline.errors import Reason
from pipeline.settings import Settings
from pipeline.stream import logs, metrics
from pipeline.stream.booker import BatchResult
from pipeline.stream.dlq import SourceMessage

PROVIDER = uuid4()
USER = uuid4()
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def row(model: str = "gpt-4o", cost: str = "0.0225", credits: int = 23) -> UsageRow:
    return UsageRow(
        request_id=uuid4(),
        user_id=USER,
        subscription_id=None,
        model_id=model,
        provider_id=PROVIDER,
        input_tokens=1000,
        output_tokens=2000,
        cached_input_tokens=0,
        cache_write_tokens=0,
        vendor_cost=Decimal(cost),
        margin_multiplier=Decimal("1.00"),
        credit_value_usd=Decimal(credits) / 1000,
        credits_deducted=credits,
        request_type="chat",
        streaming_segments=None,
        request_started_at=NOW,
        request_completed_at=NOW,
        processing_time_ms=10,
        status="success",
        error_message=None,
        is_streaming_complete=True,
        user_tier_at_request="pro",
        region=None,
        deduction_record_id=None,
        event_fingerprint=b"f",
    )


def message(
    offset: int, value: bytes | None = None, ts_ms: int | None = 1_000_000
) -> SourceMessage:
    return SourceMessage("usage", 1, offset, b"k", value, ts_ms)


def batch() -> tuple[BatchResult, list[SourceMessage]]:
    charged = row()._replace(gateway_cost_usd=Decimal("0.0225000001"))  # LiteLLM's float, near
    overdraft = row("gpt-4o-mini", "0.001", 1)._replace(gateway_cost_usd=Decimal("0.0011"))
    byok = row(cost="0", credits=0)
    bad = Rejection(Reason.UNKNOWN_MODEL, "no price")
    plan = BatchPlan(
        usage_rows=[charged, overdraft, byok],
        outcomes=[
            Outcome(0, "charged", row=charged),
            Outcome(1, "overdraft", row=overdraft),
            Outcome(2, "byok", row=byok),
            Outcome(3, "rejected", rejection=bad),
            Outcome(4, "duplicate"),
        ],
    )
    result = BatchResult(
        outcomes={"charged": 1, "overdraft": 1, "byok": 1, "rejected": 1, "duplicate": 1},
        rejected={"unknown_model": 1},
        retries=2,
        alerts_published=3,
        plans=[plan],
    )
    rid = str(uuid4())
    messages = [message(o) for o in range(5)]
    messages[3] = message(3, json.dumps({"request_id": rid}).encode())
    return result, messages


def scrape(m: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_observe_batch_counts_outcomes_money_and_latency() -> None:
    m = metrics.new_metrics(with_process=False)
    result, messages = batch()
    metrics.observe_batch(m, result, messages, commit_seconds=0.2, committed_at=1_002.5)
    got = scrape(m)
    assert got["usage_pipeline_events_consumed_total", ()] == 5
    for outcome, count in result.outcomes.items():
        assert got["usage_pipeline_events_processed_total", (("outcome", outcome),)] == count
    assert got["usage_pipeline_events_processed_total", (("outcome", "free"),)] == 0
    assert got["usage_pipeline_events_rejected_total", (("reason", "unknown_model"),)] == 1
    # What the booker published after the commit, not what the plan raised (the timer
    # counts the ones it publishes later).
    assert got["usage_pipeline_alerts_published_total", ()] == 3
    assert got["usage_pipeline_dlq_published_total", ()] == 1
    assert got["usage_pipeline_db_retries_total", ()] == 2
    gpt4o = (("model", "gpt-4o"), ("provider_id", str(PROVIDER)))
    mini = (("model", "gpt-4o-mini"), ("provider_id", str(PROVIDER)))
    assert got["usage_pipeline_credits_deducted_total", gpt4o] == 23
    assert got["usage_pipeline_credits_deducted_total", mini] == 1
    assert got["usage_pipeline_vendor_cost_usd_total", gpt4o] == 0.0225
    assert got["usage_pipeline_billed_usd_total", gpt4o] == 0.023
    assert got["usage_pipeline_gateway_cost_usd_total", gpt4o] == 0.0225000001
    assert got["usage_pipeline_gateway_costed_vendor_cost_usd_total", mini] == 0.001
    assert got["usage_pipeline_gateway_cost_mismatches_total", gpt4o] == 0  # equal to 8 places
    assert got["usage_pipeline_gateway_cost_mismatches_total", mini] == 1
    assert got["usage_pipeline_batch_size_events_count", ()] == 1
    assert got["usage_pipeline_batch_size_events_sum", ()] == 5
    assert got["usage_pipeline_batch_commit_seconds_sum", ()] == 0.2
    # published at t=1000s, committed at 1002.5s: every event waited 2.5s
    assert got["usage_pipeline_event_commit_latency_seconds_count", ()] == 5
    assert got["usage_pipeline_event_commit_latency_seconds_sum", ()] == 12.5
    assert got["usage_pipeline_last_commit_timestamp_seconds", ()] == 1_002.5
    assert got["usage_pipeline_worker_up", ()] == 1


def test_no_label_carries_a_user_id() -> None:
    m = metrics.new_metrics(with_process=False)
    result, messages = batch()
    metrics.observe_batch(m, result, messages, 0.1, 1_001.0)
    text = m.exposition().decode()
    assert str(USER) not in text
    label_names = set(re.findall(r"[{,](\w+)=", text))
    assert label_names <= {
        "outcome",
        "reason",
        "provider_id",
        "model",
        "kind",
        "le",
        "topic",
        "partition",
    }


def test_events_without_timestamp_and_clock_skew_are_not_negative() -> None:
    result, _ = batch()
    messages = [message(0, ts_ms=None), message(1, ts_ms=5_000_000)]
    seen = metrics.summarize(result, messages, committed_at=1_000.0)
    assert seen.latencies == [0.0]


def test_metric_names_follow_prometheus_conventions() -> None:
    m = metrics.new_metrics(with_process=False)
    for family in m.registry.collect():
        assert family.name.startswith("usage_pipeline_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        assert "_ms" not in family.name and "milliseconds" not in family.name


def test_registries_are_independent() -> None:
    a, b = metrics.new_metrics(), metrics.new_metrics()
    a.consumed.inc(3)
    assert b.consumed._value.get() == 0
    assert any(n.startswith("process_") for n in metrics.metric_names(a))


def test_consumer_lag() -> None:
    high = {("u", 0): 10, ("u", 1): 7, ("u", 2): None, ("u", 3): 4}
    committed = {("u", 0): 4, ("u", 1): 7, ("u", 3): None}
    assert metrics.consumer_lag(high, committed) == {("u", 0): 6, ("u", 1): 0, ("u", 3): 4}
    assert metrics.consumer_lag({("u", 0): 3}, {("u", 0): 5}) == {("u", 0): 0}


def test_set_lag_forgets_revoked_partitions() -> None:
    m = metrics.new_metrics(with_process=False)
    metrics.set_lag(m, {("u", 0): 5, ("u", 1): 2})
    metrics.set_lag(m, {("u", 1): 1})
    got = scrape(m)
    lag = {k: v for k, v in got.items() if k[0] == "usage_pipeline_consumer_lag_messages"}
    assert lag == {
        ("usage_pipeline_consumer_lag_messages", (("partition", "1"), ("topic", "u"))): 1
    }


def test_rejected_events_follow_split_batches() -> None:
    result, messages = batch()
    first, second = BatchPlan(), BatchPlan()
    first.outcomes = [
        Outcome(0, "duplicate"),
        Outcome(1, "rejected", rejection=Rejection(Reason.MALFORMED_JSON, "x")),
    ]
    second.outcomes = [
        Outcome(0, "rejected", rejection=Rejection(Reason.DATABASE_REJECTED, "y")),
        Outcome(1, "duplicate"),
    ]
    split = replace(result, plans=[first, second])
    paired = logs.rejected_events(split, messages[:4])
    assert [(m.offset, r.reason) for m, r in paired] == [
        (1, Reason.MALFORMED_JSON),
        (2, Reason.DATABASE_REJECTED),
    ]


def test_request_id_of_tolerates_any_bytes() -> None:
    assert logs.request_id_of(b'{"request_id": "abc"}') == "abc"
    for value in (None, b"", b"\xff\xfe", b"[1]", b"nope", b'{"x": 1}'):
        assert logs.request_id_of(value) is None


def test_json_log_lines_carry_the_event_context() -> None:
    result, messages = batch()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.metrics.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logs.log_rejected(logger, result, messages)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed", extra=logs.event_context(messages[0]))
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    rid = json.loads(messages[3].value or b"")["request_id"]
    assert first["level"] == "WARNING"
    assert first["request_id"] == rid
    assert (first["topic"], first["partition"], first["offset"]) == ("usage", 1, 3)
    assert first["reason"] == "unknown_model"
    assert "request_id" not in second and second["offset"] == 0
    assert "ValueError: boom" in second["exception"]


def test_logging_config_is_a_valid_dict_config() -> None:
    assert logs.logging_config("text") is None
    config = logs.logging_config("json")
    assert config is not None and config.pop("merge") is True
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logging.config.dictConfig(config | {"root": {"handlers": ["default"], "level": "INFO"}})
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_log_format_setting() -> None:
    assert Settings().log_format in ("text", "json")
    assert Settings.model_validate({"LOG_FORMAT": "json"}).log_format == "json"


def test_a_batch_histogram_exposes_what_the_clients_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from pipeline.stream.histogram import BatchHistogram

    values = [0.0, 0.01, 0.0100001, 0.3, 1, 2.5, 299.9, 300, 1e6, 0.024]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lat", "Latency.", metrics.LATENCY_SECONDS_BUCKETS, ours)
    batch.observe_many(values[:4])
    batch.observe_many(values[4:])
    single = Histogram("lat", "Latency.", buckets=metrics.LATENCY_SECONDS_BUCKETS, registry=theirs)
    for value in values:
        single.observe(value)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    assert samples(ours) == samples(theirs)
    assert samples(ours)["lat_bucket", (("le", "0.01"),)] == 2  # a bound is in its bucket
