"""Workaround, in one place: a put's completion reaches the client after the monitor
updates the put caused, as EPICS base sends them.

Why: a client that puts with completion and then reads its monitored value
(``epics.caput(pv, v, wait=True); epics.caget(pv)``, or ophyd's ``set(...).wait()``
and ``get()``) expects the new value. EPICS base's server queues the completion
behind the put's own monitor events, so that holds. caproto 1.3 sends the completion
at once while monitor updates wait in a batching queue (up to 2 ms here), so half of
such reads returned the old value (measured: 10-11 of 20 for ``cam1:SizeX``,
``HDF1:FilePath`` and ``cam1:AcquirePeriod``).

How: the server's two monitor queues count what goes through them (the context's
queue, from which updates are dispatched to the circuits, and each circuit's, from
which they are batched onto the wire). Before a circuit sends a write-notify reply it
waits until every update queued before it has been sent, at most
:data:`MAX_HOLD_S` (a reply is never withheld for long, whatever the monitor load).

Version guard: this relies on caproto's asyncio server taking the context's updates
with ``subscription_queue.get()``, each circuit's with ``get_from_sub_queue`` and
sending through ``send``, and choosing its circuit class by ``CircuitClass`` (caproto
1.3). Where these are missing, :data:`SUPPORTED` is false and the stock classes serve
unchanged.
"""

from __future__ import annotations

import asyncio
import time

import caproto as ca
from caproto.asyncio.server import Context, VirtualCircuit

#: longest a write-notify reply waits for the monitor updates queued before it
MAX_HOLD_S = 0.5

SUPPORTED = all((
    hasattr(Context, "CircuitClass"),
    hasattr(VirtualCircuit, "get_from_sub_queue"),
    hasattr(Context, "subscription_queue_loop"),
))


class CountingQueue(asyncio.Queue):
    """An asyncio queue that counts items put and taken; ``done`` counts the items a
    single consumer had finished with when it came back for the next one."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.put_count = 0
        self.get_count = 0
        self.done = 0

    def put_nowait(self, item) -> None:  # ``put`` ends here too
        super().put_nowait(item)
        self.put_count += 1

    async def get(self):
        self.done = self.get_count  # the consumer is back: the last item is handled
        item = await super().get()
        self.get_count += 1
        return item


class OrderedCircuit(VirtualCircuit):
    """A client circuit whose write-notify replies follow the monitor updates queued
    before them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subscription_queue = CountingQueue(ca.MAX_TOTAL_SUBSCRIPTION_BACKLOG)
        self._flushed = 0  # updates taken off the queue and sent (or dropped as stale)

    async def get_from_sub_queue(self, timeout=None):
        if timeout is None:  # the batching loop holds nothing: all it took is out
            self._flushed = self.subscription_queue.get_count
        return await super().get_from_sub_queue(timeout)

    async def send(self, *commands) -> None:
        # (an empty send is the command loop's answer to a write: nothing to track)
        if commands and all(isinstance(c, ca.EventAddResponse) for c in commands):
            taken = self.subscription_queue.get_count  # a batch: all taken so far
            await super().send(*commands)
            self._flushed = taken
            return
        if any(isinstance(c, ca.WriteNotifyResponse) for c in commands):
            await self._monitors_sent()
        await super().send(*commands)

    async def _monitors_sent(self) -> None:
        """Wait until the updates queued so far are on the wire (at most MAX_HOLD_S)."""
        deadline = time.monotonic() + MAX_HOLD_S
        shared = self.context.subscription_queue
        if isinstance(shared, CountingQueue):
            target = shared.put_count
            while shared.done < target and time.monotonic() < deadline:
                await asyncio.sleep(0.0002)
        target = self.subscription_queue.put_count
        while self._flushed < target and time.monotonic() < deadline:
            await asyncio.sleep(0.0002)


def order_replies(context: Context) -> None:
    """Make ``context`` (before it runs) send write-notify replies after the monitor
    updates queued before them."""
    if not SUPPORTED:
        return
    context.subscription_queue = CountingQueue()
    context.CircuitClass = OrderedCircuit
