"""The simulated half of gating: a brightfield camera looking at the simulated heart.

Only this source knows the heart's true phase (``true_phase``), which the gating
system stores beside each trigger so a simulated gated run can be scored; a real
camera has no such field.
"""

from __future__ import annotations

import numpy as np

from beamline_ls.hardware.brightfield import PacedSource
from beamline_ls.sim.heart import SimHeart
from beamline_ls.sim.microscope import SimMicroscope


class SimHeartSource(PacedSource):
    """Brightfield frames of the simulated heart, rendered at their exposure times on
    the microscope's clock (the exposure integrates the heart's motion)."""

    SHAPE = (128, 128)
    EXPOSURE_S = 0.001

    def __init__(self, microscope: SimMicroscope) -> None:
        if microscope.heart is None:
            raise ValueError("the simulated microscope has no heart to gate on")
        super().__init__(microscope.clock)
        self.heart: SimHeart = microscope.heart
        self.exposure_s = self.EXPOSURE_S
        self.true_phase = self._true_phase

    def _true_phase(self, t: float) -> float:
        return float(self.heart.true_phase_wrapped(t))

    @property
    def name(self) -> str:
        return "simulated heart (brightfield 128x128)"

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.SHAPE

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def frame_at(self, k: int, t: float) -> np.ndarray:
        return self.heart.render_brightfield(t, self.SHAPE, self.exposure_s)
