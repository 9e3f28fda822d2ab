"""Positioner interface (piezo, galvo, stage axis) and its simulated backends.

A positioner moves without blocking; callers poll ``is_moving``. The IOC turns that
into motor-record fields (.VAL, .RBV, .DMOV, .MOVN, .STOP).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from beamline_ls.clock import Clock
from beamline_ls.sim.actuator import FirstOrderActuator
from beamline_ls.sim.stage import LinearAxis


class PositionerDriver(ABC):
    units: str = ""
    limits: tuple[float, float] = (0.0, 0.0)
    velocity: float = 0.0  # units per second, 0 when not meaningful
    #: the fastest speed a client may ask for; 0: the speed cannot be changed
    max_velocity: float = 0.0
    precision: int = 3
    #: where the home switch is (dial units); None: this axis cannot home
    home_switch: float | None = None
    #: whether the ends of the travel are limit switches (a stage) or merely the
    #: range (a piezo or galvo, which can sit at its end)
    has_limit_switches: bool = False
    #: seconds from rest to speed and back (the motor record's ACCL); None: not known
    acceleration_time: float | None = None

    def home(self) -> None:
        """Start moving to the home switch (``NotImplementedError`` if there is none)."""
        if self.home_switch is None:
            raise NotImplementedError(f"this {type(self).__name__} has no home switch")
        self.move(self.home_switch)

    @abstractmethod
    def move(self, target: float) -> None:
        """Start moving to ``target`` (raises ValueError outside the limits)."""

    @abstractmethod
    def position(self) -> float: ...

    @abstractmethod
    def is_moving(self) -> bool: ...

    @abstractmethod
    def stop(self) -> None: ...

    def set_velocity(self, velocity: float) -> None:
        """Move at ``velocity`` (units/s) from now on; ValueError when this axis's
        speed is not adjustable or ``velocity`` is outside (0, ``max_velocity``]."""
        if not self.max_velocity:
            what = (f"fixed at {self.velocity:g} {self.units}/s" if self.velocity
                    else "set by its response time, not a speed")
            raise ValueError(f"this {type(self).__name__}'s speed is {what}")
        if not 0 < velocity <= self.max_velocity:
            raise ValueError(f"speed {velocity:g} {self.units}/s outside (0, "
                             f"{self.max_velocity:g}]")
        self._apply_velocity(velocity)
        self.velocity = velocity

    def _apply_velocity(self, velocity: float) -> None:
        """Backends with an adjustable speed send it to the hardware here."""
        raise NotImplementedError

    def check(self, target: float) -> None:
        lo, hi = self.limits
        if not lo <= target <= hi:
            raise ValueError(f"target {target} {self.units} outside limits [{lo}, {hi}]")


class SimActuatorPositioner(PositionerDriver):
    """A piezo or galvo: first-order actuator settling to within ``tolerance``.

    ``busy`` tells whether another owner (a scan board playing waveforms) holds the
    actuator; moves are refused then.
    """

    def __init__(
        self,
        actuator: FirstOrderActuator,
        clock: Clock,
        units: str,
        tolerance: float,
        busy: Callable[[], bool] = lambda: False,
        precision: int = 3,
    ):
        self.actuator = actuator
        self.clock = clock
        self.units = units
        self.limits = actuator.travel
        self.tolerance = tolerance
        self.precision = precision
        self._busy = busy
        self.home_switch = min(max(0.0, self.limits[0]), self.limits[1])  # simulated

    def move(self, target: float) -> None:
        self.check(target)
        if self._busy():
            raise RuntimeError("the scan board is driving this axis; stop the scan first")
        self.actuator.command_constant(self.clock.now(), target)

    def position(self) -> float:
        return float(self.actuator.position(self.clock.now())[0])

    def is_moving(self) -> bool:
        if self._busy():
            return True
        return not self.actuator.is_settled(self.clock.now(), self.tolerance)

    def stop(self) -> None:
        if not self._busy():
            self.actuator.hold(self.clock.now())


class SimStageAxis(PositionerDriver):
    def __init__(self, axis: LinearAxis, clock: Clock, units: str = "um"):
        self.axis = axis
        self.clock = clock
        self.units = units
        self.limits = axis.travel
        self.velocity = axis.velocity
        self.max_velocity = axis.velocity  # the configured speed is the axis's fastest
        self.precision = 2
        self.home_switch = min(max(0.0, self.limits[0]), self.limits[1])  # simulated
        self.has_limit_switches = True
        self.acceleration_time = axis.stop_time

    def move(self, target: float) -> None:
        self.check(target)
        self.axis.move(self.clock.now(), target)

    def _apply_velocity(self, velocity: float) -> None:
        self.axis.set_velocity(self.clock.now(), velocity)

    def position(self) -> float:
        return self.axis.position(self.clock.now())

    def is_moving(self) -> bool:
        return self.axis.is_moving(self.clock.now())

    def stop(self) -> None:
        self.axis.stop(self.clock.now())


class FocusPositioner(PositionerDriver):
    """The objective piezo as users move it by hand or between gated planes: a move
    parks the scan board at the new focal plane, so both light sheets follow through
    their current calibration (moving the piezo alone would defocus the image)."""

    def __init__(self, board, piezo: PositionerDriver, calibrations: Callable[[], tuple]):
        self.board = board
        self.piezo = piezo
        self.calibrations = calibrations
        self.units = piezo.units
        self.limits = piezo.limits
        self.precision = piezo.precision
        self.velocity = piezo.velocity
        self.home_switch = piezo.home_switch

    def move(self, target: float) -> None:
        self.check(target)
        if self.board.running:
            raise RuntimeError("the scan board is playing a scan; stop it first")
        self.board.park(target, self.calibrations())

    def position(self) -> float:
        return self.piezo.position()

    def is_moving(self) -> bool:
        return self.piezo.is_moving()

    def stop(self) -> None:
        self.piezo.stop()
