"""Laser power and shutter PVs."""

from __future__ import annotations

import asyncio

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from beamline_ls.hardware.laser import LaserDriver


class LaserGroup(PVGroup):
    power = pvproperty(name="Power", value=0.0, units="mW", precision=2,
                       doc="output power setpoint")
    power_rbv = pvproperty(name="Power_RBV", value=0.0, units="mW", precision=2, read_only=True)
    enable = pvproperty(name="Enable", value="Off", dtype=ChannelType.ENUM,
                        enum_strings=["Off", "On"])
    enable_rbv = pvproperty(name="Enable_RBV", value="Off", dtype=ChannelType.ENUM,
                            enum_strings=["Off", "On"], read_only=True)
    wavelength = pvproperty(name="Wavelength_RBV", value=0.0, units="nm", read_only=True)
    max_power = pvproperty(name="MaxPower_RBV", value=0.0, units="mW", read_only=True)

    def __init__(self, *args, driver: LaserDriver, **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver

    @power.startup
    async def power(self, instance, async_lib):
        await instance.write_metadata(lower_ctrl_limit=0.0,
                                      upper_ctrl_limit=self.driver.max_power_mw)
        await self.max_power.write(self.driver.max_power_mw)
        await self.wavelength.write(self.driver.wavelength_nm)
        await instance.write(self.driver.power() if self.driver.enabled() else 0.0,
                             verify_value=False)
        await self.enable.write("On" if self.driver.enabled() else "Off", verify_value=False)
        while True:
            await self.power_rbv.write(self.driver.power())
            await self.enable_rbv.write("On" if self.driver.enabled() else "Off")
            await asyncio.sleep(0.2)

    @power.putter
    async def power(self, instance, value):
        self.driver.set_power(float(value))
        await self.power_rbv.write(self.driver.power())
        return value

    @enable.putter
    async def enable(self, instance, value):
        self.driver.set_enabled(value == "On")
        await self.enable_rbv.write(value)
        await self.power_rbv.write(self.driver.power())
        return value
