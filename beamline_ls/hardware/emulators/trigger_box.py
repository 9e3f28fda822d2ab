"""Emulator of a gating trigger box that fires at absolute times on its own clock.

The box counts 2.56 us ticks from an arbitrary origin. Commands (CR terminated):

- ``TIME?``: the current tick count -> ``<ticks>``
- ``SYNC``: the current tick count and the tick length -> ``SYNC <ticks> <tick_ns>``
- ``FIRE <ticks> <id>``: fire at tick ``<ticks>`` -> ``ACCEPTED <id>`` when at least
  ``min_lead_ticks`` ahead, else ``LATE <id> <now>`` (nothing is fired)
- ``PENDING?``: how many accepted triggers have not fired yet -> ``<n>``
- ``CLEAR``: drop pending triggers -> ``OK``
- anything else: ``ERR unknown command``; bad numbers: ``ERR bad argument``.

Firing is emulated: a pending trigger counts as fired once the box clock passes its
tick; :meth:`fired` lists (tick, id) of the fired ones.
"""

from __future__ import annotations

import heapq
import os
import time

from beamline_ls.hardware.emulators.pty_device import PtyDevice

TICK_S = 2.56e-6


class TriggerBoxEmulator(PtyDevice):
    name = "trigger-box"

    def __init__(self, link_path: str | os.PathLike[str] | None = None,
                 origin_ticks: int = 123_456_789, min_lead_ticks: int = 40) -> None:
        super().__init__(link_path)
        self.min_lead_ticks = min_lead_ticks
        self._t0 = time.monotonic()
        self._origin = origin_ticks
        self._pending: list[tuple[int, int]] = []
        self._fired: list[tuple[int, int]] = []

    def now_ticks(self) -> int:
        return self._origin + int((time.monotonic() - self._t0) / TICK_S)

    def _advance(self) -> None:
        now = self.now_ticks()
        while self._pending and self._pending[0][0] <= now:
            self._fired.append(heapq.heappop(self._pending))

    def fired(self) -> list[tuple[int, int]]:
        with self.state_lock:
            self._advance()
            return list(self._fired)

    def handle(self, command: str) -> str | None:
        self._advance()
        word, *args = command.strip().split()
        word = word.upper()
        now = self.now_ticks()
        if word == "TIME?" and not args:
            return str(now)
        if word == "SYNC" and not args:
            return f"SYNC {now} {int(round(TICK_S * 1e9))}"
        if word == "PENDING?" and not args:
            return str(len(self._pending))
        if word == "CLEAR" and not args:
            self._pending.clear()
            return "OK"
        if word == "FIRE" and len(args) == 2:
            try:
                tick, ident = int(args[0]), int(args[1])
            except ValueError:
                return "ERR bad argument"
            if tick - now < self.min_lead_ticks:
                return f"LATE {ident} {now}"
            heapq.heappush(self._pending, (tick, ident))
            return f"ACCEPTED {ident}"
        return "ERR unknown command"
