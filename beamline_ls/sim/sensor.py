"""An sCMOS sensor: geometry, readout timing and noise.

Photons become photo-electrons with the quantum efficiency, get shot noise and read
noise (Gaussian approximation, exact in variance, drawn from a pre-generated bank so a
512x512 frame costs about a millisecond), are clipped at full well, and are converted
to uint16 ADU with gain and offset. Readout is rolling: each (binned) row of the ROI
costs one line time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sensor:
    width: int = 2048
    height: int = 2048
    quantum_efficiency: float = 0.8
    read_noise_e: float = 1.6
    gain_e_per_adu: float = 0.46
    offset_adu: float = 100.0
    full_well_e: float = 30_000.0
    line_time_s: float = 9.74e-6
    seed: int = 1
    _bank: np.ndarray = field(init=False, repr=False, default_factory=lambda: np.empty(0))
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def readout_time_s(self, roi_height: int, binning: int) -> float:
        return (roi_height // binning) * self.line_time_s

    def digitize(self, photons: np.ndarray) -> np.ndarray:
        """Expected photons per pixel -> noisy uint16 ADU image."""
        electrons = photons * self.quantum_efficiency
        n = electrons.size
        if self._bank.size < 2 * n:
            self._bank = self._rng.standard_normal(2 * n + 4099).astype(np.float32)
        start = int(self._rng.integers(0, self._bank.size - n))
        noise = self._bank[start : start + n].reshape(electrons.shape)
        signal = electrons + np.sqrt(electrons + self.read_noise_e**2) * noise
        # Read noise rides on the ADU offset, so only saturation clips here.
        np.minimum(signal, self.full_well_e, out=signal)
        adu = signal / self.gain_e_per_adu + self.offset_adu
        np.clip(adu, 0, 65535, out=adu)
        return np.rint(adu, out=adu).astype(np.uint16)
