"""Planar and volumetric scans.

Plans configure and arm; hardware keeps time. The camera writes frames to HDF5 in
its IOC and the run receives stream-asset documents (one StreamResource per dataset,
StreamDatum per batch of complete volumes), so camera-rate data never becomes one
Event per frame. Every argument is validated before anything moves.
"""

import logging
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import short_uid

from devices.camera import MAX_FRAMES, Acquisition, Camera
from devices.scanboard import (
    PIEZO_TRAVEL_UM,
    SCAN_RANGE_WHAT,
    GalvoCalibration,
    ScanBoard,
    VolumeScan,
    check_focus_limits,
)
from plans.common import (
    SUMMARY_STREAM,
    abort_camera,
    cause_of,
    collect_all,
    collect_cut_short,
    collect_stored,
    collect_summary,
    declare_summary,
    ensure_idle,
    file_name_for,
    focus_limits,
    names_a_silent_ioc,
    set_settings,
    summary_hints,
    with_cleanup,
    with_real_cause,
)
from plans.metadata import device_settings, software_versions
from plans.validation import (
    SKIP_RANGE,
    check_device,
    check_float,
    check_int,
    check_md,
    check_skip,
    ranged,
)

log = logging.getLogger(__name__)

EXPOSURE_RANGE_S = (1e-5, 10.0)
#: the fixed ranges of the scans' numbers: checked by the plans and, when an item is
#: queued, by the queue server (`ranged`)
VOLUMETRIC_RANGES = {"n_volumes": (1, 1_000_000), "n_planes": (2, 1000),
                     "z_start": PIEZO_TRAVEL_UM, "z_stop": PIEZO_TRAVEL_UM,
                     "volume_rate": (0.01, 100.0), "skip_planes": SKIP_RANGE,
                     "exposure": EXPOSURE_RANGE_S}
PLANAR_RANGES = {"n_frames": (1, MAX_FRAMES), "z": PIEZO_TRAVEL_UM,
                 "exposure": EXPOSURE_RANGE_S, "frame_rate": (0.01, None)}


def _skip_for_settle(settle_s: float, volume_rate: float, n_planes: int) -> tuple[int, int]:
    """Fewest start slots whose duration covers ``settle_s`` (one slot at the end)."""
    for start in range(SKIP_RANGE[0], SKIP_RANGE[1] + 1):
        slot = 1.0 / (volume_rate * (n_planes + start + 1))
        if start * slot >= settle_s:
            return (start, 1)
    raise ValueError(
        f"volume_rate {volume_rate:g} Hz is too fast for the piezo to settle "
        f"({settle_s * 1e3:.0f} ms) after each flyback: lower volume_rate"
    )


def _cleanup(camera: Camera, scanboard: ScanBoard, interrupted: list[bool]):
    """Leave the hardware idle whatever happened (no-op after a clean finish); a run
    ``interrupted`` while open keeps the volume in progress (`collect_cut_short`)."""
    yield from abort_camera(camera, (scanboard.stop_cmd, 1))
    if interrupted:
        yield from collect_cut_short(camera)


def _fly(camera: Camera, scanboard: ScanBoard, md: dict[str, Any], flush_period: float,
         board_first: bool, board_prepared: str | None = None,
         interrupted: list[bool] | None = None):
    """Open the run, start camera and board in the right order, stream assets, close.

    ``board_prepared``: group of a board ``prepare`` still in flight, awaited just
    before the board is kicked off (its pre-positioning overlaps the camera set-up).
    The stream is declared after both are started: describing it reads every camera
    setting again (~10-40 ms, more while the catalog digests the start document), and
    nothing needs the descriptor before the first collect.

    A checkpoint follows the opening of the run: on resume the RunEngine replays every
    message since the last checkpoint, and without one there an immediate pause (two
    Ctrl-C) during the start replayed the whole set-up, whose board refused to
    prepare while running (the run ended 'fail' with that refusal). From it, the
    replayed kickoffs hand back the scan already running (devices' ``kickoff``).
    """
    yield from bps.open_run({**md, "hints": summary_hints(camera)})
    yield from bps.checkpoint()
    declared: list[str] = []
    try:
        for device in (scanboard, camera) if board_first else (camera, scanboard):
            if device is scanboard and board_prepared is not None:
                yield from bps.wait(group=board_prepared)
            yield from bps.kickoff(device, wait=True)
        yield from _declare_streams(camera, declared)
        yield from collect_while_flying([camera, scanboard], camera, flush_period,
                                        "primary", summary=True)
    except Exception:
        # stopped, aborted or failed: the frames on disk go into the run before the
        # RunEngine closes it (a stop or abort after a pause otherwise left the
        # catalog without every volume written since the last collect). Also when
        # it came while the scan started: an immediate pause there, then abort, left
        # the run without its streams and the 60 frames taken meanwhile out of it.
        yield from _declare_streams(camera, declared, quiet=True)
        yield from collect_stored(camera)
        if interrupted is not None:  # the cleanup collects the volume cut short
            interrupted.append(True)
        raise
    yield from collect_all(camera, "primary")
    yield from collect_summary(camera)
    return (yield from bps.close_run(**(yield from loss_report(camera))))


