"""Laser power and shutter PVs."""

from __future__ import annotations

import asyncio
import logging

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import pvproperty

from beamline_ls.hardware.laser import LaserDriver
from beamline_ls.iocs.alarms import RecordAlarms
from beamline_ls.iocs.blocking import DeviceWorker

log = logging.getLogger(__name__)


class LaserGroup(RecordAlarms):
    power = pvproperty(name="Power", value=0.0, units="mW", precision=2,
                       doc="output power setpoint")
    power_rbv = pvproperty(name="Power_RBV", value=0.0, units="mW", precision=2, read_only=True)
    enable = pvproperty(name="Enable", value="Off", dtype=ChannelType.ENUM,
                        enum_strings=["Off", "On"])
    enable_rbv = pvproperty(name="Enable_RBV", value="Off", dtype=ChannelType.ENUM,
                            enum_strings=["Off", "On"], read_only=True)
    wavelength = pvproperty(name="Wavelength_RBV", value=0.0, units="nm", read_only=True)
    max_power = pvproperty(name="MaxPower_RBV", value=0.0, units="mW", read_only=True)
    message = pvproperty(name="Message_RBV", value="", dtype=ChannelType.CHAR, max_length=256,
                         string_encoding="utf-8", read_only=True)

    def __init__(self, *args, driver: LaserDriver, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver
        self._worker = DeviceWorker("laser")

    @power.startup
    async def power(self, instance, async_lib):
        await instance.write_metadata(lower_ctrl_limit=0.0,
                                      upper_ctrl_limit=self.driver.max_power_mw)
        await self.max_power.write(self.driver.max_power_mw)
        await self.wavelength.write(self.driver.wavelength_nm)
        fault = ""
        first = True
        while True:
            try:
                power = await self._worker.call(self.driver.power)
                on = await self._worker.call(self.driver.enabled)
                if first:
                    await instance.write(power, verify_value=False)
                    await self.enable.write("On" if on else "Off", verify_value=False)
                    first = False
                await self.power_rbv.write(power)
                await self.enable_rbv.write("On" if on else "Off")
                if fault:
                    fault = ""
                    await self.message.write("ok")
                    await self.power_rbv.write_metadata(status=AlarmStatus.NO_ALARM,
                                                        severity=AlarmSeverity.NO_ALARM)
            except Exception as exc:  # keep serving; the driver may reconnect
                msg = f"{type(exc).__name__}: {exc}"
                if msg != fault:
                    fault = msg
                    log.error("laser: %s", msg)
                    await self.message.write(msg[:250])
                    await self.power_rbv.write_metadata(status=AlarmStatus.COMM,
                                                        severity=AlarmSeverity.INVALID_ALARM)
            await asyncio.sleep(0.2)

    @power.putter
    async def power(self, instance, value):
        await self._worker.call(self.driver.set_power, float(value))
        await self.power_rbv.write(await self._worker.call(self.driver.power))
        return value

    @enable.putter
    async def enable(self, instance, value):
        await self._worker.call(self.driver.set_enabled, value == "On")
        await self.enable_rbv.write(value)
        await self.power_rbv.write(await self._worker.call(self.driver.power))
        return value
