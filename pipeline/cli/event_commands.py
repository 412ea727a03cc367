"""`usage-pipeline publish` and `usage-pipeline dlq show|replay`."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import click

from pipeline.cli.addresses import kafka_access
from pipeline.core import records
from pipeline.settings import Settings
from pipeline.stream import dlq, kafka_io


@click.command()
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, help="Target topic (default: the usage topic).")
@click.option(
    "--batch",
    type=click.IntRange(1, records.BATCH_RECORD_MAX),
    default=None,
    help="Write batch records of up to N events, grouped by the partition of their user_id.",
)
@click.pass_obj
def publish(settings: Settings, source: Path, topic: str | None, batch: int | None) -> None:
    """Publish JSONL usage events from SOURCE (a file, or - for stdin), keyed by user_id."""
    kafka = kafka_access(settings)
    if str(source) == "-":
        lines = [line for line in sys.stdin.buffer.read().splitlines() if line.strip()]
    else:
        if not source.is_file():
            raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
        lines = [line for line in source.read_bytes().splitlines() if line.strip()]
    target = topic or settings.usage_topic
    if target == settings.usage_topic:
        asyncio.run(
            kafka_io.ensure_topic(
                kafka, target, settings.topic_partitions, settings.topic_replication_factor
            )
        )
    keyed = [(kafka_io.user_key(line), line) for line in lines]
    what = "events"
    if batch is not None:
        count = len(asyncio.run(kafka_io.partitions(kafka, target)))
        if not count:
            raise click.ClickException(f"topic {target} does not exist")
        keyed = records.group_by_partition(keyed, count, batch)
        what = f"batch records ({len(lines)} events)"
    outgoing = ((key, value, list[tuple[str, bytes]]()) for key, value in keyed)
    with click.progressbar(length=len(keyed), label="publishing", file=sys.stderr) as bar:
        sent = asyncio.run(kafka_io.publish(kafka, target, outgoing, bar.update))
    click.echo(f"published {sent} {what} to {target}")


@click.group(name="dlq")
def dlq_group() -> None:
    """Inspect and replay the dead-letter topic."""


async def _letters(settings: Settings, reason: str | None) -> list[dlq.DeadLetter]:
    kafka = kafka_access(settings)
    letters = await kafka_io.dead_letters(kafka, settings.dlq_topic)
    return [x for x in letters if reason is None or x.reason == reason]


@dlq_group.command()
@click.option("--reason", default=None, help="Only records with this reason code.")
@click.option("--limit", default=20, show_default=True, help="Records to list (0: counts only).")
@click.pass_obj
def show(settings: Settings, reason: str | None, limit: int) -> None:
    """Count dead-letter records by reason and list the latest ones."""
    letters = asyncio.run(_letters(settings, reason))
    counts = Counter(letter.reason for letter in letters)
    click.echo(f"{len(letters)} dead-letter records")
    for why, n in counts.most_common():
        click.echo(f"  {why:<22} {n}")
    for letter in letters[-limit:] if limit else []:
        value = (letter.value or b"").decode(errors="replace")
        click.echo(
            f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset} "
            f"{letter.reason}: {letter.detail}\n    {value[:200]}"
        )


@dlq_group.command()
@click.option("--reason", default=None, help="Only replay records with this reason code.")
@click.pass_obj
def replay(settings: Settings, reason: str | None) -> None:
    """Re-publish dead-lettered events, byte for byte, to the topic they came from."""
    letters = asyncio.run(_letters(settings, reason))
    kafka = kafka_access(settings)
    by_topic: dict[str, list[dlq.DeadLetter]] = {}
    for letter in letters:
        by_topic.setdefault(letter.source_topic, []).append(letter)
    for topic, group in by_topic.items():
        records = ((x.key, x.value or b"", list[tuple[str, bytes]]()) for x in group)
        sent = asyncio.run(kafka_io.publish(kafka, topic, records))
        click.echo(f"replayed {sent} records to {topic}")
    if not letters:
        click.echo("nothing to replay")


@click.command(name="schema")
@click.option(
    "--record",
    is_flag=True,
    help="The schema of a record value (v1.1: one event or a batch record) instead.",
)
def schema_command(record: bool) -> None:
    """Print the JSON Schema of usage event contract v1 (schemas/usage-event.v1.json), or
    of a record value (schemas/usage-record.v1.1.json)."""
    import json

    from pipeline.core.events import json_schema

    schema = records.json_schema() if record else json_schema()
    click.echo(json.dumps(schema, indent=2, sort_keys=True))
