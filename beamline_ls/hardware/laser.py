"""Laser (or laser + attenuator) interface and its simulated backend."""

from __future__ import annotations

from abc import ABC, abstractmethod

from beamline_ls.sim.microscope import LaserState


class LaserDriver(ABC):
    max_power_mw: float
    wavelength_nm: float

    @abstractmethod
    def set_power(self, mw: float) -> None: ...

    @abstractmethod
    def power(self) -> float:
        """Measured output power in mW (0 when disabled)."""

    @abstractmethod
    def set_enabled(self, on: bool) -> None: ...

    @abstractmethod
    def enabled(self) -> bool: ...


class SimLaser(LaserDriver):
    def __init__(self, state: LaserState):
        self.state = state
        self.max_power_mw = state.max_power_mw
        self.wavelength_nm = state.wavelength_nm

    def set_power(self, mw: float) -> None:
        if not 0 <= mw <= self.max_power_mw:
            raise ValueError(f"power must be in [0, {self.max_power_mw}] mW, got {mw}")
        self.state.power_mw = float(mw)

    def power(self) -> float:
        return self.state.power_mw if self.state.enabled else 0.0

    def set_enabled(self, on: bool) -> None:
        self.state.enabled = bool(on)

    def enabled(self) -> bool:
        return self.state.enabled
