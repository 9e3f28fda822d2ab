"""Run driver calls off the IOC's event loop.

Serial and NI calls block (a serial reply may take up to its timeout); inside a putter
or poll loop they would freeze every PV of the IOC. Each device gets its own
single-thread executor, which also serialises access to it (some controllers crash
when two threads talk to them at once).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class DeviceWorker:
    """``await worker.call(fn, *args)`` runs ``fn`` in this device's own thread."""

    def __init__(self, name: str):
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"dev-{name}")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor,
                                          functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
