"""The NI-style scan board: volumetric waveform parameters, galvo calibration, and
start/stop. ``kickoff`` arms and starts the waveforms (planar mode: completes when the
focal plane has settled); ``complete`` finishes after the requested volumes."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import Status

from devices.status import ProgressStatus


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
    start_cmd = Cpt(EpicsSignal, "Start", put_complete=True, kind="omitted")
    stop_cmd = Cpt(EpicsSignal, "Stop", put_complete=True, kind="omitted")
    running = Cpt(EpicsSignalRO, "Running_RBV", auto_monitor=True, kind="omitted")
    volumes_done = Cpt(EpicsSignalRO, "VolumesDone_RBV", auto_monitor=True, kind="omitted")
    period = Cpt(EpicsSignalRO, "Period_RBV", kind="omitted")
    plane_interval = Cpt(EpicsSignalRO, "PlaneInterval_RBV", kind="omitted")
    start_time = Cpt(EpicsSignalRO, "StartTime_RBV", kind="omitted")
    flyback_settle = Cpt(EpicsSignalRO, "FlybackSettle_RBV", kind="config")
    message = Cpt(EpicsSignalRO, "Message_RBV", string=True, kind="omitted")

    def kickoff(self) -> Status:
        """Arm and start; fails with the board's own message if it refuses."""
        status = Status(obj=self)

        def done(st) -> None:
            if st.success:
                status.set_finished()
            else:
                status.set_exception(RuntimeError(f"{self.name}: {self.message.get()}"))

        self.start_cmd.set(1).add_callback(done)
        return status

    def complete(self) -> Status:
        """Volumetric: done after NumVolumes volumes. Planar: done at once."""
        if self.mode.get() == "Planar" or int(self.num_volumes.get()) == 0:
            st = Status(obj=self)
            st.set_finished()
            return st
        target = int(self.num_volumes.get())
        status = ProgressStatus(self, target=target, unit="volumes",
                                stall_timeout=max(10.0, 5 * float(self.period.get())))
        cid = self.volumes_done.subscribe(lambda value, **_: status.update(int(value)),
                                          run=False)
        status.add_callback(lambda _: self.volumes_done.unsubscribe(cid))
        status.update(int(self.volumes_done.get(use_monitor=False)))
        return status

    def stop(self, *, success: bool = False) -> None:
        self.stop_cmd.put(1, wait=False)

    # The board is kicked off like a flyer but produces no data of its own (frames come
    # from the camera); these let the RunEngine's end-of-run collection pass it by.
    def describe_collect(self) -> dict:
        return {}

    def collect_pages(self):
        return iter(())
