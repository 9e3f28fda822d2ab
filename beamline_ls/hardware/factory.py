"""Build the set of drivers an IOC serves, from configuration.

Only the simulated backend exists so far; every device is simulated and all of them
share one :class:`SimMicroscope`, so they act on the same physical world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beamline_ls.hardware.camera import CameraDriver, SimCamera
from beamline_ls.hardware.laser import LaserDriver, SimLaser
from beamline_ls.hardware.positioner import (
    PositionerDriver,
    SimActuatorPositioner,
    SimStageAxis,
)
from beamline_ls.hardware.scanboard import ScanBoardDriver, SimScanBoard
from beamline_ls.sim.microscope import SimMicroscope


@dataclass
class Drivers:
    camera: CameraDriver
    scanboard: ScanBoardDriver
    piezo: PositionerDriver
    galvos: list[PositionerDriver]
    stage: dict[str, PositionerDriver]
    laser: LaserDriver
    microscope: SimMicroscope | None = None


def build_drivers(
    hardware: dict[str, dict[str, Any]] | None = None, microscope: SimMicroscope | None = None
) -> Drivers:
    """Drivers for every device; ``hardware`` names a backend per device (default sim)."""
    hardware = hardware or {}
    for name, cfg in hardware.items():
        backend = cfg.get("backend", "sim")
        if backend != "sim":
            raise ValueError(f"hardware.{name}: backend {backend!r} is not available (only 'sim')")
    m = microscope or SimMicroscope()
    board = SimScanBoard(m)

    def busy() -> bool:
        return board.running

    piezo = SimActuatorPositioner(m.piezo, m.clock, "um", tolerance=0.05, busy=busy)
    galvos: list[PositionerDriver] = [
        SimActuatorPositioner(g, m.clock, "V", tolerance=1e-4, busy=busy, precision=4)
        for g in m.galvos
    ]
    stage: dict[str, PositionerDriver] = {
        axis: SimStageAxis(a, m.clock) for axis, a in m.stage.items()
    }
    return Drivers(SimCamera(m), board, piezo, galvos, stage, SimLaser(m.laser), m)
