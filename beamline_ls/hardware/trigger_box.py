"""Gating trigger box: fires at absolute times on its own clock, answers accepted/late.

The box counts ticks (2.56 us by default) from an arbitrary origin. The host maps its
clock onto the box's with a few ``TIME?`` round trips (the one with the shortest round
trip wins; its midpoint is taken as the moment the box read its counter) and sends
``FIRE <ticks> <id>``; the box answers ``ACCEPTED <id>`` or ``LATE <id> <now>``. Since
the box keeps time, the host never sleeps until a fire time and serial latency only
matters for how late a request may be sent, never for when the pulse comes out.

:class:`TriggerBox` offers both gating entry points:

- ``schedule(t, tag) -> TriggerReport``: the same call and report as
  :meth:`beamline_ls.gating.scheduler.TriggerScheduler.schedule`, with the box (not a
  Python thread) keeping time. This is the preferred path.
- ``fire(t, tag)``: the :class:`~beamline_ls.gating.scheduler.TriggerSink` protocol;
  forwards the absolute time to the box at once and records the report (an error
  is logged and recorded with status ``"error"``, never raised into the caller).

The clock map is refreshed every ``resync_s`` seconds to follow drift between the
two oscillators.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from beamline_ls.clock import Clock, RealTimeClock
from beamline_ls.gating.scheduler import TriggerReport
from beamline_ls.hardware.serial_link import SerialDeviceError, SerialLink

log = logging.getLogger(__name__)

DEFAULT_TICK_S = 2.56e-6


@dataclass(frozen=True)
class ClockMap:
    """Host time ``host_s`` corresponds to box tick ``ticks``; ``rtt_s`` is the
    round trip of the exchange that established it (the map's uncertainty)."""

    host_s: float
    ticks: int
    tick_s: float
    rtt_s: float

    def to_ticks(self, t: float) -> int:
        return self.ticks + int(round((t - self.host_s) / self.tick_s))

    def to_host(self, ticks: int) -> float:
        return self.host_s + (ticks - self.ticks) * self.tick_s


class TriggerBox:
    """Driver of the trigger box on one serial link; see the module docstring."""

    def __init__(self, link: SerialLink, clock: Clock | None = None,
                 tick_s: float | None = None, resync_s: float = 10.0, sync_rounds: int = 5,
                 on_report: Callable[[TriggerReport], None] | None = None) -> None:
        self.link = link
        self.clock: Clock = clock if clock is not None else RealTimeClock()
        self.tick_s = tick_s
        self.resync_s = resync_s
        self.sync_rounds = max(1, sync_rounds)
        self.on_report = on_report
        self.reports: collections.deque[TriggerReport] = collections.deque(maxlen=10_000)
        self.map: ClockMap | None = None
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ clocks
    def _int(self, command: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise self.link.garbled(command, text, "an integer tick count") from None

    def sync(self) -> ClockMap:
        """Map the host clock onto the box clock (several round trips, best kept)."""
        with self.link.lock:
            reply = self.link.query("SYNC")
            parts = reply.split()
            if len(parts) != 3 or parts[0] != "SYNC":
                raise self.link.garbled("SYNC", reply, "'SYNC <ticks> <tick_ns>'")
            box_tick_s = self._int("SYNC", parts[2]) * 1e-9
            if self.tick_s is None:
                self.tick_s = box_tick_s
            elif abs(box_tick_s - self.tick_s) > 1e-12:
                raise self.link.refused(
                    "SYNC", f"box ticks are {box_tick_s * 1e6:g} us, configuration says "
                            f"{self.tick_s * 1e6:g} us (tick_us in the TOML)")
            best: ClockMap | None = None
            for _ in range(self.sync_rounds):
                t_before = self.clock.now()
                ticks = self._int("TIME?", self.link.query("TIME?"))
                t_after = self.clock.now()
                m = ClockMap((t_before + t_after) / 2, ticks, self.tick_s, t_after - t_before)
                if best is None or m.rtt_s < best.rtt_s:
                    best = m
            assert best is not None
            self.map = best
            log.debug("trigger box clock: tick %d at host %.6f (rtt %.3f ms)",
                      best.ticks, best.host_s, best.rtt_s * 1e3)
            return best

    def _current_map(self) -> ClockMap:
        if self.map is None or self.clock.now() - self.map.host_s > self.resync_s:
            return self.sync()
        return self.map

    def box_time(self) -> float:
        """The box's clock read now, expressed on the host timebase (s)."""
        with self.link.lock:
            m = self._current_map()
            return m.to_host(self._int("TIME?", self.link.query("TIME?")))

    # ------------------------------------------------------------------ triggers
    def schedule(self, t_fire: float, tag: object = None) -> TriggerReport:
        """Ask the box to fire at absolute host time ``t_fire``; the box answers."""
        with self.link.lock:
            m = self._current_map()
            ident = next(self._ids)
            now = self.clock.now()
            command = f"FIRE {m.to_ticks(t_fire)} {ident}"
            reply = self.link.query(command)
        parts = reply.split()
        if len(parts) >= 2 and parts[0] in ("ACCEPTED", "LATE") and parts[1] == str(ident):
            status = "accepted" if parts[0] == "ACCEPTED" else "late"
        elif parts[:1] == ["ERR"]:
            raise self.link.refused(command, f"trigger box answered {reply!r}")
        else:
            raise self.link.garbled(command, reply, f"'ACCEPTED {ident}' or 'LATE {ident} ...'")
        rep = TriggerReport(t_fire, now, status, tag)
        self._record(rep)
        return rep

    def fire(self, t_scheduled: float, tag: object) -> None:
        """TriggerSink: forward ``t_scheduled`` to the box now; never raises."""
        try:
            self.schedule(t_scheduled, tag)
        except SerialDeviceError as exc:
            log.error("trigger at %.6f not sent: %s", t_scheduled, exc)
            self._record(TriggerReport(t_scheduled, self.clock.now(), "error", tag,
                                       str(exc)))

    def _record(self, rep: TriggerReport) -> None:
        self.reports.append(rep)
        if rep.status == "late":
            log.debug("trigger box: late request for %.6f", rep.t_requested)
        if self.on_report is not None:
            self.on_report(rep)

    def pending(self) -> int:
        """Accepted triggers the box has not fired yet."""
        return self._int("PENDING?", self.link.query("PENDING?"))

    def clear(self) -> None:
        """Drop every pending trigger (stop of a gated acquisition)."""
        reply = self.link.query("CLEAR")
        if reply != "OK":
            raise self.link.garbled("CLEAR", reply, "'OK'")

    @property
    def busy(self) -> bool:
        return self.link.busy
