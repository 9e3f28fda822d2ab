"""Prospective optical gating as an ophyd device.

``trigger()`` arms one trigger at the target heart phase and finishes when the
fluorescence exposure it started is over; the lock itself (brightfield camera,
analyzer, scheduler) lives in the gating IOC, next to the cameras.
"""

from __future__ import annotations

import json
import threading

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Signal
from ophyd.status import Status

from beamline_ls.frame import GATING_FIELDS
from devices.text import TextSignalRO

__all__ = ["GATING_FIELDS", "GatingTrigger"]


class LockWaiter(Signal):
    """``set(timeout)`` returns a Status that finishes when the gating is locked, so a
    plan can ``yield from bps.abs_set(gating.lock, 30, wait=True)``."""

    def set(self, value: float = 30.0, **kwargs) -> Status:  # noqa: A003
        super().put(value)
        return self.parent.wait_for_lock(timeout=float(value))


class GatingTrigger(Device):
    enable = Cpt(EpicsSignal, "Enable", string=True, put_complete=True, kind="config")
    frame_rate = Cpt(EpicsSignal, "FrameRate", limits=True, put_complete=True, kind="config")
    target_phase = Cpt(EpicsSignal, "TargetPhase", limits=True, put_complete=True,
                       kind="config")
    latency = Cpt(EpicsSignal, "Latency", limits=True, put_complete=True, kind="config")
    state = Cpt(EpicsSignalRO, "State_RBV", string=True, auto_monitor=True, kind="omitted")
    period = Cpt(EpicsSignalRO, "Period_RBV", kind="normal")
    period_frames = Cpt(EpicsSignalRO, "PeriodFrames_RBV", kind="omitted")
    phase = Cpt(EpicsSignalRO, "Phase_RBV", kind="omitted")
    target_phase_rbv = Cpt(EpicsSignalRO, "TargetPhase_RBV", kind="normal")
    reference_id = Cpt(EpicsSignalRO, "ReferenceId_RBV", kind="normal")
    refresh_cmd = Cpt(EpicsSignal, "Refresh", put_complete=True, kind="omitted")
    arm = Cpt(EpicsSignal, "Arm", put_complete=True, kind="omitted")
    armed = Cpt(EpicsSignalRO, "Armed_RBV", kind="omitted")
    fired = Cpt(EpicsSignalRO, "TriggersFired_RBV", kind="omitted")
    late = Cpt(EpicsSignalRO, "TriggersLate_RBV", kind="omitted")
    left_late = Cpt(EpicsSignalRO, "TriggersLeftLate_RBV", kind="omitted")
    last_triggers = Cpt(TextSignalRO, "LastTriggers_RBV", kind="omitted")
    message = Cpt(TextSignalRO, "Message_RBV", kind="omitted")
    source = Cpt(TextSignalRO, "Source_RBV", kind="config")
    fields = Cpt(TextSignalRO, "Fields_RBV", kind="omitted")
    frames_lost = Cpt(EpicsSignalRO, "FramesLost_RBV", kind="omitted")
    frames_skipped = Cpt(EpicsSignalRO, "FramesSkipped_RBV", kind="omitted")
    lock = Cpt(LockWaiter, value=30.0, kind="omitted")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: TriggersFired_RBV before the trigger in flight (None: none in flight), and
        #: that trigger's status (an older trigger finishing late clears nothing)
        self._in_flight: int | None = None
        self._in_flight_status: Status | None = None
        #: ... before the one the last pause interrupted (None: it interrupted none)
        self._interrupted: int | None = None
        #: ... before the one the RunEngine replays first since it resumed
        self._replaying: int | None = None

    def trigger(self) -> Status:
        """Fire one trigger at the target phase; done when its exposure is over.

        Fails, with the gating's own words, when no trigger fired: the IOC refuses the
        Arm put then (the lock lost, a trigger output that fails every trigger), but
        Channel Access clients such as pyepics complete a refused put all the same, so
        the plan went on to wait for an exposure that never came (the camera's 60 s
        stall, blaming the camera). TriggersFired_RBV is current when Arm completes.

        The trigger an immediate pause interrupted (see `pause`) is replayed by the
        RunEngine at resume: if it had fired before the pause took it, its frame was
        taken, and the replay finishes at once instead of taking the plane again."""
        before = int(self.fired.get(use_monitor=False))
        interrupted, self._replaying = self._replaying, None
        done = Status(obj=self)
        if interrupted is not None and before > interrupted:
            done.set_finished()
            return done
        self._in_flight, self._in_flight_status = before, done
        done.add_callback(self._landed)
        armed = self.arm.set(1, timeout=30)

        def verify() -> None:  # a CA read: not on the thread that completed the put
            try:
                fired = int(self.fired.get(use_monitor=False))
                why = self.message.get(use_monitor=False)
            except Exception as exc:  # noqa: BLE001 - the status carries it
                done.set_exception(exc)
                return
            if fired > before:
                done.set_finished()
            else:
                done.set_exception(RuntimeError(
                    f"{self.name}: no trigger fired (TriggersFired_RBV {fired}, {before} "
                    f"before Arm): {why}"))

        def check(status: Status) -> None:
            if not status.success:
                done.set_exception(status.exception()
                                   or RuntimeError(f"{self.name}: arming failed"))
                return
            threading.Thread(target=verify, name="gating-trigger-check",
                             daemon=True).start()

        armed.add_callback(check)
        return done

    def _landed(self, status: Status) -> None:
        """A trigger finished: no longer in flight, unless a newer one is (the
        trigger an immediate pause interrupted finishes, disarmed, while its replay
        is already in flight; clearing then would forget the replay at a second
        pause, and a replay that had fired would take its plane twice)."""
        if self._in_flight_status is status:
            self._in_flight = self._in_flight_status = None

    def wait_for_lock(self, timeout: float = 30.0) -> Status:
        """Status that finishes once the analyzer is locked (fails after ``timeout``)."""
        status = Status(obj=self, timeout=timeout)

        def check(value, **_):
            if value == "Locked" and not status.done:
                try:
                    status.set_finished()
                except Exception:  # finished meanwhile by the other path
                    pass

        cid = self.state.subscribe(check, run=False)
        status.add_callback(lambda _: self.state.unsubscribe(cid))
        if self.state.get(use_monitor=False) == "Locked" and not status.done:
            status.set_finished()
        return status

    def records(self) -> list[dict]:
        """The last few trigger records (time, phase, period, reference, status)."""
        return json.loads(self.last_triggers.get(use_monitor=False) or "[]")

    def refresh(self) -> Status:
        """Ask for a new reference (long-term updating keeps the same heart phase)."""
        return self.refresh_cmd.set(1)

    def pause(self) -> None:
        """RunEngine pause: let no armed trigger fire while paused. An immediate pause
        (two Ctrl-C) can land while a trigger waits for its heart phase; resume
        replays that trigger from the last checkpoint, so one left armed would have
        fired meanwhile and the plane been taken twice. It can also land after the
        trigger fired, while its exposure runs (the trigger is done only then): that
        trigger is remembered, and its replay takes no second frame (`trigger`)."""
        self._interrupted = self._in_flight
        self.arm.put(0, wait=False)

    def resume(self) -> None:
        """RunEngine resume: the next trigger is the replay of the one the pause
        interrupted, if any. Only here: a run aborted or stopped after the pause never
        resumes, and the next scan's first trigger must fire."""
        self._replaying, self._interrupted = self._interrupted, None

    def stop(self, *, success: bool = False) -> None:
        self._interrupted = self._replaying = None
        self.arm.put(0, wait=False)
