"""Fluorescent specimens with structures at known positions, in micrometres.

A specimen is a set of point emitters (sub-resolution beads, or samples of a larger
structure) in the sample's own frame. The stage moves the sample: a point at sample
coordinate ``p`` sits at lab coordinate ``p + stage``. Lab z is the optical axis, the
same axis the objective piezo moves the focal plane along.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Specimen:
    """Point emitters: ``positions_um`` (N, 3) as (x, y, z), ``brightness`` (N,) in
    photons per second when in focus, in the sheet centre, at full laser power.
    ``autofluorescence`` is photons / s / um^2 of uniform background at full power.
    """

    positions_um: np.ndarray
    brightness: np.ndarray
    autofluorescence: float = 2_000.0

    def __post_init__(self) -> None:
        self.positions_um = np.asarray(self.positions_um, dtype=float).reshape(-1, 3)
        self.brightness = np.broadcast_to(
            np.asarray(self.brightness, dtype=float), (len(self.positions_um),)
        ).copy()

    @classmethod
    def beads(
        cls,
        n: int = 300,
        extent_um: tuple[float, float, float] = (320.0, 320.0, 90.0),
        z_offset_um: float = 5.0,
        brightness: float = 2.0e6,
        seed: int = 0,
    ) -> Specimen:
        """``n`` beads uniformly spread over a box centred laterally on the optical axis,
        from ``z_offset_um`` to ``z_offset_um + extent_um[2]`` in z."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(-extent_um[0] / 2, extent_um[0] / 2, n)
        y = rng.uniform(-extent_um[1] / 2, extent_um[1] / 2, n)
        z = rng.uniform(z_offset_um, z_offset_um + extent_um[2], n)
        b = brightness * rng.uniform(0.7, 1.3, n)
        return cls(np.column_stack([x, y, z]), b)

    @classmethod
    def single_bead(
        cls, x_um: float = 0.0, y_um: float = 0.0, z_um: float = 50.0, brightness: float = 2.0e6
    ) -> Specimen:
        return cls(np.array([[x_um, y_um, z_um]]), np.array([brightness]), autofluorescence=0.0)
