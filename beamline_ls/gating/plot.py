"""The phase-lock picture: is the gate holding, and on which heart phase?

Three panels, as users of the published gating code read their runs: the wrapped
phase of every frame over time with the trigger marks and the target line; the period
estimate over time (the search's estimates before a lock, the reference's after);
and the histogram of the phase at the triggers (the analyzer's, and the true phase
when it is known, centred on its circular mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .analyzer import Decision
from .score import circular_mean, circular_sd, wrap_pm_pi

TWO_PI = 2.0 * math.pi


def _phase_at(decisions: Sequence[Decision], t: np.ndarray) -> np.ndarray:
    """The analyzer's own phase (wrapped) at times ``t``, from its unwrapped track."""
    tt = np.array([d.timestamp for d in decisions if d.unwrapped_phase == d.unwrapped_phase])
    uu = np.array([d.unwrapped_phase for d in decisions
                   if d.unwrapped_phase == d.unwrapped_phase])
    if tt.size < 2:
        return np.full(t.shape, np.nan)
    inside = (t >= tt[0]) & (t <= tt[-1])  # no phase known past the last frame
    return np.where(inside, np.mod(np.interp(t, tt, uu), TWO_PI), np.nan)


def phase_lock_figure(decisions: Sequence[Decision], period_s: np.ndarray,
                      path: str | Path, true_at_fire: np.ndarray | None = None,
                      note: str | None = None) -> Path:
    """Draw the picture for one gated video into ``path`` (PNG); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([d.timestamp for d in decisions])
    ph = np.array([d.phase for d in decisions])
    fires = np.array([d.fire_time for d in decisions if d.fire_time is not None])
    targets = np.array([d.target_phase for d in decisions if d.fire_time is not None])
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), constrained_layout=True)
    ax = axes[0]
    ax.plot(t, ph, ".", ms=2, color="0.3", label="phase of each frame")
    if fires.size:
        ax.plot(fires, targets, "|", ms=12, color="tab:red", label="triggers (at target)")
        ax.plot(t, [d.target_phase for d in decisions], "-", lw=0.8, color="tab:red",
                alpha=0.6, label="target phase")
    ax.set(xlabel="time (s)", ylabel="phase (rad)", ylim=(0, TWO_PI),
           title="wrapped phase, triggers and target" + (f"\n{note}" if note else ""))
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    ax.plot(t, np.asarray(period_s) * 1e3, ".", ms=2, color="tab:blue")
    ax.set(xlabel="time (s)", ylabel="period (ms)",
           title="period estimate (search before the lock, the fitted beat rate after)")
    ax = axes[2]
    if fires.size:
        sets = []
        own = _phase_at(decisions, fires)
        own = own[np.isfinite(own)]
        if own.size:
            sets.append((own, "analyzer's phase"))
        if true_at_fire is not None and true_at_fire.size:
            sets.append((true_at_fire, "true phase"))
        # zoomed to the spread: a good lock is a narrow spike on a full circle
        half = min(math.pi, max([0.25] + [5 * circular_sd(a) for a, _ in sets]))
        bins = np.linspace(-half, half, 61)
        for a, label in sets:
            centred = np.clip(wrap_pm_pi(a - circular_mean(a)), -half, half)
            ax.hist(centred, bins, alpha=0.6, label=f"{label} (SD {circular_sd(a):.3f} rad)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no triggers", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="phase at trigger - circular mean (rad)", ylabel="triggers",
           title="phase at the triggers")
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
