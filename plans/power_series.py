"""Laser power series: step the excitation power, acquire frames at each step.

One run. For each step the laser is set (and its measured power read back), then the
camera free-runs ``frames_per_step`` frames into its own HDF5 file, collected as the
stream ``step_000``, ``step_001``, ... (frames by reference, never one Event per
frame). The stream ``power_steps`` has one Event per step, in step order, with the
step index, the requested power and the laser's read-back, so results collate by
step: ``run["power_steps"]`` says what ``run[f"step_{i:03d}"]`` was taken at.

The scan board is left as it is (park it first, e.g. with a planar scan setting).
The laser's power and on/off state are restored afterwards, whatever happened.
"""

import math
import numbers
import time
import uuid
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
from ophyd import Signal

from devices.camera import Acquisition, Camera
from devices.laser import Laser
from plans.common import (
    abort_camera,
    collect_all,
    ensure_idle,
    names_a_silent_ioc,
    set_settings,
    with_cleanup,
    with_real_cause,
)
from plans.metadata import device_settings, software_versions
from plans.scans import EXPOSURE_RANGE_S, collect_while_flying
from plans.validation import check_device, check_float, check_int, check_md, ranged

MAX_STEPS = 1000
STEPS_STREAM = "power_steps"
#: the fixed ranges of the series' numbers: checked by the plan and, when an item is
#: queued, by the queue server (`ranged`); each power is checked against the laser's
#: maximum when the plan runs
POWER_SERIES_RANGES = {"powers": (0.0, None), "frames_per_step": (1, 1_000_000),
                       "exposure": EXPOSURE_RANGE_S}


def step_stream(i: int) -> str:
    """Name of the frame stream of step ``i``."""
    return f"step_{i:03d}"


def check_powers(powers: object, max_power_mw: float) -> list[float]:
    """A non-empty sequence of powers (mW), each in [0, max_power_mw]."""
    if isinstance(powers, str | bytes | dict | set) or not hasattr(powers, "__iter__"):
        raise ValueError(f"powers must be a sequence of numbers (mW), got {powers!r}")
    values = list(powers)  # type: ignore[call-overload]
    if not 1 <= len(values) <= MAX_STEPS:
        raise ValueError(f"powers must hold 1..{MAX_STEPS} values, got {len(values)}")
    out = []
    for i, p in enumerate(values):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p):
            raise ValueError(f"powers[{i}] must be a finite number in [0, "
                             f"{max_power_mw:g}] mW, got {p!r}")
        out.append(check_float(f"powers[{i}]", float(p), POWER_SERIES_RANGES["powers"][0],
                               max_power_mw))
    return out


@names_a_silent_ioc
@ranged(POWER_SERIES_RANGES)
def power_series(
    camera: Camera,
    laser: Laser,
    powers: Sequence[float],
    frames_per_step: int,
    exposure: float = 0.005,
    *,
    md: dict[str, Any] | None = None,
):
    """Acquire ``frames_per_step`` frames at each laser power in ``powers`` (mW).

    Parameters
    ----------
    camera : Camera
        The camera (free-running, internal trigger, as fast as exposure allows).
    laser : Laser
        The excitation laser; switched on for the series, restored afterwards.
    powers : list of float
        Laser powers in mW, each in [0, the laser's MaxPower], 1..1000 steps.
    frames_per_step : int
        Frames per power step, 1..1e6.
    exposure : float, optional
        Camera exposure in s, [1e-5, 10].
    md : dict, optional
        Extra metadata for the start document.

    Every argument is checked before anything moves.
    """
    md = check_md(md)
    check_device("camera", camera, Camera)
    check_device("laser", laser, Laser)
    max_power = float((yield from bps.rd(laser.max_power, default_value=math.inf)))
    powers = check_powers(powers, max_power)
    frames_per_step = check_int("frames_per_step", frames_per_step,
                                *POWER_SERIES_RANGES["frames_per_step"])
    exposure = check_float("exposure", exposure, *POWER_SERIES_RANGES["exposure"])

    directory = time.strftime("%Y/%m/%d")
    base = f"power_series_{time.strftime('%H%M%S')}_{uuid.uuid4().hex[:8]}"
    step = Signal(name="step", value=0)
    setpoint = Signal(name="power_setpoint_mw", value=0.0)
    _md = {
        "plan_name": "power_series",
        "plan_args": {"powers": powers, "frames_per_step": frames_per_step,
                      "exposure": exposure},
        "detectors": [camera.name],
        "num_points": len(powers),
        "powers_mw": powers,
        "step_streams": [step_stream(i) for i in range(len(powers))],
        "versions": software_versions(),
        **md,
    }
    saved: dict[str, Any] = {}

    def inner():
        saved["enable"] = yield from bps.rd(laser.enable, default_value="Off")
        saved["power"] = float((yield from bps.rd(laser.power, default_value=0.0)))
        yield from set_settings(camera.cam.acquire_time, exposure, camera.cam.acquire_period,
                                0.0)
        yield from set_settings(laser.enable, "On")
        _md["settings"] = yield from device_settings(camera, laser)
        yield from bps.open_run(_md)
        dropped = 0
        for i, p in enumerate(powers):
            yield from set_settings(laser.power, p, step, i, setpoint, p)
            yield from bps.trigger_and_read([step, setpoint, laser], name=STEPS_STREAM)
            acquisition = Acquisition(n_frames=frames_per_step, file_name=f"{base}_s{i:03d}",
                                      trigger_mode="Internal", file_path=directory,
                                      stall_timeout=max(10.0, 20 * exposure))
            yield from bps.prepare(camera, acquisition, wait=True)
            yield from bps.declare_stream(camera, name=step_stream(i), collect=True)
            yield from bps.kickoff(camera, wait=True)
            yield from collect_while_flying([camera], camera, 0.5, step_stream(i))
            yield from collect_all(camera, step_stream(i))
            dropped += int((yield from bps.rd(camera.hdf.dropped_frames, default_value=0)))
        status = "success" if not dropped else "fail"
        reason = "" if not dropped else f"{dropped} frames dropped by the writer"
        return (yield from bps.close_run(exit_status=status, reason=reason))

    def cleanup():
        restore = [(laser.power, saved["power"]), (laser.enable, saved["enable"])] \
            if "power" in saved else []
        yield from abort_camera(camera, then=restore)

    yield from ensure_idle(camera)  # before the cleanup can stop anything
    return (yield from with_real_cause(with_cleanup(inner(), cleanup())))
