"""Compiled weighted line fits for the predictor: the per-frame fit-window choice and
the fit without outliers.

Why numba: the predictor fits lines through 10-60 phases on every locked frame. In
numpy each of its ~40 small reductions costs a few microseconds of call overhead, not
arithmetic: measured at 128 x 128 px (cProfile, 900 locked frames of the sim heart),
choosing the window and fitting took 0.23 ms of the 0.86 ms per frame. The loops
below do the same sums in one pass each. ``error_model="numpy"``: a degenerate window
(all times equal) gives inf/nan, which the callers reject, instead of raising.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: reasons `choose_window` rejects windows for, by the code it returns
REJECT_REASONS = ("", "timestamp gap", "degenerate fit", "implausible rate")


@numba.njit(cache=True, nogil=True, error_model="numpy")
def choose_window(t, ph, w, lows, nominal, max_gap_phase, rate_tolerance, t_from,
                  target, quantiles):  # pragma: no cover - compiled
    """Start index among ``lows`` of the window (ending at the newest phase) whose line
    has the smallest standard error at the next ``target`` crossing after ``t_from``,
    among the windows that agree with every shorter one, and the code of the first
    reason a window was rejected for (-1 when none fits). ``w``: weights scaled to at
    most 1.

    Agreement (the intersection of confidence intervals rule): the windows are taken
    from the shortest up; each predicts the crossing time with a standard error, and
    the confidence intervals (standard error times ``quantiles[dof - 1]``, Student's
    t for the window's degrees of freedom: a short window's scatter, from 1-3 degrees
    of freedom, may be small by chance) must all overlap. The first window whose
    interval leaves the common part, and every longer one, are not taken. Why: a
    longer window averages more frames, but where the heart's rate changed inside it
    (a long or short beat) its line bends with the old rate, and the standard error
    from its own residuals sees that bend only as scatter; the shorter windows, which
    hold only the new rate, show it as a disagreement. ``quantiles`` empty: no check.

    Each window's line is fitted without its outliers (`line_without_outliers`, the
    rule `Predictor._fit` applies to the chosen window), so a frame the reference
    misplaced does not decide which window is taken, nor reject the short windows
    for an implausible rate while the frames around it hold a steady one.

    Each window's scatter is taken as no less than the frames' own phase noise
    (`_noise_scale`, from consecutive frames over the longest window). Why: a short
    window's scatter from a few degrees of freedom is small by chance as often as
    not, and the smallest standard error then went to that window, whose line
    extrapolates its frames' noise: on a faint heart at 40 frames/s (phases
    scattered 0.11 rad) the triggers scattered 0.14 rad, and 0.08-0.09 with the
    floor. On a clear heart the noise is small, the floor below every window's
    scatter, and the choice as before."""
    n = t.size
    t_end, p_end = t[n - 1], ph[n - 1]
    best, best_se, reject = -1, math.inf, 0
    common_lo, common_hi = -math.inf, math.inf
    floor = _noise_scale(t, ph, w, lows[0])
    for jj in range(lows.size):
        j = lows.size - 1 - jj  # lows ascend: the shortest window first
        lo = lows[j]
        dmin, dmax = math.inf, -math.inf
        for i in range(lo, n - 1):
            d = t[i + 1] - t[i]
            dmin = min(dmin, d)
            dmax = max(dmax, d)
        if lo < n - 1 and (dmin <= 0 or dmax * nominal > max_gap_phase):
            reject = reject or 1
            continue
        if n - lo < 2:
            reject = reject or 2
            continue
        slope, icpt, sw, rss, tm, sxx, kept = line_without_outliers(
            t[lo:] - t_end, ph[lo:] - p_end, w[lo:], 3)
        if not sxx > 0:
            reject = reject or 2
            continue
        if not abs(slope / nominal - 1) < rate_tolerance:
            reject = reject or 3
            continue
        k = math.ceil((icpt + slope * (t_from - t_end) + p_end - target) / (2 * math.pi))
        h = (target + 2 * math.pi * k - p_end - icpt) / slope - tm
        dof = max(kept - 2, 1)
        se = math.sqrt(max(rss / dof, floor) * (1.0 / sw + h * h / sxx))
        if quantiles.size:
            q = quantiles[min(dof, quantiles.size) - 1]
            crossing, half = h + tm, q * se / abs(slope)  # s after t_end
            common_lo = max(common_lo, crossing - half)
            common_hi = min(common_hi, crossing + half)
            if common_lo > common_hi:
                break
        if se < best_se:
            best, best_se = lo, se
    return best, reject


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _noise_scale(t, ph, w, lo):  # pragma: no cover - compiled
    """Phase noise per unit weight from ``lo`` on: each phase against the chord of its
    two neighbours (a line through three frames in a row bends with the heart's rate
    far less than with the noise), the median of their squared distances over their
    expected variance, for the chi-square median (0.455); 0 from under 3 triples."""
    n = t.size
    m = n - lo - 2
    if m < 3:
        return 0.0
    z = np.empty(m)
    k = 0
    for i in range(lo + 1, n - 1):
        span = t[i + 1] - t[i - 1]
        if not span > 0:
            continue
        a = (t[i + 1] - t[i]) / span
        b = 1.0 - a
        r = ph[i] - (a * ph[i - 1] + b * ph[i + 1])
        v = 1.0 / w[i] + a * a / w[i - 1] + b * b / w[i + 1]
        z[k] = r * r / v
        k += 1
    if k < 3:
        return 0.0
    return float(np.median(z[:k])) / 0.4549


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _line(t, p, w, keep):  # pragma: no cover - compiled
    """(slope, icpt) of the weighted line through the kept points."""
    sw = swt = swp = 0.0
    for i in range(t.size):
        if keep[i]:
            sw += w[i]
            swt += w[i] * t[i]
            swp += w[i] * p[i]
    tm, pm = swt / sw, swp / sw
    sxy = sxx = 0.0
    for i in range(t.size):
        if keep[i]:
            sxy += w[i] * (t[i] - tm) * (p[i] - pm)
            sxx += w[i] * (t[i] - tm) ** 2
    slope = sxy / sxx
    return slope, pm - slope * tm


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _scatter(t, p, w, keep, slope, icpt):  # pragma: no cover - compiled
    """(sum of w * residual^2, its largest term, index of the largest |r| sqrt(w),
    points kept) over the kept points."""
    total, largest, worst, score, n = 0.0, -1.0, -1, -1.0, 0
    for i in range(t.size):
        if keep[i]:
            r = p[i] - (icpt + slope * t[i])
            term = w[i] * r * r
            total += term
            largest = max(largest, term)
            s = abs(r) * math.sqrt(w[i])
            if s > score:
                score, worst = s, i
            n += 1
    return total, largest, worst, n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def line_without_outliers(t, p, w, min_keep):  # pragma: no cover - compiled
    """The weighted line through ``(t, p)`` after dropping phases far off the line
    through the others (see ``predict._drop_outliers`` for the rule).

    Returns (slope, icpt, sum of weights, sum of w * residual^2, weighted mean time,
    weighted sum of squares of time about it, points kept), over the kept points."""
    n = t.size
    keep = np.ones(n, np.bool_)
    kept = n
    for _ in range(n // 4):
        if kept - 1 < min_keep:
            break
        slope, icpt = _line(t, p, w, keep)
        total, largest, worst, _n = _scatter(t, p, w, keep, slope, icpt)
        if largest <= 4.0 * total / max(kept - 2, 1):
            break  # nothing beyond 2 SDs in sample: none can be 4 SDs off the rest
        keep[worst] = False
        kept -= 1
        slope, icpt = _line(t, p, w, keep)
        total, largest, _w, _n = _scatter(t, p, w, keep, slope, icpt)
        scatter = math.sqrt(total / max(kept - 2, 1) / w[worst])
        if abs(p[worst] - (icpt + slope * t[worst])) <= max(4.0 * scatter, 0.05):
            keep[worst] = True
            kept += 1
            break
    slope, icpt = _line(t, p, w, keep)
    total, _l, _w, _n = _scatter(t, p, w, keep, slope, icpt)
    sw = swt = 0.0
    for i in range(n):
        if keep[i]:
            sw += w[i]
            swt += w[i] * t[i]
    tm = swt / sw
    sxx = 0.0
    for i in range(n):
        if keep[i]:
            sxx += w[i] * (t[i] - tm) ** 2
    return slope, icpt, sw, total, tm, sxx, kept
