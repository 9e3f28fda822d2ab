"""Plans are pure message generators: bluesky's plan simulators run them, they read
hardware only through messages, and importing them loads no IOC-side machinery
(issue 15, item 5)."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from bluesky.simulators import check_limits, summarize_plan

HEAVY = ("numba", "scipy", "serial", "h5py", "caproto", "beamline_ls.sim",
         "beamline_ls.hardware", "beamline_ls.gating", "beamline_ls.pipeline.hdf5_writer")


def test_importing_the_plans_loads_no_ioc_machinery():
    code = ("import sys, plans; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["volumetric_scan", "planar_scan", "gated_scan",
                                  "gated_timelapse", "power_series", "acquire_background"])
def test_plan_annotations_resolve_at_runtime(name):
    """The queue server validates parameters from the real annotations: none may be a
    string left by postponed evaluation."""
    import plans

    hints = typing.get_type_hints(getattr(plans, name))
    assert "camera" in hints
    assert not any(isinstance(h, str) for h in hints.values())


def plans_to_simulate(scope):
    import plans

    return {
        "volumetric": plans.volumetric_scan(scope.camera, scope.scanboard, 2, 10, 10.0, 50.0,
                                            2.0),
        "planar": plans.planar_scan(scope.camera, scope.scanboard, 3, 40.0, 0.005),
        "gated": plans.gated_scan(scope.camera, scope.gating, scope.piezo, [20.0, 30.0]),
        "power": plans.power_series(scope.camera, scope.laser, [1.0, 2.0], 3),
        "background": plans.acquire_background(scope.camera, 5, laser=scope.laser),
    }


@pytest.mark.parametrize("which", ["volumetric", "planar", "gated", "power", "background"])
def test_summarize_plan_runs_every_plan_without_touching_hardware(scope, which, capsys):
    before = scope.scanboard.num_volumes.get(use_monitor=False)
    summarize_plan(plans_to_simulate(scope)[which])
    out = capsys.readouterr().out
    assert "Open Run" in out or which == "background"
    assert scope.scanboard.num_volumes.get(use_monitor=False) == before


@pytest.mark.parametrize("which", ["volumetric", "planar", "gated", "power", "background"])
def test_check_limits_runs_every_plan(scope, session, which):
    """(check_limits runs in the RunEngine's event loop, as in the profile.)"""
    check_limits(plans_to_simulate(scope)[which])



def test_a_cleanup_step_that_fails_does_not_skip_the_ones_after_it():
    """A scan's cleanup stops the board (or disarms the gating), then aborts the camera.
    A board IOC that does not answer made the first step time out and the camera was
    never aborted: left capturing, its file open, so the next scan was refused. Every
    step runs; the first failure is raised after them."""
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps
    from ophyd import Signal

    from plans.common import every_step

    board_stop = Signal(name="board_stop", value=0)
    camera_abort = Signal(name="camera_abort", value=0)

    def board_does_not_answer():
        yield from bps.null()
        raise TimeoutError("board_stop: no reply within 10 s")

    RE = RunEngine({})
    with pytest.raises(TimeoutError, match="board_stop: no reply"):
        RE(every_step(board_does_not_answer(), bps.mv(camera_abort, 1),
                      bps.mv(board_stop, 1)))
    assert (camera_abort.get(), board_stop.get()) == (1, 1)