def _declare_streams(camera: Camera, declared: list[str], quiet: bool = False):
    """Declare the frame and summary streams not yet in ``declared`` (and add them).
    ``quiet``: on the way out of an interrupted run, a failure is logged, not raised
    (the run ends with what interrupted it)."""
    try:
        if "primary" not in declared:
            yield from bps.declare_stream(camera, name="primary", collect=True)
            declared.append("primary")
        if SUMMARY_STREAM not in declared:
            yield from declare_summary(camera)
            declared.append(SUMMARY_STREAM)
    except Exception as exc:
        if not quiet:
            raise
        log.warning("%s: the run's streams could not be declared, so frames written "
                    "before it ended are not in it: %s", camera.name, cause_of(exc))


def collect_while_flying(flyers: list, camera: Camera, flush_period: float,
                         stream_name: str, summary: bool = False):
    """``collect_while_completing`` with a checkpoint each period: one Ctrl-C (a
    deferred pause) takes effect at the next one, where the RunEngine pauses the
    devices (the scan board at the end of the volume in progress) and resume goes on
    from there; without checkpoints a fly scan would ignore the pause to its end.
    ``summary``: also collect the camera's summary stream each period."""
    done = False
    # one group for the whole flight: the RunEngine shows one progress bar per group
    # it waits on without error (bluesky warned "Previous ProgressBar never
    # completed" when each period had a group of its own)
    group = short_uid("complete")
    while not done:
        yield from bps.checkpoint()
        # asked at every checkpoint (the devices hand back the same statuses): an
        # immediate pause drops the RunEngine's wait group, and the wait replayed on
        # resume would find it empty and end the scan while the hardware still runs
        statuses = yield from bps.complete_all(*flyers, group=group, wait=False)
        yield from bps.wait(group=group, timeout=flush_period, error_on_timeout=False)
        yield from bps.collect(camera, name=stream_name)
        if summary:
            yield from collect_summary(camera)
        # done when the devices say so, not by what the wait answered: after a pause
        # the RunEngine answers the interrupted wait with None (so does a simulator,
        # whose answers are all None: then one pass is the whole plan)
        done = not statuses or any(st is None for st in statuses) \
            or all(st.done for st in statuses)


def loss_report(camera: Camera):
    """close_run arguments (plan: ``report = yield from loss_report(camera)``): a run
    that lost frames ends 'fail' and says how many and from which frame on (the
    file's /entry/dropped datasets list every one)."""
    dropped = int((yield from bps.rd(camera.hdf.dropped_frames, default_value=0)))
    missed = int((yield from bps.rd(camera.cam.triggers_missed, default_value=0)))
    if not (dropped or missed):
        return {"exit_status": "success", "reason": ""}
    first = int((yield from bps.rd(camera.hdf.first_dropped, default_value=-1)))
    parts = []
    if dropped:
        parts.append(f"{dropped} frame(s) dropped by the writer (first lost frame id {first}; "
                     "all ids and times in the file's /entry/dropped)")
    if missed:
        parts.append(f"{missed} camera trigger(s) missed (exposure + readout too long)")
    return {"exit_status": "fail", "reason": "; ".join(parts)}


