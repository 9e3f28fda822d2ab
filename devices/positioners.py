"""Positioners served as motor records: objective piezo, vertical galvos, XYZ stage.

They are plain :class:`ophyd.EpicsMotor` devices, so everything that drives a beamline
motor (``bps.mv``, scans, motor screens) drives them unchanged; limits come from the
IOC and moves outside them raise ``LimitError`` before anything moves.
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor


class Piezo(EpicsMotor):
    """Objective piezo; position of the focal plane in um."""


class Galvo(EpicsMotor):
    """Vertical galvo of one illumination beam, in volts."""


class Stage(Device):
    """XYZ sample stage, um."""

    x = Cpt(EpicsMotor, "X")
    y = Cpt(EpicsMotor, "Y")
    z = Cpt(EpicsMotor, "Z")
