"""A positioner served as an EPICS motor record, so ophyd's EpicsMotor (and every
motor screen) drives it unchanged: .VAL, .RBV, .DMOV, .MOVN, .STOP, .EGU, .HLM/.LLM,
.VELO. A put to .VAL starts the move and returns; a poll loop keeps the read-back and
done-moving fields current, which keeps .STOP usable while moving."""

from __future__ import annotations

import asyncio
import logging

from caproto.server import PVGroup, pvproperty

from beamline_ls.hardware.positioner import PositionerDriver

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
        pos = self.driver.position()
        await instance.write(pos, verify_value=False)
        await f.user_readback_value.write(pos)
        await f.done_moving_to_value.write(1)
        await f.motor_is_moving.write(0)
        while True:
            await self._update(instance)
            busy = self._moving or bool(f.motor_is_moving.value)
            try:  # poll fast while moving, slowly when idle; a new move wakes us
                await asyncio.wait_for(self._wake.wait(),
                                       self.poll_s if busy else self.idle_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _update(self, instance) -> None:
        f = instance.field_inst
        if f.stop.value:
            self.driver.stop()
            await f.stop.write(0)
        pos = self.driver.position()
        if abs(pos - f.user_readback_value.value) > 10 ** -(self.driver.precision + 2):
            await f.user_readback_value.write(pos)
            await f.dial_readback_value.write(pos)
        moving = self.driver.is_moving()
        if moving != bool(f.motor_is_moving.value):
            await f.motor_is_moving.write(int(moving))
        if self._moving and not moving:
            self._moving = False
            await f.user_readback_value.write(pos)
            await f.done_moving_to_value.write(1)

    @motor.putter
    async def motor(self, instance, value):
        try:
            self.driver.move(float(value))
        except (ValueError, RuntimeError) as exc:
            log.error("%s: move to %s refused: %s", instance.pvname, value, exc)
            raise
        f = instance.field_inst
        self._moving = True
        await f.done_moving_to_value.write(0)
        await f.motor_is_moving.write(1)
        self._wake.set()
        return value
