"""Argument checks shared by plans: every bad value raises ValueError naming the
parameter and the allowed range (a device of the wrong kind, TypeError), before
anything moves."""

import json
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jsonschema
from event_model import DocumentNames, schemas

#: a parameter's fixed bounds (``None``: unbounded on that side)
Range = tuple[float | None, float | None]

_Plan = TypeVar("_Plan", bound=Callable[..., Any])


def ranged(ranges: Mapping[str, Range]) -> Callable[[_Plan], _Plan]:
    """Declare the fixed ranges of a plan's numeric parameters (``plan.parameter_ranges``).

    Why: the plan checks its arguments when it runs; a queue server validates an item
    when it is queued. Declared once, the plan's checks and the queue's (the profile's
    ``queue_annotated`` gives them to bluesky-queueserver as each parameter's min and
    max) cannot disagree, and a scan queued overnight with ``n_planes=1`` is refused at
    ``queue add``, naming the parameter and its range, not hours later when it runs.
    A range applies to every number inside a list or pair (``z_positions``,
    ``skip_planes``). Bounds that depend on the hardware (the piezo's limits, the
    exposure a rate leaves) are checked by the plan only.
    """
    for name, (lo, hi) in ranges.items():
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"range of {name}: {lo} > {hi}")

    def declare(plan: _Plan) -> _Plan:
        plan.parameter_ranges = dict(ranges)  # type: ignore[attr-defined]
        return plan

    return declare


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


#: plane slots a volume may skip at each end
SKIP_RANGE = (0, 50)


def check_skip(value: object) -> tuple[int, int]:
    """``skip_planes`` is an int (both ends) or a (start, end) pair, each in `SKIP_RANGE`."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"skip_planes must be an int or a (start, end) pair, got {value!r}")
        return (check_int("skip_planes[0]", value[0], *SKIP_RANGE),
                check_int("skip_planes[1]", value[1], *SKIP_RANGE))
    n = check_int("skip_planes", value, *SKIP_RANGE)
    return (n, n)


#: set by the RunEngine for every run; ``scan_id`` counts on from the data directory's
#: last (``SharedRunMetadata``), so that ``cat[N]`` and ``export N`` find one run
RUN_ENGINE_KEYS = ("uid", "time", "scan_id")
#: set by the plans for every run they start: what data users search and read a run
#: by (``Key("plan_name") == "planar_scan"``); an ``md`` value would replace it
PLAN_KEYS = ("plan_name", "plan_type", "plan_args", "detectors", "num_points", "hints",
             "settings", "versions", "waveform", "plane_z_um", "expected_duration_s",
             "powers_mw", "step_streams")


def check_md(md: object) -> dict[str, Any]:
    """``md`` for the run's start document, checked before anything moves.

    Why here: a value the catalog cannot store (an arbitrary object) or a reserved key
    of the wrong type (``scan_id="abc"``) otherwise fails only when the document is
    written, after the hardware has moved and the frames are on disk, or never reaches
    the catalog at all. Checked: a dict with string keys; JSON values; the types the
    start document's schema (event-model's, the one databroker and tiled read) gives
    its own keys (``scan_id`` an integer, ``sample`` a string or a dict, ...); no dots
    or slashes in keys; no ``uid`` or ``time``, which the RunEngine sets, and none of
    the keys the plans set (``plan_name``, ``plan_args``, ...: `PLAN_KEYS`).
    """
    if md is None:
        return {}
    if not isinstance(md, Mapping):
        raise ValueError(f"md must be a dict, got {type(md).__name__}")
    out = dict(md)
    for key, value in out.items():
        if not isinstance(key, str):
            raise ValueError(f"md keys must be strings, got {key!r}")
        if "." in key or "/" in key:
            raise ValueError(f"md key {key!r} may not contain '.' or '/' (the catalog "
                             "reads them as paths)")
        if key in RUN_ENGINE_KEYS:
            raise ValueError(f"md[{key!r}] is set by the RunEngine for every run; "
                             "choose another key")
        if key in PLAN_KEYS:
            raise ValueError(f"md[{key!r}] is set by the plan for every run (the catalog "
                             "finds runs by it); choose another key")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"md[{key!r}] cannot be stored in the catalog: {exc}") from None
    try:
        jsonschema.validate({**out, "uid": "-", "time": 0.0}, schemas[DocumentNames.start])
    except jsonschema.ValidationError as exc:
        where = "md" + "".join(f"[{p!r}]" for p in exc.absolute_path)
        if not exc.absolute_path and exc.validator == "additionalProperties":
            where = "md keys"
        raise ValueError(f"{where}: {exc.message}") from None
    return out


def check_device(name: str, value: object, kind: type) -> Any:
    """``value`` is a ``kind`` device: a device passed in the wrong place (camera and
    scan board swapped) is refused naming the parameter, before anything moves,
    instead of an AttributeError from deep inside the plan."""
    if not isinstance(value, kind):
        what = getattr(value, "name", None)
        got = f"{what!r} ({type(value).__name__})" if isinstance(what, str) else repr(value)
        raise TypeError(f"{name} must be a {kind.__name__} device, got {got}")
    return value
