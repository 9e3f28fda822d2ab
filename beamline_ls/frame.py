"""The unit of data that moves through the system: an image with the metadata that
travels with it.

A bare array with a parallel list of meanings is how frames get mislabelled; every
stage (camera, gating analyzer, pipeline, writer) passes `Frame` objects instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: per-frame metadata the gating adds to the frames it triggered (``Frame.extra``)
GATING_FIELDS = ("trigger_time", "fired_at", "gating_phase", "period_s", "reference_id",
                 "true_phase", "late_retries", "brightfield_frame", "brightfield_time")


@dataclass(slots=True)
class Frame:
    """One camera frame and its metadata.

    Attributes
    ----------
    image:
        2-D array (y, x), usually uint8 or uint16.
    frame_id:
        Monotonic counter from the camera; a gap between consecutive ids is a lost frame.
    timestamp:
        Absolute time of the start of the exposure, in seconds, on the camera timebase
        (epoch seconds for the simulator).
    exposure:
        Exposure time in seconds.
    z_um:
        Measured focal-plane position (objective piezo) at mid-exposure, micrometres.
    plane, volume:
        Position of the frame in a volumetric scan; -1 when not part of one.
    extra:
        Further scalar metadata that only some frames carry (gating phase, trigger
        time, true phase on the simulator, ...).
    capture_position:
        Where the frame goes in the capture it was offered to, fixed when it was
        offered (-1: not yet offered); the writer may take it much later, after the
        camera restarted its ids.
    """

    image: np.ndarray
    frame_id: int
    timestamp: float
    exposure: float = 0.0
    z_um: float = math.nan
    plane: int = -1
    volume: int = -1
    extra: dict[str, float] = field(default_factory=dict)
    capture_position: int = -1

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]


def bin_down(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` binned (mean of f x f blocks, float32) by the smallest integer factor
    f that makes neither side exceed ``max_side``; rows or columns that do not fill a
    block are dropped. A live view's way to ship a large frame: the binned image keeps
    the mean brightness that a subsampled one would alias away."""
    if image.ndim != 2 or max_side < 1:
        raise ValueError(f"need a 2-D image and max_side >= 1, got {image.shape}, "
                         f"{max_side}")
    h, w = image.shape
    f = max(1, -(-max(h, w) // max_side))
    if f == 1:
        return image.astype(np.float32)
    hh, ww = h // f * f, w // f * f
    return image[:hh, :ww].reshape(hh // f, f, ww // f, f).mean(axis=(1, 3),
                                                                  dtype=np.float32)
