"""The gating corpus: hearts the analyzer was not tuned on, scored against the truth.

What: every recorded zebrafish heartbeat (``shared/data/heartbeats``) replayed with a
live heart's irregularity, the procedural hearts of `beamline_ls.sim.procedural`, the
project's own `SimHeart`, and videos with no heart; each at 80, 40, 26.667 and 20 fps
for several seeds. `run_case` renders a case, gates it frame by frame exactly as
``beamline-ls replay`` does (`gate_frames`), and scores the decisions against the true
phase (`score.score_decisions`).

Why a corpus: a method tuned on one heart fails on the next (quiet diastoles, small
hearts, low contrast, 20 fps); only varied hearts with a known phase show it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..frame import Frame
from ..sim.beat import BeatParams, BeatProcess
from ..sim.heart import SimHeart
from ..sim.videos import Camera, HeartVideo, NoiseOnly, RecordedHeart, StaticTissue
from .analyzer import Decision, GatingAnalyzer, GatingConfig
from .executors import InlineExecutor
from .score import Score, effective_fire_times, score_decisions

FRAME_RATES = (80.0, 40.0, 80.0 / 3.0, 20.0)
#: where the recorded heartbeats are, relative to the project root
HEARTBEATS_ENV = "BEAMLINE_LS_HEARTBEATS"


def heartbeats_dir() -> Path:
    """The folder of recorded heartbeats (``$BEAMLINE_LS_HEARTBEATS`` or ../shared/...)."""
    env = os.environ.get(HEARTBEATS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "heartbeats"


def recorded_periods(folder: Path | None = None) -> dict[str, tuple[Path, float]]:
    """``{"reference0001": (tif path, period in frames), ...}`` from periods.csv."""
    folder = folder or heartbeats_dir()
    table = folder / "periods.csv"
    if not table.is_file():
        raise FileNotFoundError(f"no recorded heartbeats: {table} is missing")
    out = {}
    for line in table.read_text().splitlines()[1:]:
        if not line.strip():
            continue
        num, period = line.split(",")[:2]
        name = f"reference{int(num):04d}"
        out[name] = (folder / f"{name}.tif", float(period))
    return out


class SimHeartVideo(HeartVideo):
    """The project's own simulated heart behind the corpus interface."""

    name = "sim-heart"

    def __init__(self, seed: int, duration_s: float, shape: tuple[int, int] = (128, 128)):
        super().__init__(shape, None, Camera(), seed)
        self.heart = SimHeart(seed=100 + seed, duration_s=duration_s + 2, noise_sd=3.0)
        self.beat = self.heart  # type: ignore[assignment]  # has true_phase(times)

    def true_phase(self, times: np.ndarray | float) -> np.ndarray:
        return self.heart.true_phase(times)

    def frame(self, t: float) -> np.ndarray:
        return self.heart.render_brightfield(t, self.shape, self.camera.exposure_s)


def live_camera(rng: np.random.Generator) -> Camera:
    """A live camera's imperfections: drift up to 3 px, 1-2 % flicker, noise 2-4 DN."""
    ang = rng.uniform(0, 2 * math.pi)
    d = rng.uniform(1.0, 3.0)
    return Camera(drift_px=(d * math.cos(ang), d * math.sin(ang)),
                  flicker_frac=rng.uniform(0.01, 0.02), noise_sd=rng.uniform(2.0, 4.0))


def live_beat(rng: np.random.Generator, duration_s: float, **over: object) -> BeatProcess:
    """A live heart's rhythm: 2.0-2.7 Hz, +-5 % modulation, 2 % wander, 3+ odd beats."""
    kw: dict[str, object] = dict(mean_rate_hz=rng.uniform(2.0, 2.7),
                                 n_irregular=max(3, int(round(3 * duration_s / 40.0))),
                                 duration_s=duration_s)
    kw.update(over)
    params = BeatParams(**kw)  # type: ignore[arg-type]
    return BeatProcess(params, seed=int(rng.integers(2**31)))


@dataclass(frozen=True, slots=True)
class Case:
    """One heart (or no heart) of the corpus; ``make(seed, duration_s)`` builds it."""

    name: str
    kind: str  # "recorded" | "procedural" | "sim" | "no-heart"
    make: Callable[[int, float], HeartVideo]
    quiet_after: float = 0.0  # no-heart cases: no trigger may take effect after this (s)


