"""The event loop of a process that books or serves (worker, API), chosen by EVENT_LOOP.

`use` must run before the process creates its first loop: it sets the loop policy that
`asyncio.run`, Faust's worker and aiohttp's `run_app` then create their loops with (as
`mode.loop.use` installs it for Faust). `run` runs one coroutine on such a loop without
changing the process's policy (the bench's in-process booking).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import mode.loop
import uvloop

from pipeline.settings import Settings

T = TypeVar("T")


def use(settings: Settings) -> None:
    """uvloop (libuv) or asyncio's own loop for every loop this process creates."""
    mode.loop.use("uvloop" if settings.event_loop == "uvloop" else "aio")


def run(settings: Settings, coroutine: Coroutine[Any, Any, T]) -> T:
    factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)
