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



def test_a_cleanup_put_that_fails_does_not_skip_the_ones_after_it():
    """A scan's cleanup stops the board (or disarms the gating), then aborts the camera.
    A board IOC that is gone made the first put fail and the camera was never aborted:
    left capturing, its file open, so the next scan was refused. Every put is sent;
    the first failure is raised after them."""
    from types import SimpleNamespace

    from bluesky import RunEngine
    from ophyd import Signal
    from ophyd.utils.errors import DisconnectedError

    from plans.common import abort_camera

    class Gone(Signal):  # a signal whose IOC has stopped, as ophyd tells it
        def set(self, *args, **kwargs):
            raise DisconnectedError("board_stop is not connected")

    board_stop = Gone(name="board_stop", value=0)
    cam = SimpleNamespace(detector_state=Signal(name="state", value="Acquire"),
                          camera_mode=Signal(name="mode", value="Acquire"))
    hdf = SimpleNamespace(capture=Signal(name="capture", value=1),
                          frames_per_volume=Signal(name="fpv", value=10))
    camera = SimpleNamespace(cam=cam, hdf=hdf)
    RE = RunEngine({})
    with pytest.raises(DisconnectedError, match="board_stop is not connected"):
        RE(abort_camera(camera, (board_stop, 1)))
    assert (cam.camera_mode.get(), hdf.frames_per_volume.get()) == ("Abort", 0)


def test_a_camera_whose_driver_never_returns_from_opening_is_refused_in_bounded_time(
        monkeypatch):
    """A camera IOC asked to re-open a disconnected camera whose SDK call never
    returns: the plan is refused, naming the PV it asked and the bound, before any
    run is opened (the queue behind it is not held for good)."""
    import time
    from types import SimpleNamespace

    from bluesky import RunEngine
    from ophyd import Signal
    from ophyd.status import Status

    import plans.common
    from plans.common import ensure_open

    class NeverAnswers(Signal):  # the IOC took the put; its driver never returns
        pvname = "LS:CAM:ReadStatus"

        def set(self, *args, **kwargs):
            return Status(self)

    cam = SimpleNamespace(detector_state=Signal(name="state", value="Disconnected"),
                          read_status=NeverAnswers(name="cam_read_status", value=0),
                          status_message=Signal(name="message", value=""))
    documents = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: documents.append(name))
    monkeypatch.setattr(plans.common, "OPEN_TIMEOUT_S", 0.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"\(LS:CAM:ReadStatus\) and did not answer in "
                                           r"0\.5 s .*no run was started"):
        RE(ensure_open(SimpleNamespace(name="camera", cam=cam)))
    assert time.monotonic() - t0 < 30.0
    assert documents == []


def test_a_camera_that_stays_disconnected_is_refused_with_the_drivers_reason():
    from types import SimpleNamespace

    from bluesky import RunEngine
    from ophyd import Signal

    from plans.common import ensure_open

    cam = SimpleNamespace(detector_state=Signal(name="state", value="Disconnected"),
                          read_status=Signal(name="cam_read_status", value=0),
                          status_message=Signal(name="message",
                                                value="no camera with serial 0815"))
    with pytest.raises(RuntimeError, match="camera: no camera with serial 0815; no run "
                                           "was started"):
        RunEngine({})(ensure_open(SimpleNamespace(name="camera", cam=cam)))
    cam.detector_state.put("Idle")  # it opened: the plan goes on
    RunEngine({})(ensure_open(SimpleNamespace(name="camera", cam=cam)))


def test_a_failed_status_is_told_by_its_cause():
    """What plans log and raise for a failed device status: the device's own words
    (bluesky's FailedStatus says only "ProgressStatus(device=camera, done=True,
    success=False)", which a disk-full volumetric scan logged)."""
    from bluesky.utils import FailedStatus

    from plans.common import cause_of

    try:
        try:
            raise RuntimeError("camera: disk full: 4.20 MiB left (62 of 400 frames stored)")
        except RuntimeError as exc:
            raise FailedStatus("ProgressStatus(device=camera, done=True, "
                               "success=False)") from exc
    except FailedStatus as failed:
        assert str(cause_of(failed)).startswith("camera: disk full")
    plain = ValueError("n_volumes must be in [1, 10000], got 0")
    assert cause_of(plain) is plain
    assert "ProgressStatus" in str(cause_of(FailedStatus("ProgressStatus(...)")))
