"""EVENT_LOOP picks the loop the worker and the API run on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from pipeline.settings import Settings
from pipeline.stream import event_loop


@pytest.fixture
def restored_policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def _with(loop: str) -> Settings:
    return Settings().model_copy(update={"event_loop": loop})


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert Settings().event_loop == "uvloop"


def test_use_sets_the_policy_new_loops_are_made_with(restored_policy: None) -> None:
    event_loop.use(_with("uvloop"))
    assert asyncio.run(_loop_type()) is uvloop.Loop
    asyncio.set_event_loop_policy(None)
    event_loop.use(_with("asyncio"))
    assert asyncio.run(_loop_type()) is not uvloop.Loop


def test_run_uses_the_loop_without_touching_the_policy(restored_policy: None) -> None:
    asyncio.set_event_loop_policy(None)
    assert event_loop.run(_with("uvloop"), _loop_type()) is uvloop.Loop
    assert event_loop.run(_with("asyncio"), _loop_type()) is not uvloop.Loop
    assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)


def test_a_loop_of_another_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "gevent")
    with pytest.raises(ValueError, match="EVENT_LOOP"):
        Settings()
