"""The event loop the commands run on."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bot import event_loop


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_commands_run_on_uvloop_where_it_is_installed() -> None:
    import uvloop

    async def which() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert event_loop.run(which()) is uvloop.Loop


def test_without_uvloop_asyncios_loop_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError

    loop = event_loop.new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
        assert loop.run_until_complete(asyncio.sleep(0, result=42)) == 42
    finally:
        loop.close()


async def test_woken_says_whether_the_event_was_set_in_time() -> None:
    event = asyncio.Event()
    assert await event_loop.woken(event, 0.01) is False
    event.set()
    assert await event_loop.woken(event, 0.01) is True


async def test_a_cancellation_that_comes_as_the_event_is_set_is_not_lost() -> None:
    # asyncio.wait_for(event.wait(), …) returns True here on Python 3.11, and the task carries on: a background
    # loop that waits so cannot be stopped.
    event = asyncio.Event()
    waiter = asyncio.create_task(event_loop.woken(event, 60))
    await asyncio.sleep(0)  # it waits

    event.set()
    waiter.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiter
