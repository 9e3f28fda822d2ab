"""A positioner served as an EPICS motor record, so ophyd's EpicsMotor (and every
motor screen) drives it unchanged: .VAL, .RBV, .DMOV, .MOVN, .STOP, .EGU, .HLM/.LLM,
.VELO. A put to .VAL starts the move and returns; a poll loop keeps the read-back and
done-moving fields current, which keeps .STOP usable while moving."""

from __future__ import annotations

import asyncio
import logging

from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, pvproperty

from beamline_ls.hardware.positioner import PositionerDriver
from beamline_ls.iocs.blocking import DeviceWorker

log = logging.getLogger(__name__)


class MotorGroup(PVGroup):
    motor = pvproperty(value=0.0, name="", record="motor", precision=3)

    def __init__(self, *args, driver: PositionerDriver, poll_s: float = 0.02,
                 idle_poll_s: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self._moving = False
        self._wake = asyncio.Event()
        self._worker = DeviceWorker(self.prefix.rstrip(":") or "motor")
        self._fault = ""

    @motor.startup
    async def motor(self, instance, async_lib):
        f = instance.field_inst
        lo, hi = self.driver.limits
        await instance.write_metadata(
            lower_ctrl_limit=lo, upper_ctrl_limit=hi, units=self.driver.units,
            precision=self.driver.precision,
        )
        for field, value in (
            (f.user_low_limit, lo), (f.user_high_limit, hi),
            (f.dial_low_limit, lo), (f.dial_high_limit, hi),
            (f.velocity, self.driver.velocity),
        ):
            await field.write(value)
        await f.engineering_units.write(self.driver.units)
        await f.done_moving_to_value.write(1)
        await f.motor_is_moving.write(0)
        try:
            pos = await self._worker.call(self.driver.position)
            await instance.write(pos, verify_value=False)
            await f.user_readback_value.write(pos)
        except Exception as exc:  # hardware absent at start: keep serving, show the alarm
            await self._report_fault(instance, exc)
        while True:
            try:
                await self._update(instance)
                if self._fault:
                    self._fault = ""
                    await instance.write_metadata(status=AlarmStatus.NO_ALARM,
                                                  severity=AlarmSeverity.NO_ALARM)
                    log.info("%s: communication restored", instance.pvname)
            except Exception as exc:  # keep the loop alive; the driver may reconnect
                await self._report_fault(instance, exc)
            busy = self._moving or bool(f.motor_is_moving.value)
            try:  # poll fast while moving, slowly when idle; a new move wakes us
                await asyncio.wait_for(self._wake.wait(),
                                       self.poll_s if busy else self.idle_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _report_fault(self, instance, exc: Exception) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        if msg != self._fault:
            log.error("%s: %s", instance.pvname, msg)
            self._fault = msg
            await instance.write_metadata(status=AlarmStatus.COMM,
                                          severity=AlarmSeverity.INVALID_ALARM)
        if self._moving:  # a move cannot finish without the device: release waiters
            self._moving = False
            await instance.field_inst.motor_is_moving.write(0)
            await instance.field_inst.done_moving_to_value.write(1)

    async def _update(self, instance) -> None:
        f = instance.field_inst
        if f.stop.value:
            await self._worker.call(self.driver.stop)
            await f.stop.write(0)
        pos = await self._worker.call(self.driver.position)
        if abs(pos - f.user_readback_value.value) > 10 ** -(self.driver.precision + 2):
            await f.user_readback_value.write(pos)
            await f.dial_readback_value.write(pos)
        moving = await self._worker.call(self.driver.is_moving)
        if moving != bool(f.motor_is_moving.value):
            await f.motor_is_moving.write(int(moving))
        if self._moving and not moving:
            self._moving = False
            pos = await self._worker.call(self.driver.position)  # settled value, not the
            await f.user_readback_value.write(pos)              # one read before the check
            await f.done_moving_to_value.write(1)

    @motor.putter
    async def motor(self, instance, value):
        try:
            await self._worker.call(self.driver.move, float(value))
        except (ValueError, RuntimeError) as exc:
            log.error("%s: move to %s refused: %s", instance.pvname, value, exc)
            raise
        f = instance.field_inst
        self._moving = True
        await f.done_moving_to_value.write(0)
        await f.motor_is_moving.write(1)
        self._wake.set()
        return value
