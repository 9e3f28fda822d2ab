"""A one-item slot that keeps only the newest item and counts what it discards.

A live view wants the newest frame, never a queue of old ones: a producer that puts a
frame before anyone took the previous one replaces it, and the replaced frame counts
as dropped, so a slow viewer costs frames it can count, never a growing backlog.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Newest item only. ``put`` never blocks; ``peek`` reads without taking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: T | None = None
        self._taken = True
        self.received = 0  # items put
        self.dropped = 0  # items replaced before anyone took them

    def put(self, item: T) -> None:
        with self._lock:
            if not self._taken:
                self.dropped += 1
            self._item = item
            self._taken = False
            self.received += 1

    def take(self) -> T | None:
        """The newest item, marking it taken (None if there never was one). Taking the
        same item again is allowed: several viewers may show one frame."""
        with self._lock:
            self._taken = True
            return self._item

    def peek(self) -> T | None:
        with self._lock:
            return self._item

    @property
    def fresh(self) -> bool:
        """True while the newest item has not been taken."""
        with self._lock:
            return not self._taken and self._item is not None
