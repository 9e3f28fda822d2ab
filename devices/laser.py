"""Excitation laser: power (mW, limits from the IOC) and on/off."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO


class Laser(Device):
    power = Cpt(EpicsSignal, "Power_RBV", write_pv="Power", limits=True, put_complete=True,
                tolerance=0.01)
    enable = Cpt(EpicsSignal, "Enable_RBV", write_pv="Enable", string=True, put_complete=True,
                 kind="config")
    wavelength = Cpt(EpicsSignalRO, "Wavelength_RBV", kind="config")
    max_power = Cpt(EpicsSignalRO, "MaxPower_RBV", kind="config")

    def set(self, value: float):
        """Set the output power in mW (``bps.mv(laser, 20)``)."""
        return self.power.set(value)