@names_a_silent_ioc
@ranged(VOLUMETRIC_RANGES)
def volumetric_scan(
    camera: Camera,
    scanboard: ScanBoard,
    n_volumes: int,
    n_planes: int,
    z_start: float,
    z_stop: float,
    volume_rate: float,
    skip_planes: int | tuple[int, int] | None = None,
    exposure: float | None = None,
    *,
    md: dict[str, Any] | None = None,
):
    """Acquire ``n_volumes`` volumes of ``n_planes`` planes from ``z_start`` to ``z_stop``.

    Parameters
    ----------
    camera : Camera
        The fluorescence camera (put in external trigger mode by this plan).
    scanboard : ScanBoard
        The scan board that drives piezo, galvos and camera pulses.
    n_volumes : int
        Volumes to acquire, 1..1e6.
    n_planes : int
        Stored planes per volume, 2..1000.
    z_start : float
        Focal-plane position (um) of the first plane.
    z_stop : float
        Focal-plane position (um) of the last plane.
    volume_rate : float
        Volumes per second, [0.01, 100].
    skip_planes : int or (int, int), optional
        Plane slots without a frame at the start and end of each volume, letting the
        piezo settle after flyback (one number for both ends, or a pair). Default: enough
        start slots to cover the board's flyback settle time, one at the end.
    exposure : float, optional
        Camera exposure (s); default 80 % of the time a plane leaves after readout.
    md : dict, optional
        Extra metadata for the start document (e.g. ``{"sample_name": "fish 3"}``).

    Frames are stored as (volumes, planes, y, x) with per-frame metadata.
    """
    md = check_md(md)
    check_device("camera", camera, Camera)
    check_device("scanboard", scanboard, ScanBoard)
    n_volumes = check_int("n_volumes", n_volumes, *VOLUMETRIC_RANGES["n_volumes"])
    n_planes = check_int("n_planes", n_planes, *VOLUMETRIC_RANGES["n_planes"])
    z_start = check_float("z_start", z_start, *VOLUMETRIC_RANGES["z_start"])
    z_stop = check_float("z_stop", z_stop, *VOLUMETRIC_RANGES["z_stop"])
    if z_start == z_stop:
        raise ValueError("z_start and z_stop must differ (use planar_scan for one plane)")
    volume_rate = check_float("volume_rate", volume_rate, *VOLUMETRIC_RANGES["volume_rate"])
    if skip_planes is None:
        settle = yield from bps.rd(scanboard.flyback_settle, default_value=0.0)
        skip = _skip_for_settle(float(settle), volume_rate, n_planes)
    else:
        skip = check_skip(skip_planes)
    plane_interval = 1.0 / (volume_rate * (n_planes + skip[0] + skip[1]))
    readout = float((yield from bps.rd(camera.cam.readout_time, default_value=0.0)))
    max_exposure = plane_interval - readout
    if max_exposure <= EXPOSURE_RANGE_S[0]:
        raise ValueError(
            f"volume_rate {volume_rate:g} Hz with {n_planes} planes (+{sum(skip)} skipped) "
            f"leaves {plane_interval * 1e3:.3f} ms per plane, less than the camera readout "
            f"{readout * 1e3:.3f} ms: lower volume_rate or n_planes, or reduce the ROI"
        )
    if exposure is None:
        exposure = 0.8 * max_exposure
    exposure = check_float("exposure", exposure, VOLUMETRIC_RANGES["exposure"][0],
                           max_exposure)
    cals = []
    for i in (1, 2):
        offset = yield from bps.rd(getattr(scanboard, f"galvo{i}_offset"), default_value=0.0)
        slope = yield from bps.rd(getattr(scanboard, f"galvo{i}_slope"),
                                  default_value=GalvoCalibration.slope_v_per_um)
        cals.append(GalvoCalibration(offset, slope))
    rate = yield from bps.rd(scanboard.sample_rate, default_value=VolumeScan.sample_rate_hz)
    lag = yield from bps.rd(scanboard.piezo_lag, default_value=0.0)
    scan = VolumeScan(volume_rate, n_planes, z_start, z_stop, exposure, skip[0], skip[1],
                      sample_rate_hz=float(rate), piezo_lag_s=float(lag), galvos=tuple(cals))
    scan.waveforms()  # raises ValueError if galvo voltages would leave their range
    # the board moves the piezo itself: it keeps to the piezo's limits, and so do we,
    # before anything moves
    check_focus_limits(*scan.desired_range_um, (yield from focus_limits(scanboard)),
                       SCAN_RANGE_WHAT)

    directory, name = file_name_for("volumetric")
    acquisition = Acquisition(n_frames=n_volumes * n_planes, file_name=name,
                              frames_per_volume=n_planes, trigger_mode="External",
                              file_path=directory,
                              stall_timeout=max(10.0, 5.0 / volume_rate))
    _md = {
        "plan_name": "volumetric_scan",
        "plan_args": {"n_volumes": n_volumes, "n_planes": n_planes, "z_start": z_start,
                      "z_stop": z_stop, "volume_rate": volume_rate, "skip_planes": list(skip),
                      "exposure": exposure},
        "detectors": [camera.name],
        "num_points": n_volumes,
        "waveform": scan.as_dict(),
        "plane_z_um": scan.plane_z_um.tolist(),
        "versions": software_versions(),
        **md,
    }

    def inner():
        yield from set_settings(
            scanboard.mode, "Volumetric", scanboard.volume_rate, volume_rate,
            scanboard.num_planes, n_planes, scanboard.z_start, z_start, scanboard.z_stop, z_stop,
            scanboard.skip_start, skip[0], scanboard.skip_end, skip[1],
            scanboard.exposure, exposure, scanboard.num_volumes, n_volumes,
            camera.cam.acquire_time, exposure,
        )
        # The board computes its waveforms and settles the piezo at the trajectory start
        # (~20 ms on the simulator) while the camera is configured, the settings are
        # read and the run is opened; kickoff waits for it only if it is not done.
        board_ready = short_uid("board-prepared")
        yield from bps.prepare(scanboard, group=board_ready)
        yield from bps.prepare(camera, acquisition, wait=True)
        _md["settings"] = yield from device_settings(camera, scanboard)
        return (yield from _fly(camera, scanboard, _md, flush_period=0.5, board_first=False,
                                board_prepared=board_ready, interrupted=interrupted))

    interrupted: list[bool] = []
    yield from ensure_idle(camera, scanboard)  # before the cleanup can stop anything
    return (yield from with_real_cause(with_cleanup(inner(), _cleanup(camera, scanboard,
                                                                      interrupted))))


