"""The event loop every command runs on: uvloop's where it is installed (Linux and macOS), else asyncio's.

uvloop does the same work as asyncio's loop with less CPU per socket operation; the briefing run makes
several HTTP calls and database statements per account, so that is most of its CPU.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's if it can be imported, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on new_event_loop().

    What the imports made (modules, classes, functions: most of the process's objects) lives as long as the
    process, so it is moved out of the collector's sight first: each full collection of a run then goes over
    what the run itself made, not over every object of every library again."""
    gc.freeze()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def woken(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set, for at most `seconds`; whether it was set.

    Not asyncio.wait_for(event.wait(), seconds): on Python 3.11 that returns normally when the waiting task is
    cancelled in the very turn of the loop in which the event is set, and the cancellation is lost. A loop that
    waits so (a background sender) would then never stop: its stop() waited for ever."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
