"""Compile and load everything the analyzer runs before live frames stream.

Why: the numba kernels compile on their first call (seconds in a fresh checkout, a
fraction of a second from the on-disk cache) and some library code loads lazily. Live,
those first calls land on the first frames, on the first lock and on the first fold:
the analysis stalls for seconds, frames pile up and every trigger decided meanwhile is
late. A live system therefore runs a short synthetic heartbeat of the camera's frame
shape and dtype through a throwaway analyzer first, the way a camera driver is primed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator

import numpy as np

from ..frame import Frame

logger = logging.getLogger(__name__)

_warmed: set[tuple[tuple[int, ...], str]] = set()  # (shape, dtype) already run


def beating_disc(shape: tuple[int, int], t: float, period_s: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A dark disc on a bright field whose radius beats with ``period_s``, plus noise
    (a 0-255 float image)."""
    h, w = shape
    y, x = np.ogrid[:h, :w]
    beat = 0.5 * (1.0 - math.cos(2 * math.pi * t / period_s))
    r = 0.18 * min(h, w) * (1.0 + 0.35 * beat)
    disc = ((y - h / 2) ** 2 + (x - w / 2) ** 2) < r * r
    return 180.0 - 90.0 * disc + rng.normal(0.0, 3.0, shape)


def warm_up(shape: tuple[int, int], dtype: type | np.dtype = np.uint8,
            fps: float = 40.0, seconds: float = 4.0) -> bool:
    """Run ``seconds`` of a synthetic beat (frames of ``shape`` and ``dtype``) through
    a throwaway analyzer, so every per-frame, lock and fold path has run once.

    Returns True when the analyzer locked (every path ran), at once when this shape
    and dtype already ran in this process; False is logged and harmless (the first
    live frames then pay the compile time).
    """
    from . import strength
    from .analyzer import GatingAnalyzer, GatingConfig  # the analyzer is the user

    key = (tuple(shape), np.dtype(dtype).str)
    if key in _warmed:
        return True
    t0 = time.perf_counter()
    strength.warm_up()  # used only once a heart's beats are found to differ in strength
    analyzer = GatingAnalyzer(GatingConfig())
    rng = np.random.default_rng(0)
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 255
    scale = top / 255.0
    locked = False
    with _silenced_here():
        for k in range(int(seconds * fps)):
            t = k / fps
            img = np.clip(beating_disc(shape, t, 0.5, rng) * scale, 0, top).astype(dtype)
            d = analyzer.process(Frame(img, k, t, 0.001))
            locked = locked or d.state == "locked"
    took = time.perf_counter() - t0
    if locked:
        _warmed.add(key)
        logger.debug("gating analyzer warmed up on %s %s frames in %.2f s", shape,
                     np.dtype(dtype).name, took)
    else:
        logger.warning("gating warm-up did not lock on its synthetic heartbeat (%.2f s); "
                       "the first live frames will be slow", took)
    return locked


@contextlib.contextmanager
def _silenced_here() -> Iterator[None]:
    """Drop the gating loggers' records made on this thread (the throwaway analyzer's
    "reference adopted" would read like a real lock in the IOC log); other threads log
    as usual."""
    me = threading.get_ident()

    def other_threads(record: logging.LogRecord) -> bool:
        return record.thread != me

    names = [n for n in logging.root.manager.loggerDict
             if n.startswith("beamline_ls.gating.") and n != __name__]
    for n in names:
        logging.getLogger(n).addFilter(other_threads)
    try:
        yield
    finally:
        for n in names:
            logging.getLogger(n).removeFilter(other_threads)
