"""Gating PVs: state, period, phase, target, latency, trigger counters and records.

Remote clients follow the lock over Channel Access; the frames and the analysis stay
in this process. ``Arm`` is the trigger interface for plans: a put of N lets the next
N triggers through and completes once the last one has fired and the fluorescence
exposure it started is over, so the next plane may be moved to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from beamline_ls.frame import bin_down
from beamline_ls.hardware.gating import HISTORY_FRAMES, GatingDriver, GatingStatus
from beamline_ls.iocs.alarms import RecordAlarms
from beamline_ls.iocs.blocking import DeviceWorker

log = logging.getLogger(__name__)

STATES = ["Off", "Searching", "Locked", "Lost"]
#: largest side of ``Image_RBV`` (a 256 x 256 LONG array is 256 kB: 5 Hz is cheap)
IMAGE_SIDE = 256
#: the status loop publishes the image every this many passes (50 ms each: 5 Hz)
IMAGE_EVERY = 4


class GatingGroup(RecordAlarms):
    enable = pvproperty(name="Enable", value="Off", dtype=ChannelType.ENUM,
                        enum_strings=["Off", "On"])
    frame_rate = pvproperty(name="FrameRate", value=80.0, units="Hz", precision=1,
                            lower_ctrl_limit=5.0, upper_ctrl_limit=500.0,
                            doc="brightfield (gating) camera frame rate")
    state = pvproperty(name="State_RBV", value="Off", dtype=ChannelType.ENUM,
                       enum_strings=STATES, read_only=True)
    period = pvproperty(name="Period_RBV", value=math.nan, units="s", precision=4,
                        read_only=True)
    period_frames = pvproperty(name="PeriodFrames_RBV", value=math.nan, units="frames",
                               precision=2, read_only=True)
    phase = pvproperty(name="Phase_RBV", value=math.nan, units="rad", precision=3,
                       read_only=True, doc="phase of the latest brightfield frame")
    target_phase = pvproperty(name="TargetPhase", value=-1.0, units="rad", precision=3,
                              lower_ctrl_limit=-1.0, upper_ctrl_limit=6.2832,
                              doc="-1: automatic (end of the most moving half beat)")
    target_phase_rbv = pvproperty(name="TargetPhase_RBV", value=math.nan, units="rad",
                                  precision=3, read_only=True)
    latency = pvproperty(name="Latency", value=0.015, units="s", precision=4,
                         lower_ctrl_limit=0.001, upper_ctrl_limit=0.2)
    reference_id = pvproperty(name="ReferenceId_RBV", value=-1, read_only=True)
    refresh = pvproperty(name="Refresh", value=0, doc="put 1: take a new reference")
    arm = pvproperty(name="Arm", value=0, lower_ctrl_limit=0, upper_ctrl_limit=1_000_000,
                     doc="put N: fire N triggers (late ones are retried on the next beat); "
                         "completes after the last exposure")
    armed = pvproperty(name="Armed_RBV", value=0, read_only=True)
    fired = pvproperty(name="TriggersFired_RBV", value=0, read_only=True)
    late = pvproperty(name="TriggersLate_RBV", value=0, read_only=True,
                      doc="triggers that did not fire (too late to send, or the output "
                          "failed) and were retried on a later beat")
    left_late = pvproperty(name="TriggersLeftLate_RBV", value=0, read_only=True,
                           doc="pulses that fired more than 0.05 rad of the beat after "
                               "their time: their frames are off phase")
    last_triggers = pvproperty(name="LastTriggers_RBV", value="[]", dtype=ChannelType.CHAR,
                               max_length=2048, string_encoding="utf-8", read_only=True,
                               doc="JSON list of the last 5 trigger records")
    message = pvproperty(name="Message_RBV", value="", dtype=ChannelType.CHAR,
                         max_length=256, string_encoding="utf-8", read_only=True)
    source = pvproperty(name="Source_RBV", value="", dtype=ChannelType.CHAR,
                        max_length=256, string_encoding="utf-8", read_only=True,
                        doc="brightfield source -> trigger output")
    fields = pvproperty(name="Fields_RBV", value="", dtype=ChannelType.CHAR,
                        max_length=256, string_encoding="utf-8", read_only=True,
                        doc="comma-separated per-frame fields gated frames carry")
    frames_lost = pvproperty(name="FramesLost_RBV", value=0, read_only=True,
                             doc="brightfield frames the camera never delivered")
    frames_skipped = pvproperty(name="FramesSkipped_RBV", value=0, read_only=True,
                                doc="brightfield frames skipped: analysis fell behind")
    # the live view of what the gating sees (an operator's console, image viewers)
    image = pvproperty(name="Image_RBV", value=np.zeros(1, np.int32),
                       dtype=ChannelType.LONG, max_length=IMAGE_SIDE * IMAGE_SIDE,
                       read_only=True, doc="newest analysed brightfield frame, binned "
                       f"to <= {IMAGE_SIDE} px a side, rows one after another")
    image_size_x = pvproperty(name="ImageSizeX_RBV", value=0, read_only=True)
    image_size_y = pvproperty(name="ImageSizeY_RBV", value=0, read_only=True)
    image_counter = pvproperty(name="ImageCounter_RBV", value=-1, read_only=True,
                               doc="brightfield frame number of Image_RBV")
    history = pvproperty(name="History_RBV", value=np.zeros(0), dtype=ChannelType.DOUBLE,
                         max_length=2 * HISTORY_FRAMES, read_only=True,
                         doc="(exposure start, wrapped phase) of the latest analysed "
                             "frames, interleaved, oldest first")

    def __init__(self, *args, driver: GatingDriver,
                 exposure_after_trigger: Callable[[], float] = lambda: 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver
        self.exposure_after_trigger = exposure_after_trigger
        # disabling joins the analysis thread (up to 5 s) and arm(0) may talk to the
        # trigger box over serial: off the event loop, one call at a time
        self._worker = DeviceWorker("gating")

    @enable.putter
    async def enable(self, instance, value):
        try:
            await self._worker.call(self.driver.enable, value == "On",
                                    float(self.frame_rate.value))
        except Exception as exc:  # a bad rate, or a camera or output that cannot start
            await self.message.write(str(exc)[:250])
            raise
        said = "gating off"
        if value == "On":
            said = "gating on"
            used = self.driver.frame_rate_hz
            if math.isfinite(used) and abs(used - self.frame_rate.value) > 1e-6 * used:
                # a recording replays at its own rate: FrameRate says the one in use
                await self.frame_rate.write(used)
                said = f"gating on at {used:g} frames/s, the source's own rate"
        await self.message.write(said)
        await self._publish()  # put completion implies the state PVs are current
        return value

    @target_phase.putter
    async def target_phase(self, instance, value):
        self.driver.set_target_phase(None if value < 0 else min(float(value), 2 * math.pi))
        return value

    @latency.putter
    async def latency(self, instance, value):
        self.driver.set_latency(float(value))
        return value

    @refresh.putter
    async def refresh(self, instance, value):
        if value:
            self.driver.request_refresh()
        return 0

    @arm.putter
    async def arm(self, instance, value):
        n = int(value)
        st = self.driver.status()
        if n and st.state != "locked":
            msg = f"gating is {st.state}, not locked: cannot arm triggers"
            await self.message.write(msg)
            raise RuntimeError(msg)
        start, begun = st, asyncio.get_running_loop().time()
        await self._worker.call(self.driver.arm, n)
        if n == 0:
            return 0
        # wait for the n triggers (a heartbeat each, plus retries of late ones)
        period = st.period_s if math.isfinite(st.period_s) else 1.0
        deadline = asyncio.get_running_loop().time() + 10 + 5 * n * period
        while True:
            st = self.driver.status()
            if st.fired >= start.fired + n:
                break
            if st.state != "locked" and st.armed:
                self.driver.arm(0)
                await self.message.write(f"lock {st.state} while armed")
                raise RuntimeError(f"gating {st.state} while armed")
            if st.output_error:  # the box or line fails every trigger: say so now
                self.driver.arm(0)
                msg = f"the trigger output fails: {st.output_error}"
                await self.message.write(msg[:500])
                raise RuntimeError(msg)
            if asyncio.get_running_loop().time() > deadline:
                self.driver.arm(0)
                msg = _shortfall(start, st, n, asyncio.get_running_loop().time() - begun)
                await self.message.write(msg[:500])
                raise TimeoutError(msg)
            await asyncio.sleep(0.005)
        last = self.driver.last_records(1)
        if last:  # the exposure started by the last trigger must be over
            rec = last[-1]
            fired = rec.fired_at if math.isfinite(rec.fired_at) else rec.trigger_time
            wait = fired + self.exposure_after_trigger() - time.time()
            if wait > 0:
                await asyncio.sleep(wait + 0.002)
        await self._publish()  # completion implies TriggersFired_RBV counts these
        return 0

    @state.startup
    async def state(self, instance, async_lib):
        await self.fields.write(",".join(self.driver.fields))
        passes = 0
        while True:
            await self._publish()
            passes += 1
            if passes % IMAGE_EVERY == 0:
                await self._publish_image()
            await asyncio.sleep(0.05)

    async def _publish_image(self) -> None:
        """The newest analysed frame, binned on a worker thread (never on the loop)."""
        frame = self.driver.latest_frame()
        if frame is None or frame.frame_id == self.image_counter.value:
            return
        small = await asyncio.get_running_loop().run_in_executor(
            None, lambda: bin_down(frame.image, IMAGE_SIDE).astype(np.int32))
        await self._set(self.image_size_y, small.shape[0])
        await self._set(self.image_size_x, small.shape[1])
        await self.image.write(small.ravel())
        await self.image_counter.write(frame.frame_id)

    async def _publish(self) -> None:
        st = self.driver.status()
        await self._set(self.state, {"off": "Off", "searching": "Searching",
                                     "locked": "Locked", "lost": "Lost"}[st.state])
        await self._set(self.period, st.period_s)
        await self._set(self.period_frames, st.period_frames)
        await self._set(self.phase, st.phase)
        await self._set(self.target_phase_rbv, st.target_phase)
        await self._set(self.reference_id, st.reference_id)
        await self._set(self.armed, st.armed)
        await self._set(self.fired, st.fired)
        await self._set(self.late, st.late)
        await self._set(self.left_late, st.left_late)
        await self._set(self.source, self.driver.description[:250])
        await self._set(self.frames_lost, st.frames_lost)
        await self._set(self.frames_skipped, st.frames_skipped)
        if st.failure and self.message.value != st.failure[:250]:
            await self.message.write(st.failure[:250])
        records = json.dumps([r.as_dict() for r in self.driver.last_records(5)],
                             allow_nan=True)
        await self._set(self.last_triggers, records[:2040])
        history = self.driver.phase_history()
        if len(history) and (not len(self.history.value)
                             or history[-1, 0] != self.history.value[-2]):
            await self.history.write(history.ravel())

    @staticmethod
    async def _set(pv, value) -> None:
        current = pv.value
        same = current == value or (
            isinstance(value, float) and isinstance(current, float)
            and math.isnan(value) and math.isnan(current))
        if not same:
            await pv.write(value)


def _shortfall(before: GatingStatus, now: GatingStatus, n: int, waited_s: float) -> str:
    """Why an Arm of ``n`` triggers ran out of time, from the counts it changed: the
    triggers decided too late to fire (each re-armed), the frames the analysis could not
    keep up with and the frames the camera never delivered."""
    return (f"only {now.fired - before.fired} of {n} triggers fired in {waited_s:.0f} s "
            f"({now.state}, period {now.period_s:.3f} s; since Arm: "
            f"{now.late - before.late} decided too late to fire, "
            f"{now.frames_skipped - before.frames_skipped} brightfield frames skipped by "
            f"the analysis, {now.frames_lost - before.frames_lost} lost by the camera, "
            f"{now.frames - before.frames} analysed"
            + (f"; the latest frame's decision: {now.reason}" if now.reason else "") + ")")
