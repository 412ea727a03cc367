"""The live usage view on real workers: totals equal the ledger, any worker answers.

Events go through the real topic to real worker processes; the test then asks the
workers' web servers and compares with what the ledger sums to for the same UTC day.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from pipeline.core.records import partition_of
from pipeline.ops.devstack.stack import restart_kafka
from pipeline.stream import kafka_io
from tests.conftest import TestStack
from tests.integration.pipeline_harness import Harness, free_port, make_event, wait_for
from tests.integration.test_pipeline import new_user

pytestmark = pytest.mark.integration

PARTITIONS = 2  # the harness's TOPIC_PARTITIONS
LIVE = {"LIVE_USAGE_VIEW": "true"}
NO_TIMED_FLUSH = {"LIVE_USAGE_FLUSH_SECONDS": "3600"}


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def today_view(port: int, user: uuid.UUID) -> dict[str, Any]:
    status, body = get(port, f"/users/{user}/usage/today")
    return body if status == 200 else {}


def ledger_day(h: Harness, user: uuid.UUID, day: str) -> dict[str, Any]:
    [(requests, inp, out, credits, cost)] = h.query(
        """
        SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
               coalesce(sum(credits_deducted), 0), coalesce(sum(vendor_cost), 0)
        FROM token_usage_ledger
        WHERE user_id = %s AND (request_started_at AT TIME ZONE 'UTC')::date = %s::date
        """,
        user,
        day,
    )
    return {"requests": requests, "input_tokens": inp, "output_tokens": out,
            "credits": credits, "vendor_cost": Decimal(cost)}  # fmt: skip


def live_totals(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "input_tokens", "output_tokens", "credits")
    return {**{k: body[k] for k in keys}, "vendor_cost": Decimal(body["vendor_cost"])}


def matches_ledger(h: Harness, port: int, user: uuid.UUID) -> dict[str, Any] | None:
    body = today_view(port, user)
    if body and live_totals(body) == ledger_day(h, user, body["day"]):
        return body
    return None


def test_live_view_equals_todays_ledger_and_ignores_duplicates(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Any
) -> None:
    port = free_port()
    # no timed flush: the view answers from what is pending, and only the stop writes it
    h = Harness(new_books(), kafka_bootstrap, env_overrides=LIVE | NO_TIMED_FLUSH)
    h.env_overrides["WORKER_WEB_PORT"] = str(port)
    user, other = new_user(h, credits=10_000), new_user(h, credits=10_000)
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today = [
        make_event(user, started_at=midnight + timedelta(seconds=1)),
        make_event(user, started_at=max(midnight, now - timedelta(seconds=5)),
                   input_tokens=5000, output_tokens=100, cached_input_tokens=4000),
        make_event(user, started_at=midnight + timedelta(seconds=2), output_tokens=7),
    ]  # fmt: skip
    yesterday = make_event(user, started_at=midnight - timedelta(hours=1))
    elsewhere = make_event(other, started_at=midnight + timedelta(seconds=3))
    h.start_worker(tmp_path)
    try:
        h.publish([*today, today[0], yesterday, elsewhere])  # today[0] twice: a redelivery
        h.wait_booked([e["request_id"] for e in [*today, yesterday, elsewhere]])

        body = wait_for(lambda: h.alive() and matches_ledger(h, port, user), 60,
                        f"the live view to equal the ledger (log: {h.log_path})")  # fmt: skip
        day = midnight.date().isoformat()
        if body["day"] == day:  # not past midnight since the events were published
            assert body["requests"] == 3  # the redelivery and yesterday's event are not in it
            assert live_totals(body) == ledger_day(h, user, day)
            [summary] = h.query(
                "SELECT total_requests, total_input_tokens, total_output_tokens, "
                "total_credits_deducted, total_vendor_cost FROM token_usage_daily_summary "
                "WHERE user_id = %s AND summary_date = %s",
                user,
                midnight.date(),
            )
            assert tuple(live_totals(body).values()) == summary  # and so do the books' summary
        assert body["user_id"] == str(user)
        assert (body["source"], body["best_effort"]) == ("live", True)
        assert isinstance(body["vendor_cost"], str) and "E" not in body["vendor_cost"]

        stranger = uuid.uuid4()
        status, empty = get(port, f"/users/{stranger}/usage/today")
        assert status == 200
        assert (empty["requests"], empty["credits"], empty["vendor_cost"]) == (0, 0, "0")

        status, error = get(port, "/users/not-a-uuid/usage/today")
        assert status == 400
        assert error == {"error": "user_id must be a UUID, got 'not-a-uuid'"}

        # a clean stop writes what was pending into the table's changelog, and the next
        # start recovers it from there
        h.stop_worker()
        h.start_worker(tmp_path)
        again = wait_for(lambda: h.alive() and matches_ledger(h, port, user), 60,
                         f"the view to survive a restart (log: {h.log_path})")  # fmt: skip
        assert again["requests"] == body["requests"]
    finally:
        h.stop_worker()


def test_the_view_writes_through_a_kafka_restart_and_its_changelog_keeps_every_write(
    new_books: Callable[[], str], kafka_bootstrap: str, stack: TestStack, tmp_path: Any
) -> None:
    """Table writes go on while the broker stops and starts again (their changelog records
    held and sent again by the view, not Faust's producer buffer, whose task dies with the
    first send that raises, and the worker with it)."""
    port = free_port()
    # 200 users' writes paced over 20 s (one a tick): some while the broker is away
    h = Harness(new_books(), kafka_bootstrap,
                env_overrides=LIVE | {"LIVE_USAGE_FLUSH_SECONDS": "20"})  # fmt: skip
    h.env_overrides["WORKER_WEB_PORT"] = str(port)
    users = [new_user(h, credits=10_000) for _ in range(200)]
    first = [make_event(u) for u in users]
    h.start_worker(tmp_path)
    try:
        h.publish(first)
        h.wait_booked([e["request_id"] for e in first])
        log_from = h.log_size()

        def noticed() -> bool:  # the worker has found the broker gone
            return (
                h.log_path is not None and "Connection refused" in h.log_path.read_text()[log_from:]
            )

        restart_kafka(stack.settings, lambda: wait_for(noticed, 30, "the worker to notice"))
        later = [make_event(u) for u in users[:20]]
        h.publish(later)
        h.wait_booked([e["request_id"] for e in later])

        def all_written() -> bool:
            return h.alive() and all(matches_ledger(h, port, u) for u in users[:20])

        wait_for(all_written, 60, f"the view to equal the ledger (log: {h.log_path})")
        assert h.alive(), f"the worker died in the restart (log: {h.log_path})"
        assert h.log_path is not None and "Crashed" not in h.log_path.read_text()
        # what a clean stop leaves in the changelog is every write: the next start
        # recovers a view equal to the ledger for every user
        assert h.stop_worker() == 0
        h.start_worker(tmp_path)
        wait_for(lambda: h.alive() and all(matches_ledger(h, port, u) for u in users), 90,
                 f"the recovered view to equal the ledger (log: {h.log_path})")  # fmt: skip
    finally:
        h.stop_worker()


def one_user_per_partition(h: Harness, partitions: int) -> dict[int, uuid.UUID]:
    """New users, one whose events (keyed by user id, as the harness publishes) land on each
    of `partitions` partitions."""
    users: dict[int, uuid.UUID] = {}
    while len(users) < partitions:
        user = new_user(h, credits=10_000)
        users.setdefault(partition_of(str(user).encode(), partitions), user)
    return users


def changelog_of(h: Harness) -> str:
    # spelled out, not `live_view.changelog_topic`: the name Faust itself gives the table's
    return f"{h.worker_id}-live_usage-changelog"


def test_the_changelog_gets_the_usage_topics_partitions_whatever_topic_partitions_says(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Any
) -> None:
    """A usage topic of 4 partitions (made before the worker, e.g. by the brokers'
    num.partitions) and TOPIC_PARTITIONS=2: Faust made the changelog of 2, and the first
    write of a user on partition 2 or 3 crashed the worker ("Unrecognized partition")."""
    port = free_port()
    h = Harness(
        new_books(), kafka_bootstrap, env_overrides=LIVE | {"LIVE_USAGE_FLUSH_SECONDS": "0.2"}
    )
    h.env_overrides["WORKER_WEB_PORT"] = str(port)
    asyncio.run(kafka_io.ensure_topic(h.kafka(), h.usage_topic, 4))
    users = one_user_per_partition(h, 4)
    events = [make_event(u) for u in users.values()]
    h.start_worker(tmp_path)
    try:
        h.publish(events)
        h.wait_booked([e["request_id"] for e in events])
        changelog = changelog_of(h)
        wait_for(lambda: len(h.read(changelog)) >= 4, 30,
                 f"a changelog record of each user (log: {h.log_path})")  # fmt: skip
        assert {r.partition for r in h.read(changelog)} == {0, 1, 2, 3}
        assert h.alive() and all(matches_ledger(h, port, u) for u in users.values())
    finally:
        h.stop_worker()


def test_a_changelog_of_another_partition_count_turns_the_view_off_not_the_books(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Any
) -> None:
    port = free_port()
    h = Harness(new_books(), kafka_bootstrap, env_overrides=LIVE)
    h.env_overrides["WORKER_WEB_PORT"] = str(port)
    changelog = changelog_of(h)
    asyncio.run(kafka_io.ensure_topic(h.kafka(), changelog, PARTITIONS + 1))
    user = new_user(h, credits=10_000)
    event = make_event(user)
    h.start_worker(tmp_path)
    try:
        h.publish([event])
        h.wait_booked([event["request_id"]])
        with pytest.raises(urllib.error.HTTPError) as no_page:  # no view, no page
            urllib.request.urlopen(f"http://127.0.0.1:{port}/users/{user}/usage/today", timeout=10)
        assert no_page.value.code == 404
        log = h.log_path.read_text() if h.log_path else ""
        assert f"the live usage view is off: its changelog topic {changelog} does not have " \
               f"the {PARTITIONS} partitions of {h.usage_topic}" in log  # fmt: skip
    finally:
        h.stop_worker()


def test_any_worker_answers_for_the_owner_of_the_users_partition(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Any
) -> None:
    first = Harness(new_books(), kafka_bootstrap, env_overrides=LIVE)
    second = Harness(
        first.database_url, kafka_bootstrap, tag=first.tag, env_overrides=LIVE
    )  # one consumer group
    ports = [free_port(), free_port()]
    users = one_user_per_partition(first, PARTITIONS)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = [make_event(u, started_at=midnight + timedelta(seconds=n))
              for n in range(1, 4) for u in users.values()]  # fmt: skip
    try:
        for h, port in zip((first, second), ports, strict=True):
            h.env_overrides["WORKER_WEB_PORT"] = str(port)
            h.start_worker(tmp_path)
        first.publish(events)
        first.wait_booked([e["request_id"] for e in events], timeout=120)

        def every_worker_agrees() -> dict[uuid.UUID, set[str]] | None:
            owners: dict[uuid.UUID, set[str]] = {}
            for user in users.values():
                for port in ports:
                    assert first.alive() and second.alive()
                    body = matches_ledger(first, port, user)
                    if not body or body["requests"] == 0:
                        return None
                    owners.setdefault(user, set()).add(body["worker"])
            # each user is answered by one worker, whichever was asked; both workers own one
            if all(len(o) == 1 for o in owners.values()) and len(set.union(*owners.values())) == 2:
                return owners
            return None

        wait_for(every_worker_agrees, 120, "both workers to answer for each partition's owner")
    finally:
        first.stop_worker()
        second.stop_worker()


def test_a_starting_worker_answers_503_until_it_knows_the_partition_owner(
    new_books: Callable[[], str], kafka_bootstrap: str, tmp_path: Any
) -> None:
    # asked from before its web server listens until it answers: a worker whose producer
    # has not yet fetched the usage topic's metadata once answered 500 here
    port = free_port()
    h = Harness(new_books(), kafka_bootstrap, env_overrides=LIVE)
    h.env_overrides["WORKER_WEB_PORT"] = str(port)
    user = new_user(h, credits=10_000)
    answers: list[tuple[int, bytes]] = []
    done = threading.Event()

    def ask_until_answered() -> None:
        url = f"http://127.0.0.1:{port}/users/{user}/usage/today"
        while not done.is_set():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    answers.append((response.status, response.read()))
                    return
            except urllib.error.HTTPError as error:
                answers.append((error.code, error.read()))
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet
            done.wait(0.002)

    asker = threading.Thread(target=ask_until_answered)
    asker.start()
    try:
        h.start_worker(tmp_path)
        wait_for(lambda: h.alive() and not asker.is_alive(), 60,
                 f"the worker to answer (log: {h.log_path})")  # fmt: skip
    finally:
        done.set()
        asker.join()
        h.stop_worker()
    assert answers and answers[-1][0] == 200
    refusals = answers[:-1]
    assert {status for status, _ in refusals} <= {503}, refusals
    for _, body in refusals:
        assert json.loads(body) == {"error": "partition owner unknown (rebalancing)"}
