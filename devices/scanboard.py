"""The NI-style scan board: volumetric waveform parameters, galvo calibration, and
start/stop. ``prepare`` (volumetric) computes the waveforms and moves the focal plane to
the trajectory start ahead of time; ``kickoff`` arms and starts the waveforms (planar
mode: completes when the focal plane has settled); ``complete`` finishes after the
requested volumes. When the RunEngine pauses (one Ctrl-C), a volumetric scan stops at
the end of the volume in progress, and goes on with the volumes left on resume."""

from __future__ import annotations

import random
import threading

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import Status

from beamline_ls.waveforms import (
    PIEZO_TRAVEL_UM,
    SCAN_RANGE_WHAT,
    GalvoCalibration,
    VolumeScan,
    check_focus_limits,
)
from devices.status import ProgressStatus, late, settle, within
from devices.text import TextSignalRO

# the waveform model the board plays and its focal-plane limits, for plans that check
# a scan before it starts
__all__ = ["PIEZO_TRAVEL_UM", "SCAN_RANGE_WHAT", "GalvoCalibration", "ScanBoard",
           "VolumeScan", "check_focus_limits"]


class ScanBoard(Device):
    mode = Cpt(EpicsSignal, "Mode", string=True, put_complete=True, kind="config")
    volume_rate = Cpt(EpicsSignal, "VolumeRate", limits=True, put_complete=True, kind="config")
    num_planes = Cpt(EpicsSignal, "NumPlanes", limits=True, put_complete=True, kind="config")
    z_start = Cpt(EpicsSignal, "ZStart", limits=True, put_complete=True, kind="config")
    z_stop = Cpt(EpicsSignal, "ZStop", limits=True, put_complete=True, kind="config")
    plane_z = Cpt(EpicsSignal, "PlaneZ", limits=True, put_complete=True, kind="config")
    skip_start = Cpt(EpicsSignal, "SkipStart", limits=True, put_complete=True, kind="config")
    skip_end = Cpt(EpicsSignal, "SkipEnd", limits=True, put_complete=True, kind="config")
    exposure = Cpt(EpicsSignal, "ExposureTime", limits=True, put_complete=True, kind="config")
    sample_rate = Cpt(EpicsSignal, "SampleRate", limits=True, put_complete=True, kind="config")
    piezo_lag = Cpt(EpicsSignal, "PiezoLag", limits=True, put_complete=True, kind="config")
    galvo1_offset = Cpt(EpicsSignal, "Galvo1Offset", limits=True, put_complete=True,
                        kind="config")
    galvo1_slope = Cpt(EpicsSignal, "Galvo1Slope", limits=True, put_complete=True,
                       kind="config")
    galvo2_offset = Cpt(EpicsSignal, "Galvo2Offset", limits=True, put_complete=True,
                        kind="config")
    galvo2_slope = Cpt(EpicsSignal, "Galvo2Slope", limits=True, put_complete=True,
                       kind="config")
    num_volumes = Cpt(EpicsSignal, "NumVolumes", limits=True, put_complete=True, kind="config")
    prepare_cmd = Cpt(EpicsSignal, "Prepare", put_complete=True, kind="omitted")
    prepare_state = Cpt(EpicsSignalRO, "PrepareState_RBV", string=True, kind="omitted")
    prepared_id = Cpt(EpicsSignalRO, "PreparedId_RBV", auto_monitor=True, kind="omitted")
    start_cmd = Cpt(EpicsSignal, "Start", put_complete=True, kind="omitted")
    stop_cmd = Cpt(EpicsSignal, "Stop", put_complete=True, kind="omitted")
    pause_cmd = Cpt(EpicsSignal, "Pause", put_complete=True, kind="omitted")
    resume_cmd = Cpt(EpicsSignal, "Resume", put_complete=True, kind="omitted")
    paused = Cpt(EpicsSignalRO, "Paused_RBV", kind="omitted")
    running = Cpt(EpicsSignalRO, "Running_RBV", auto_monitor=True, kind="omitted")
    volumes_done = Cpt(EpicsSignalRO, "VolumesDone_RBV", auto_monitor=True, kind="omitted")
    period = Cpt(EpicsSignalRO, "Period_RBV", kind="omitted")
    plane_interval = Cpt(EpicsSignalRO, "PlaneInterval_RBV", kind="omitted")
    start_time = Cpt(EpicsSignalRO, "StartTime_RBV", kind="omitted")
    flyback_settle = Cpt(EpicsSignalRO, "FlybackSettle_RBV", kind="config")
    # the piezo's limits, which the board keeps to when it moves the focal plane
    z_low_limit = Cpt(EpicsSignalRO, "ZLowLimit_RBV", kind="omitted")
    z_high_limit = Cpt(EpicsSignalRO, "ZHighLimit_RBV", kind="omitted")
    message = Cpt(TextSignalRO, "Message_RBV", kind="omitted")

    def _command(self, signal: EpicsSignal, verb: str) -> Status:
        """Put 1 to a command PV; the status fails with the board's own message.

        A refusal is read from ``Message_RBV`` ("start refused: ..."), which the board
        writes before it refuses: pyepics reports a put with completion that the IOC
        refused as done, so ophyd's own status of the put succeeds either way."""
        status = Status(obj=self)

        def done(st) -> None:
            try:
                message = str(self.message.get(use_monitor=False))
            except Exception as exc:  # noqa: BLE001 - the IOC went away: that is the end
                settle(status, exc)
                return
            settle(status, None if st.success and not message.startswith(f"{verb} refused")
                   else RuntimeError(f"{self.name}: {message}"))

        signal.set(1).add_callback(done)
        return within(status, self.command_timeout, lambda: late(
            self, "scan board", f"did not {verb}", self.command_timeout, [self.message]))

    #: seconds the board has to start (the NI tasks armed and started, or the focal
    #: plane settled): it takes well under one; one that takes this long hangs
    command_timeout: float = 30.0

    def prepare(self, timeout: float = 10.0) -> Status:
        """Volumetric mode: compute the waveforms of the scan the board's PVs describe and
        move the focal plane to its start; done when it has settled there, failed with
        the board's message if it refused. Set the scan parameters first. Optional:
        ``kickoff`` does the same work if nothing (or another scan) was prepared, so
        preparing only moves that time off the critical path.

        The board prepares in the background and echoes a request id when done (see
        the IOC), so reads from this client are not held up meanwhile.
        """
        request = random.randrange(1, 2**31 - 1)
        status = Status(obj=self)
        once = threading.Lock()  # the monitor and the put callback may both see the id

        def finish() -> None:
            if not once.acquire(blocking=False) or status.done:  # done: timed out
                return
            try:
                ready = self.prepare_state.get(use_monitor=False) == "Ready"
                why = "" if ready else self.message.get(use_monitor=False)
            except Exception as exc:  # noqa: BLE001 - the IOC went away: that is the end
                settle(status, exc)
                return
            settle(status, None if ready else RuntimeError(f"{self.name}: {why}"))

        def on_id(value, **_) -> None:
            if int(value) == request:
                finish()

        cid = self.prepared_id.subscribe(on_id, run=False)
        status.add_callback(lambda _: self.prepared_id.unsubscribe(cid))

        def put_done(st) -> None:
            try:
                if not st.success:
                    if once.acquire(blocking=False):
                        settle(status, RuntimeError(f"{self.name}: {self.message.get()}"))
                elif int(self.prepared_id.get(use_monitor=False)) == request:
                    finish()  # finished before its monitor update could arrive
            except Exception as exc:  # noqa: BLE001 - the IOC went away: that is the end
                settle(status, exc)

        self.prepare_cmd.set(request).add_callback(put_done)
        return within(status, timeout, lambda: late(
            self, "scan board", "did not prepare the scan", timeout, [self.message]))

    def kickoff(self) -> Status:
        """Arm and start; fails with the board's own message if it refuses.

        Asked again while the scan it started runs (or is paused), the same status:
        a RunEngine resuming after a pause replays the messages since the last
        checkpoint, and a scan's start is among them."""
        last = self._kickoff_status
        if last is not None and (not last.done or (last.success and (
                int(self.running.get(use_monitor=False))
                or int(self.paused.get(use_monitor=False))))):
            return last
        # what ``complete`` needs, read now while the board is known to answer: read
        # there, an IOC that dies as the scan starts made that read's CA failure the
        # scan's error in place of the camera's report of the lost contact
        # (the period to within one sample: Period_RBV is written only at the start)
        volumes = 0 if self.mode.get() == "Planar" else int(self.num_volumes.get())
        self._scan = (volumes, 1.0 / max(float(self.volume_rate.get()), 1e-6))
        self._kickoff_status = self._command(self.start_cmd, "start")
        self._flying = None  # a new scan: its completion is still to be asked for
        return self._kickoff_status

    _scan: tuple[int, float] = (0, 0.0)  # volumes (0: planar or endless), period (s)

    _kickoff_status: Status | None = None

    def complete(self) -> Status:
        """Volumetric: done after NumVolumes volumes. Planar: done at once.

        Asked again for the same scan, the same status (plans ask at every
        checkpoint: a pause loses the RunEngine's wait groups, not the device's)."""
        if self._flying is not None:
            return self._flying
        target, period = self._scan
        if target == 0:
            st = Status(obj=self)
            st.set_finished()
            # kept too: asked again, no read of the IOC (which may be gone: the
            # camera's failure, not this read's, must end the scan)
            self._flying = st
            return st
        status = ProgressStatus(self, target=target, unit="volumes",
                                stall_timeout=max(10.0, 5 * period))
        self._flying = status
        cid = self.volumes_done.subscribe(lambda value, **_: status.update(int(value)),
                                          run=False)
        status.add_callback(lambda _: self.volumes_done.unsubscribe(cid))
        try:
            status.update(int(self.volumes_done.get(use_monitor=False)))
        except Exception:  # noqa: BLE001 - the IOC is gone (a timeout, or pyepics'
            # ChannelAccessGetFailure): the camera, which lost it too, reports the
            # cause, or else the stall timeout ends the wait
            pass
        return status

    def stop(self, *, success: bool = False) -> None:
        self.stop_cmd.put(1, wait=False)

    _flying: ProgressStatus | None = None  # the volumetric scan being completed

    def pause(self) -> None:
        """RunEngine pause: finish the volume in progress, then stop (returns once the
        board has stopped, at most one volume period later). Also between kickoff and
        ``complete``: a volumetric scan runs from its kickoff on."""
        status = self._flying
        if status is None:
            if not (self.mode.get() == "Volumetric"
                    and int(self.running.get(use_monitor=False))):
                return
        elif status.done:
            return
        else:
            status.hold()
        self.pause_cmd.put(1, wait=True, timeout=float(self.period.get()) + 30.0)

    def resume(self) -> None:
        """RunEngine resume: go on with the volumes left."""
        status = self._flying
        if (status is not None and status.done) \
                or not int(self.paused.get(use_monitor=False)):
            return
        self.resume_cmd.put(1, wait=True, timeout=30.0)
        if status is not None:
            status.release()

    # The board is kicked off like a flyer but produces no data of its own (frames come
    # from the camera); these let the RunEngine's end-of-run collection pass it by.
    def describe_collect(self) -> dict:
        return {}

    def collect_pages(self):
        return iter(())
