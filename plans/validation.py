"""Argument checks shared by plans: every bad value raises ValueError naming the
parameter and the allowed range, before anything moves."""

from __future__ import annotations

import math
import numbers


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def check_float(name: str, value: object, lo: float, hi: float, *,
                lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
        float(value)
    ):
        raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")
    v = float(value)
    bad_lo = v <= lo if lo_open else v < lo
    if bad_lo or v > hi:
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {bracket}{lo:g}, {hi:g}], got {v:g}")
    return v


def check_skip(value: object) -> tuple[int, int]:
    """``skip_planes`` is an int (both ends) or a (start, end) pair, each in [0, 50]."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"skip_planes must be an int or a (start, end) pair, got {value!r}")
        return (check_int("skip_planes[0]", value[0], 0, 50),
                check_int("skip_planes[1]", value[1], 0, 50))
    n = check_int("skip_planes", value, 0, 50)
    return (n, n)
