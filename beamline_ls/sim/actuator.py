"""First-order actuators with travel limits: the physics of piezos and galvos.

A commanded trajectory is a sequence of segments, each starting at an absolute time:
a constant target, or a periodic sampled waveform (played cyclically, as an NI board
does with regeneration). The response is the discrete first-order low-pass of the
command with time constant ``tau_s``; position can be queried at any absolute time,
vectorised, which is what the camera needs to integrate over an exposure.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass
class _Segment:
    t0: float
    y0: float
    target: float | None = None  # constant command
    waveform: np.ndarray | None = None  # periodic command samples
    fs: float = 1.0
    first: np.ndarray | None = None  # response over the first period
    steady: np.ndarray | None = None  # response over later periods
    n_periods: int | None = None  # None: until the next segment


class FirstOrderActuator:
    """Position = first-order lag of the command, clipped to ``travel``."""

    def __init__(self, tau_s: float, travel: tuple[float, float], position: float = 0.0):
        if tau_s < 0:
            raise ValueError("tau_s must be >= 0")
        self.tau_s = tau_s
        self.travel = travel
        self._lock = threading.Lock()
        self._segments: list[_Segment] = [_Segment(t0=-np.inf, y0=position, target=position)]

    # -- commands ---------------------------------------------------------------
    def command_constant(self, t: float, target: float) -> None:
        """From absolute time ``t`` on, command a constant ``target``."""
        target = float(np.clip(target, *self.travel))
        with self._lock:
            y0 = float(self._position_locked(np.array([t]))[0])
            self._trim(t)
            self._segments.append(_Segment(t0=t, y0=y0, target=target))

    def command_waveform(
        self, t: float, samples: np.ndarray, fs: float, n_periods: int | None = None
    ) -> None:
        """From absolute time ``t``, play ``samples`` cyclically at ``fs``.

        After ``n_periods`` the command holds the last sample.
        """
        samples = np.clip(np.asarray(samples, dtype=float), *self.travel)
        with self._lock:
            y0 = float(self._position_locked(np.array([t]))[0])
            self._trim(t)
            seg = _Segment(t0=t, y0=y0, waveform=samples, fs=fs, n_periods=n_periods)
            seg.first = self._filter(samples, y0, fs)
            seg.steady = self._filter(samples, float(seg.first[-1]), fs)
            # one more period for an accurate steady state when tau is long
            seg.steady = self._filter(samples, float(seg.steady[-1]), fs)
            self._segments.append(seg)
            if n_periods is not None:
                t_end = t + n_periods * samples.size / fs
                y_end = float(seg.steady[-1] if n_periods > 1 else seg.first[-1])
                self._segments.append(_Segment(t0=t_end, y0=y_end, target=float(samples[-1])))

    def hold(self, t: float) -> None:
        """Stop at absolute time ``t``: hold the command value it had then."""
        with self._lock:
            cmd = self._command_locked(t)
            y0 = float(self._position_locked(np.array([t]))[0])
            self._trim(t)
            self._segments.append(_Segment(t0=t, y0=y0, target=cmd))

    # -- queries ----------------------------------------------------------------
    def position(self, t: np.ndarray | float) -> np.ndarray:
        """Actual position at absolute time(s) ``t``."""
        with self._lock:
            return self._position_locked(np.atleast_1d(np.asarray(t, dtype=float)))

    def command(self, t: float) -> float:
        with self._lock:
            return self._command_locked(t)

    def is_settled(self, t: float, tolerance: float) -> bool:
        """True when at ``t`` the command is constant and the position within tolerance."""
        with self._lock:
            seg = self._segment_at(t)
            if seg.target is None:
                return False
            y = float(self._position_locked(np.array([t]))[0])
            return abs(y - seg.target) <= tolerance

    # -- internals --------------------------------------------------------------
    def _filter(self, u: np.ndarray, y0: float, fs: float) -> np.ndarray:
        if self.tau_s == 0:
            return u.copy()
        # imported here: scipy.signal takes ~0.8 s to import, a third of an IOC's start
        from scipy.signal import lfilter

        a = 1.0 - np.exp(-1.0 / (fs * self.tau_s))
        y, _ = lfilter([a], [1.0, a - 1.0], u, zi=[(1.0 - a) * y0])
        return y

    def _trim(self, t: float) -> None:
        while len(self._segments) > 1 and self._segments[-1].t0 >= t:
            self._segments.pop()
        if len(self._segments) > 64:
            del self._segments[1:-32]

    def _segment_at(self, t: float) -> _Segment:
        for seg in reversed(self._segments):
            if seg.t0 <= t:
                return seg
        return self._segments[0]

    def _command_locked(self, t: float) -> float:
        seg = self._segment_at(t)
        if seg.target is not None:
            return seg.target
        assert seg.waveform is not None
        n = int((t - seg.t0) * seg.fs) % seg.waveform.size
        return float(seg.waveform[n])

    def _position_locked(self, t: np.ndarray) -> np.ndarray:
        out = np.empty_like(t)
        starts = np.array([s.t0 for s in self._segments])
        idx = np.searchsorted(starts, t, side="right") - 1
        idx = np.clip(idx, 0, len(self._segments) - 1)
        for i in np.unique(idx):
            seg = self._segments[i]
            mask = idx == i
            dt = t[mask] - seg.t0
            if seg.target is not None:
                if self.tau_s == 0 or not np.isfinite(seg.t0):
                    out[mask] = seg.target
                else:
                    out[mask] = seg.target + (seg.y0 - seg.target) * np.exp(-dt / self.tau_s)
            else:
                assert seg.first is not None and seg.steady is not None
                n_total = seg.first.size
                k = np.floor(dt * seg.fs).astype(np.int64)
                period = k // n_total
                within = k % n_total
                out[mask] = np.where(period == 0, seg.first[within], seg.steady[within])
        return out
