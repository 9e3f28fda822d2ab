"""Score gating against the simulator's TRUE phase (never the analyzer's own estimate).

Used by the tests and benchmarks: render a simulated brightfield video, run the
analyzer in virtual time, and measure the true heart phase at every fire time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..frame import Frame
from ..sim.heart import SimHeart
from .analyzer import Decision, GatingAnalyzer
from .executors import InlineExecutor
from .score import circular_mean, circular_sd, score_decisions, wrap_pm_pi

TWO_PI = 2.0 * math.pi

__all__ = ["RunResult", "circular_mean", "circular_sd", "run_sim", "wrap_pm_pi"]


@dataclass
class RunResult:
    decisions: list[Decision]
    frame_times: np.ndarray
    fire_times: np.ndarray
    true_phase_at_fire: np.ndarray  # wrapped, rad
    proc_times_s: np.ndarray
    heart: SimHeart
    analyzer: GatingAnalyzer
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def first_lock_time(self) -> float:
        for d in self.decisions:
            if d.state == "locked":
                return d.timestamp
        return math.nan

    def mean_period_s(self) -> float:
        return self.heart.mean_period(float(self.frame_times[0]), float(self.frame_times[-1]))

    def trigger_sd_rad(self, t_from: float = -math.inf) -> float:
        sel = self.fire_times >= t_from
        return circular_sd(self.true_phase_at_fire[sel]) if sel.sum() > 1 else math.nan

    def beats_fraction(self) -> float:
        """Fraction of heartbeats after the first lock that got >= 1 trigger, by the
        same rules the corpus is scored with (`score.score_decisions`)."""
        return score_decisions(self.decisions, self.heart.true_phase,
                               self.analyzer.cfg.latency_s).beats

    def n_panic(self) -> int:
        return sum(1 for d in self.decisions if d.trigger_kind == "panic")


def run_sim(heart: SimHeart, fps: float, duration_s: float,
            shape: tuple[int, int] = (128, 128), exposure: float = 0.002,
            analyzer: GatingAnalyzer | None = None, t0: float | None = None,
            timestamps: np.ndarray | None = None, dtype: type = np.uint8,
            image_hook: Callable[[int, np.ndarray], np.ndarray] | None = None,
            ) -> RunResult:
    """Render frames on the fly and gate them; returns fire times and true phases."""
    an = analyzer or GatingAnalyzer(executor=InlineExecutor())
    if timestamps is None:
        start = heart.params.t0 if t0 is None else t0
        timestamps = start + np.arange(int(round(duration_s * fps))) / fps
    decisions: list[Decision] = []
    fires: list[float] = []
    proc = np.empty(len(timestamps))
    for i, t in enumerate(timestamps):
        img = heart.render_brightfield(float(t), shape, exposure, dtype)
        if image_hook is not None:
            img = image_hook(i, img)
        fr = Frame(img, i, float(t), exposure)
        c0 = time.perf_counter()
        d = an.process(fr)
        proc[i] = time.perf_counter() - c0
        an.run_background()
        decisions.append(d)
        if d.fire_time is not None:
            fires.append(d.fire_time)
    ft = np.array(fires)
    tp = heart.true_phase_wrapped(ft) if ft.size else np.empty(0)
    return RunResult(decisions, np.asarray(timestamps, float), ft, tp, proc, heart, an)
