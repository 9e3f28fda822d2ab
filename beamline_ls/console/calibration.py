"""Galvo-to-piezo calibration points, collected by the operator in the console.

The operator moves the piezo to a depth, moves each galvo until its light sheet is in
focus there, and adds the point: the console records the three read-back positions.
With three or more points, each galvo's line (volts = offset + slope * z) is fitted
by :meth:`GalvoCalibration.fit`, the scan board's own rule, and can be applied to the
scan board's ``GalvoNOffset``/``GalvoNSlope``. The points belong to the console
process, shared by every browser, so two operators see the same calibration.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from beamline_ls.waveforms import GalvoCalibration

GALVOS = ("galvo1", "galvo2")


@dataclass(frozen=True)
class Point:
    z_um: float
    volts: tuple[float, float]  # galvo1, galvo2 read-backs


class CalibrationPoints:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: list[Point] = []

    def add(self, z_um: float, galvo1: float, galvo2: float) -> Point:
        values = (z_um, galvo1, galvo2)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"a calibration point needs the piezo and both galvo "
                             f"positions, got piezo {z_um}, galvos {galvo1}, {galvo2}")
        p = Point(float(z_um), (float(galvo1), float(galvo2)))
        with self._lock:
            self._points.append(p)
        return p

    def remove(self, index: int) -> None:
        with self._lock:
            if not 0 <= index < len(self._points):
                raise IndexError(f"no calibration point {index} (there are "
                                 f"{len(self._points)})")
            del self._points[index]

    def clear(self) -> None:
        with self._lock:
            self._points.clear()

    def fits(self) -> dict[str, GalvoCalibration]:
        """Each galvo's fitted line; a ValueError (why) with fewer than 3 points or
        when the points share one depth."""
        with self._lock:
            points = list(self._points)
        z = np.array([p.z_um for p in points])
        if len(points) < 3:
            raise ValueError(f"{len(points)} point(s): a fit needs at least 3")
        if np.ptp(z) < 1e-6:
            raise ValueError("every point is at the same piezo depth: move the piezo "
                             "between points")
        return {g: GalvoCalibration.fit(z, np.array([p.volts[i] for p in points]))
                for i, g in enumerate(GALVOS)}

    def snapshot(self) -> dict:
        with self._lock:
            points = list(self._points)
        out: dict = {"points": [{"z": p.z_um, "galvo1": p.volts[0], "galvo2": p.volts[1]}
                                for p in points], "fit": None, "why": ""}
        try:
            fits = self.fits()
        except ValueError as exc:
            out["why"] = str(exc)
            return out
        z = np.array([p.z_um for p in points])
        out["fit"] = {}
        for i, (g, cal) in enumerate(fits.items()):
            resid = np.array([p.volts[i] for p in points]) - cal.volts(z)
            out["fit"][g] = {"offset": cal.offset_v, "slope": cal.slope_v_per_um,
                             "rms": float(np.sqrt(np.mean(resid ** 2)))}
        return out
