"""The worker's Kafka transport: Faust's aiokafka transport with a short broker-side fetch wait.

Faust creates its consumer with ``fetch_max_wait_ms=1500``, hard-coded
(`faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer`, no
setting). With that, a worker under steady load stalls for up to 1.5 s at a time, idle,
while its records wait in Kafka:

- Faust has the consumer fetch partitions that never or rarely hold records: its leader
  election topic (``<app id>-__assignor-__leader``, always assigned to one member) and,
  with a table, the table's changelog partitions, which it never pauses in aiokafka.
- aiokafka leaves a partition out of the next fetch while records it fetched from it wait
  to be consumed (the worker's event loop is busy booking), and sends one fetch request
  at a time to a broker. A fetch of only the idle partitions then waits at the broker
  until the full ``fetch.max.wait`` has passed, and no usage records are fetched until
  it returns.

Measured (2,500 events/s offered for 10 s, one worker, two rounds of each): with 1,500 ms
the worker stalled for 0.5-2.5 s every 3-4 s (both threads idle, the broker appending
2,500 records/s evenly) and held the rate in 2 of 4 runs without the live view and 0 of 4
with it; with 100 ms it held 4 of 4, with and without the view (`docs/benchmarks.md`).
The cost of a shorter wait is one more fetch request a broker answers per interval while
a partition is idle.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver

FETCH_MAX_WAIT_MS = 20
"""Longest a broker holds the worker's fetch request open waiting for records."""


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it creates its fetcher; no public setter.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """Faust's aiokafka transport whose consumer waits at most FETCH_MAX_WAIT_MS per fetch."""

    Consumer = _Consumer
