"""Camera time to host time, for cameras that stamp frames on their own clock."""

from __future__ import annotations

import collections

import numpy as np


class StampMap:
    """Camera time -> host time, robust to the host's receive jitter and to drift.

    For every frame, ``host_received - camera_time`` is the clock offset plus a
    delivery delay that is never negative and usually short, so the smallest values
    over recent frames trace the offset (plus the shortest delay). The two clocks also
    run at slightly different rates (a crystal's ppm; a software-timed emulator's
    slower frames), so the offset drifts: the map takes the lowest point of the older
    and of the newer half of a sliding window of ``window`` frames and follows the line
    through them, which tracks a steady drift without lagging behind it.
    ``latency_s`` (configured) is the part of the shortest delay that is not exposure:
    readout and transfer, which only a calibration can measure.
    """

    MIN_FRAMES = 16  # below this, the plain minimum so far

    def __init__(self, window: int = 256, latency_s: float = 0.0) -> None:
        self.window = max(2 * self.MIN_FRAMES, window)
        self.latency_s = latency_s
        self._d: collections.deque[float] = collections.deque(maxlen=self.window)
        self._n = 0

    def offset(self) -> float:
        """Offset (host - camera, plus the shortest delay) at the newest frame."""
        d = np.fromiter(self._d, float, len(self._d))
        if len(d) < self.MIN_FRAMES:
            return float(d.min())
        half = len(d) // 2
        i1 = int(np.argmin(d[:half]))
        i2 = half + int(np.argmin(d[half:]))
        slope = (d[i2] - d[i1]) / (i2 - i1)
        return float(d[i2] + slope * (len(d) - 1 - i2))

    def host_time(self, camera_s: float, received_s: float, exposure_s: float) -> float:
        """Host time of the exposure start of a frame stamped ``camera_s``."""
        self._d.append(received_s - camera_s)
        self._n += 1
        return camera_s + self.offset() - exposure_s - self.latency_s