@names_a_silent_ioc
@ranged(PLANAR_RANGES)
def planar_scan(
    camera: Camera,
    scanboard: ScanBoard,
    n_frames: int,
    z: float,
    exposure: float,
    frame_rate: float | None = None,
    *,
    md: dict[str, Any] | None = None,
):
    """Acquire ``n_frames`` frames of one plane at focal position ``z`` (um).

    The piezo parks at ``z``, the galvos follow through their calibration, and the camera
    free-runs (internal trigger). Frames are stored as (frames, y, x) with per-frame
    metadata.

    Parameters
    ----------
    camera : Camera
        The fluorescence camera.
    scanboard : ScanBoard
        The scan board that parks the piezo and the galvos.
    n_frames : int
        Frames to acquire, 1..1e8.
    z : float
        Focal-plane position (um), within the piezo travel.
    exposure : float
        Camera exposure (s).
    frame_rate : float, optional
        Frames per second; default as fast as exposure and readout allow.
    md : dict, optional
        Extra metadata for the start document (e.g. ``{"sample_name": "fish 3"}``).
    """
    md = check_md(md)
    check_device("camera", camera, Camera)
    check_device("scanboard", scanboard, ScanBoard)
    n_frames = check_int("n_frames", n_frames, *PLANAR_RANGES["n_frames"])
    z = check_float("z", z, *PLANAR_RANGES["z"])
    check_focus_limits(z, z, (yield from focus_limits(scanboard)), "z: the focal plane")
    exposure = check_float("exposure", exposure, *PLANAR_RANGES["exposure"])
    readout = float((yield from bps.rd(camera.cam.readout_time, default_value=0.0)))
    period = 0.0
    if frame_rate is not None:
        max_rate = 1.0 / (exposure + readout)
        frame_rate = check_float("frame_rate", frame_rate, PLANAR_RANGES["frame_rate"][0],
                                 max_rate)
        period = 1.0 / frame_rate
    directory, name = file_name_for("planar")
    expected_s = n_frames * max(period, exposure + readout)
    # no frame for this long is a stall; a slow frame rate (down to 0.01 Hz) waits
    # longer than 10 s between frames by design
    acquisition = Acquisition(n_frames=n_frames, file_name=name, trigger_mode="Internal",
                              file_path=directory,
                              stall_timeout=max(10.0, 20 * exposure, 3 * period))
    _md = {
        "plan_name": "planar_scan",
        "plan_args": {"n_frames": n_frames, "z": z, "exposure": exposure,
                      "frame_rate": frame_rate},
        "detectors": [camera.name],
        "num_points": n_frames,
        "expected_duration_s": expected_s,
        "versions": software_versions(),
        **md,
    }

    def inner():
        yield from set_settings(scanboard.mode, "Planar", scanboard.plane_z, z,
                                camera.cam.acquire_time, exposure,
                                camera.cam.acquire_period, period)
        yield from bps.prepare(camera, acquisition, wait=True)
        _md["settings"] = yield from device_settings(camera, scanboard)
        return (yield from _fly(camera, scanboard, _md, flush_period=0.5, board_first=True,
                                interrupted=interrupted))

    interrupted: list[bool] = []
    yield from ensure_idle(camera, scanboard)  # before the cleanup can stop anything
    return (yield from with_real_cause(with_cleanup(inner(), _cleanup(camera, scanboard,
                                                                      interrupted))))