def _recorded(name: str, tif: Path, period: float) -> Case:
    def make(seed: int, duration_s: float) -> HeartVideo:
        rng = np.random.default_rng([seed, int(name[-4:])])
        return RecordedHeart(tif, period, live_beat(rng, duration_s), live_camera(rng), seed)
    return Case(name, "recorded", make)


def _procedural(name: str, cls: type) -> Case:
    def make(seed: int, duration_s: float) -> HeartVideo:
        rng = np.random.default_rng([seed, sum(map(ord, name))])
        return cls(beat=live_beat(rng, duration_s), camera=live_camera(rng), seed=seed)
    return Case(name, "procedural", make)


def _no_heart(name: str, cls: type) -> Case:
    def make(seed: int, duration_s: float) -> HeartVideo:
        rng = np.random.default_rng([seed, sum(map(ord, name))])
        return cls(camera=live_camera(rng), seed=seed)
    return Case(name, "no-heart", make)


def _stopping(name: str, cls: type, stop_s: float | None) -> Case:
    """A heart that stops: at ``stop_s`` (s), or never beats at all (None)."""
    def make(seed: int, duration_s: float) -> HeartVideo:
        rng = np.random.default_rng([seed, sum(map(ord, name))])
        stop = 0.0 if stop_s is None else stop_s
        beat = live_beat(rng, duration_s, stop_s=stop, n_irregular=0)
        return cls(beat=beat, camera=live_camera(rng), seed=seed)
    # a stopping heart may still trigger until the lock is lost: 3 periods of 0.5 s
    return Case(name, "no-heart", make, 0.0 if stop_s is None else stop_s + 1.5)


def hearts(folder: Path | None = None) -> list[Case]:
    """Every heart of the corpus: recorded, procedural and the project's sim heart."""
    from ..sim.procedural import procedural_hearts

    cases = [_recorded(n, tif, p) for n, (tif, p) in recorded_periods(folder).items()]
    cases += [_procedural(n, cls) for n, cls in procedural_hearts().items()]
    cases.append(Case("sim-heart", "sim", lambda s, d: SimHeartVideo(s, d)))
    return cases


def no_hearts() -> list[Case]:
    """Videos that must never lock or trigger (and a heart that stops midway)."""
    from ..sim.procedural import procedural_hearts

    two = procedural_hearts()["two-chamber"]
    return [_no_heart("static-tissue", StaticTissue), _no_heart("noise-only", NoiseOnly),
            _stopping("still-heart", two, None), _stopping("stops-at-8s", two, 8.0)]


def gate_frames(frames: Iterator[Frame], config: GatingConfig | None = None
                ) -> tuple[list[Decision], np.ndarray, GatingAnalyzer]:
    """Run the analyzer over frames; decisions and per-frame processing times (s)."""
    an = GatingAnalyzer(config, executor=InlineExecutor())
    decisions: list[Decision] = []
    proc: list[float] = []
    for fr in frames:
        c0 = time.perf_counter()
        decisions.append(an.process(fr))
        proc.append(time.perf_counter() - c0)
        an.run_background()
    return decisions, np.array(proc), an


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: str
    kind: str
    fps: float
    seed: int
    score: Score
    p99_ms: float
    decisions: tuple[Decision, ...] = ()
    false_triggers: int = 0  # no-heart cases: triggers after case.quiet_after


def run_case(case: Case, fps: float, seed: int, duration_s: float = 40.0,
             config: GatingConfig | None = None, keep_decisions: bool = False
             ) -> CaseResult:
    """Render ``case`` at ``fps`` for ``duration_s``, gate it, score it."""
    video = case.make(seed, duration_s)
    times = np.arange(int(round(duration_s * fps))) / fps
    frames = (Frame(video.frame(float(t)), i, float(t), 0.0) for i, t in enumerate(times))
    cfg = config or GatingConfig()
    decisions, proc, _ = gate_frames(frames, cfg)
    sc = score_decisions(decisions, video.true_phase, cfg.latency_s)
    false = int(np.sum(effective_fire_times(decisions, cfg.latency_s) > case.quiet_after))
    return CaseResult(case.name, case.kind, fps, seed, sc,
                      float(np.percentile(proc[5:], 99) * 1e3),
                      tuple(decisions) if keep_decisions else (),
                      false if case.kind == "no-heart" else 0)
