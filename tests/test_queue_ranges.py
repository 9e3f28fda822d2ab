"""A number out of a plan's range is refused when the item is queued, not when it runs
(issue 15, item 1): the profile's shipped plan list carries each plan's fixed ranges,
and the queue server's own validation (``bluesky_queueserver.validate_plan``, what the
RE Manager runs at ``queue add``) refuses with them, naming the parameter."""

from __future__ import annotations

import functools
import numbers

import pytest
import yaml
from bluesky_queueserver import validate_plan

import plans
from beamline_ls.queue import PLANS_DEVICES_FILE, PROFILE_STARTUP

pytestmark = pytest.mark.offline

#: a valid item of each plan (what the profile's devices are called)
VALID = {
    "volumetric_scan": {"camera": "camera", "scanboard": "scanboard", "n_volumes": 2,
                        "n_planes": 10, "z_start": 10.0, "z_stop": 50.0,
                        "volume_rate": 2.0},
    "planar_scan": {"camera": "camera", "scanboard": "scanboard", "n_frames": 5,
                    "z": 30.0, "exposure": 0.005},
    "gated_scan": {"camera": "camera", "gating": "gating", "piezo": "piezo",
                   "z_positions": [20.0, 30.0]},
    "gated_timelapse": {"camera": "camera", "gating": "gating", "piezo": "piezo",
                        "z_positions": [20.0], "n_timepoints": 3, "interval_s": 60.0},
    "power_series": {"camera": "camera", "laser": "laser", "powers": [1.0, 2.0],
                     "frames_per_step": 3},
    "acquire_background": {"camera": "camera", "n": 5},
}
#: parameters that take a list (or pair) of numbers: the range holds for each
LISTS = {"skip_planes", "powers", "z_positions"}


@functools.cache
def shipped() -> dict:
    return yaml.safe_load((PROFILE_STARTUP / PLANS_DEVICES_FILE).read_text())


def validate(name: str, kwargs: dict) -> tuple[bool, str]:
    lists = shipped()
    return validate_plan({"name": name, "kwargs": kwargs, "item_type": "plan"},
                         allowed_plans=lists["existing_plans"],
                         allowed_devices=lists["existing_devices"])


def outside(bound: float, below: bool) -> float:
    step = 1 if isinstance(bound, numbers.Integral) else max(abs(bound) * 0.5, 1e-3)
    return bound - step if below else bound + step


def ranged_parameters():
    for name in plans.__all__:
        for param, (lo, hi) in getattr(plans, name).parameter_ranges.items():
            for bound, below in ((lo, True), (hi, False)):
                if bound is not None:
                    yield pytest.param(name, param, bound, below,
                                       id=f"{name}-{param}-{'min' if below else 'max'}")


def test_every_valid_item_is_accepted():
    for name, kwargs in VALID.items():
        ok, msg = validate(name, kwargs)
        assert ok, f"{name}: {msg}"


@pytest.mark.parametrize("name,param,bound,below", list(ranged_parameters()))
def test_a_value_out_of_a_plans_range_is_refused_when_queued(name, param, bound, below):
    value = outside(bound, below)
    kwargs = {**VALID[name], param: [bound, value] if param in LISTS else value}
    ok, msg = validate(name, kwargs)
    assert not ok, f"{name}({param}={kwargs[param]!r}) was accepted"
    assert f"key='{param}'" in msg and "out of range" in msg, msg
    # the bound itself is in range, for the queue as for the plan
    ok, msg = validate(name, {**VALID[name], param: [bound, bound] if param in LISTS else bound})
    assert ok, msg

