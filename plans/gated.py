"""Prospectively gated acquisition: every frame at the same heart phase.

The gating IOC locks onto the heartbeat from brightfield frames and fires the
fluorescence camera at the target phase at absolute times; these plans only move the
focal plane, arm one trigger per frame, and keep the run's documents. Each stored
frame carries its trigger time, the predicted phase at that time, the period and the
reference id (and on the simulator the heart's true phase) as per-frame metadata.
"""

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.utils import FailedStatus

from devices.camera import Acquisition, Camera
from devices.gating import GATING_FIELDS, GatingTrigger
from devices.positioners import Piezo
from devices.scanboard import PIEZO_TRAVEL_UM
from plans.common import (
    abort_camera,
    cause_of,
    collect_all,
    collect_cut_short,
    collect_stored,
    collect_summary,
    declare_summary,
    ensure_idle,
    file_name_for,
    names_a_silent_ioc,
    set_settings,
    summary_hints,
    with_cleanup,
    with_real_cause,
)
from plans.metadata import device_settings, software_versions
from plans.scans import loss_report
from plans.validation import check_device, check_float, check_int, check_md, ranged

log = logging.getLogger(__name__)

MAX_EXPOSURE_S = 0.05  # a gated exposure must be short against a ~0.4 s heartbeat
#: the longest wait for a heartbeat lock a plan accepts (a lock takes 1-3 s)
MAX_LOCK_TIMEOUT_S = 3600.0
#: the fixed ranges of the gated plans' numbers: checked by the plans and, when an item
#: is queued, by the queue server (`ranged`); the focal positions, queued within the
#: piezo's travel, are checked against its soft limits when the plan runs
GATED_RANGES = {"z_positions": PIEZO_TRAVEL_UM,
                "frames_per_plane": (1, 1000), "target_phase": (0.0, 2 * math.pi),
                "exposure": (1e-5, MAX_EXPOSURE_S), "lock_timeout": (0.0, MAX_LOCK_TIMEOUT_S)}
TIMELAPSE_RANGES = {**GATED_RANGES, "n_timepoints": (1, 1_000_000),
                    "interval_s": (0.0, 7 * 24 * 3600.0)}


def _validate(piezo: Piezo, z_positions: Sequence[float], frames_per_plane: int,
              target_phase: float | None, exposure: float):
    """Checked ``(zs, frames_per_plane, target_phase, exposure)`` (a plan: the piezo's
    limits are read with ``bps.rd``; simulators, which answer no reads, skip them)."""
    if isinstance(z_positions, str | bytes) or not hasattr(z_positions, "__len__"):
        raise ValueError("z_positions must be a sequence of focal positions in um")
    n = len(z_positions)
    if not 1 <= n <= 1000:
        raise ValueError(f"z_positions must hold 1 to 1000 positions, got {n}")
    lo = yield from bps.rd(piezo.low_limit_travel, default_value=None)
    hi = yield from bps.rd(piezo.high_limit_travel, default_value=None)
    if lo is None or hi is None or lo == hi:  # no limits known (0, 0 on a motor record)
        lo, hi = GATED_RANGES["z_positions"]
    lo, hi = max(lo, GATED_RANGES["z_positions"][0]), min(hi, GATED_RANGES["z_positions"][1])
    zs = [check_float(f"z_positions[{i}]", z, lo, hi) for i, z in enumerate(z_positions)]
    fpp = check_int("frames_per_plane", frames_per_plane, *GATED_RANGES["frames_per_plane"])
    if target_phase is not None:
        target_phase = check_float("target_phase", target_phase,
                                   *GATED_RANGES["target_phase"])
        target_phase %= 2 * math.pi
    exposure = check_float("exposure", exposure, *GATED_RANGES["exposure"])
    return zs, fpp, target_phase, exposure


def _gated_stack(camera: Camera, gating: GatingTrigger, piezo: Piezo, zs: list[float],
                 fpp: int):
    """``fpp`` passes over the planes, one gated trigger per plane per pass. One Ctrl-C
    pauses before the next plane (the capture stays open; resume goes on there)."""
    yield from bps.checkpoint()
    for _ in range(fpp):
        for z in zs:
            yield from bps.mv(piezo, z)
            try:
                yield from bps.trigger(gating, wait=True)
            except FailedStatus as exc:
                # the trigger's own reason, read when it failed (the message PV may
                # since say something else), else what the gating says now
                cause = cause_of(exc)
                why = str(cause) if cause is not exc else (
                    yield from bps.rd(gating.message, default_value=""))
                raise RuntimeError(f"gated trigger at z = {z:g} um failed: {why}") from None
            # the next plane's checkpoint; an immediate pause from here on rewinds no
            # further, so resume does not fire this plane's trigger again
            yield from bps.checkpoint()
        yield from bps.collect(camera, name="primary")


def _wait_until(when: float, step: float = 0.5):
    """Sleep until the wall-clock time ``when``, in steps with a checkpoint before each.

    Why steps: a stack interval may be many minutes. One Ctrl-C (a deferred pause)
    takes effect at the next checkpoint, which a single long sleep put at the end of
    the interval; an immediate pause rewinds to the last checkpoint, which was before
    the last plane of the stack just taken, so resume replayed that plane's trigger and
    took it twice. From a checkpoint here, resume replays at most one step, and the
    time left is read from the clock again: after a long pause, the next stack starts
    at once.
    """
    while True:
        yield from bps.checkpoint()
        left = when - time.time()
        if left <= 0:
            return
        yield from bps.sleep(min(left, step))


def _cleanup(camera: Camera, gating: GatingTrigger, interrupted: list[bool]):
    """Disarm and stop; a run ``interrupted`` while open keeps the pass in progress."""
    yield from abort_camera(camera, (gating.arm, 0))
    if interrupted:
        yield from collect_cut_short(camera)


def _wait_for_lock(gating: GatingTrigger, lock_timeout: float):
    try:
        yield from bps.abs_set(gating.lock, lock_timeout, wait=True)
    except FailedStatus:
        state = yield from bps.rd(gating.state, default_value="")
        why = yield from bps.rd(gating.message, default_value="")
        said = f"; the gating says: {why}" if why else ""
        raise TimeoutError(
            f"gating did not lock onto a heartbeat within {lock_timeout:g} s (state: "
            f"{state}{said}); check that the heart is in the brightfield field of view and "
            "beating") from None


# the least time a reference search is given before a time-lapse slot: a few beats of
# a ~2 Hz heart to record and compare; the time the last search took when longer
REFRESH_LEAD_S = 2.0


def _refresh_reference(gating: GatingTrigger, timeout: float):
    """Ask for a new reference heartbeat and wait (up to ``timeout`` s) until the
    gating uses it. The analyzer stays locked on the old reference while it searches
    for the new one, so waiting for the lock alone let a stack start on the old
    reference when the search took long (a loaded machine: the whole time-lapse on
    the first reference)."""
    before = yield from bps.rd(gating.reference_id, default_value=None)
    yield from bps.mv(gating.refresh_cmd, 1)
    if before is None:  # a plan simulator: nothing to wait for
        return
    step = 0.1
    for _ in range(max(1, math.ceil(timeout / step))):
        if (yield from bps.rd(gating.reference_id, default_value=before)) != before:
            return
        yield from bps.sleep(step)
    log.warning("no new reference heartbeat within %g s of asking; this stack is taken "
                "on the previous one", timeout)


def _start_gating(gating: GatingTrigger, target_phase: float | None, lock_timeout: float):
    yield from bps.mv(gating.target_phase, -1.0 if target_phase is None else target_phase)
    if (yield from bps.rd(gating.enable, default_value="Off")) != "On":
        yield from bps.mv(gating.enable, "On")
        # a refused Enable (a brightfield camera that does not open) completes the put
        # all the same: without this the plan waited out the lock timeout and blamed
        # the heart (a plan simulator, reading nothing, takes the put as done)
        if (yield from bps.rd(gating.enable, default_value="On")) != "On":
            why = yield from bps.rd(gating.message, default_value="")
            raise RuntimeError(f"gating could not be enabled: {why or 'refused'}")
    yield from _wait_for_lock(gating, lock_timeout)


def _run(camera, gating, piezo, zs, fpp, target_phase, exposure, n_stacks, interval_s,
         refresh, lock_timeout, plan_name, plan_args, md):
    directory, name = file_name_for("gated")
    n_frames = n_stacks * fpp * len(zs)
    # one plane: a plain (frames, y, x) movie; several: (passes, planes, y, x)
    per_volume = len(zs) if len(zs) > 1 else 0
    # the fields this gating system attaches (true_phase only on a simulated heart)
    fields = yield from bps.rd(gating.fields, default_value=",".join(GATING_FIELDS))
    fields = tuple(f for f in str(fields).split(",") if f) or GATING_FIELDS
    acquisition = Acquisition(n_frames=n_frames, file_name=name, frames_per_volume=per_volume,
                              trigger_mode="External", file_path=directory,
                              stall_timeout=max(60.0, interval_s + 30.0),
                              extra_fields=fields)
    _md = {"plan_name": plan_name, "plan_args": plan_args, "detectors": [camera.name],
           "num_points": n_stacks * fpp, "plane_z_um": zs, "versions": software_versions(),
           **md}

    def inner():
        yield from set_settings(camera.cam.acquire_time, exposure)
        asked = time.time()
        yield from _start_gating(gating, target_phase, lock_timeout)
        locked_in = time.time() - asked  # how long a search for the heart takes here
        yield from bps.prepare(camera, acquisition, wait=True)
        _md["settings"] = yield from device_settings(camera, gating)
        yield from bps.open_run({**_md, "hints": summary_hints(camera)})
        yield from bps.declare_stream(camera, name="primary", collect=True)
        yield from declare_summary(camera)
        yield from bps.kickoff(camera, wait=True)
        late_before = int((yield from bps.rd(gating.late, default_value=0)))
        left_late_before = int((yield from bps.rd(gating.left_late, default_value=0)))
        t0 = time.time()
        lead = max(REFRESH_LEAD_S, locked_in)
        try:
            for i in range(n_stacks):
                if i:
                    due = t0 + i * interval_s
                    if refresh:
                        # asked a search's time before the slot, so the stack starts on
                        # schedule (asked at the slot, every stack began a search late)
                        yield from _wait_until(due - lead)
                        asked = time.time()
                        yield from _refresh_reference(gating, lock_timeout)
                        lead = max(REFRESH_LEAD_S, time.time() - asked)
                    yield from _wait_until(due)
                    yield from _wait_for_lock(gating, lock_timeout)
                yield from _gated_stack(camera, gating, piezo, zs, fpp)
                yield from collect_summary(camera)
        except Exception:
            # stopped, aborted or failed: every pass already stored goes into the run
            # (collected otherwise only at the end of each stack)
            yield from collect_stored(camera)
            interrupted.append(True)  # the cleanup collects the pass cut short
            raise
        yield from bps.complete(camera, wait=True)
        yield from collect_all(camera, "primary")
        yield from collect_summary(camera)
        late = int((yield from bps.rd(gating.late, default_value=0))) - late_before
        left_late = int((yield from bps.rd(gating.left_late, default_value=0))) - left_late_before
        report = yield from loss_report(camera)
        said = [report["reason"]] if report["reason"] else []
        if late:
            said.append(f"{late} trigger(s) came late and were retried")
        if left_late:
            said.append(f"{left_late} pulse(s) left the trigger output late, their frames "
                        "off the target phase (camera_fired_at after camera_trigger_time)")
            log.warning("%s", said[-1])
        report["reason"] = "; ".join(said)
        return (yield from bps.close_run(**report))

    interrupted: list[bool] = []
    yield from ensure_idle(camera)  # before the cleanup can stop anything
    return (yield from with_real_cause(with_cleanup(inner(), _cleanup(camera, gating,
                                                                      interrupted))))


@names_a_silent_ioc
@ranged(GATED_RANGES)
def gated_scan(
    camera: Camera,
    gating: GatingTrigger,
    piezo: Piezo,
    z_positions: Sequence[float],
    frames_per_plane: int = 1,
    target_phase: float | None = None,
    exposure: float = 0.005,
    *,
    lock_timeout: float = 30.0,
    md: dict[str, Any] | None = None,
):
    """One gated z-stack: at every plane the camera fires at the same heart phase.

    Parameters
    ----------
    camera : Camera
        Fluorescence camera (put in external trigger mode by this plan).
    gating : GatingTrigger
        The gating trigger device (its IOC owns the brightfield camera).
    piezo : Piezo
        Objective piezo; moving it also moves the light sheets.
    z_positions : list of float
        Focal positions (um), 1..1000 of them, within the piezo limits.
    frames_per_plane : int, optional
        Passes over all planes (each pass is one gated volume).
    target_phase : float, optional
        Heart phase (rad, [0, 2pi)) in the reference's coordinates; default: the
        analyzer's (end of the most moving half beat).
    exposure : float, optional
        Fluorescence exposure (s), at most 50 ms.
    lock_timeout : float, optional
        How long to wait for a heartbeat lock before failing (s, up to an hour).
    md : dict, optional
        Extra metadata for the start document.

    Frames are stored as (frames_per_plane, planes, y, x), or (frames, y, x) for a
    single plane.
    """
    md = check_md(md)
    check_device("camera", camera, Camera)
    check_device("gating", gating, GatingTrigger)
    check_device("piezo", piezo, Piezo)
    zs, fpp, target_phase, exposure = yield from _validate(
        piezo, z_positions, frames_per_plane, target_phase, exposure)
    lock_timeout = check_float("lock_timeout", lock_timeout, *GATED_RANGES["lock_timeout"],
                               lo_open=True)
    args = {"z_positions": zs, "frames_per_plane": fpp, "target_phase": target_phase,
            "exposure": exposure}
    return (yield from _run(camera, gating, piezo, zs, fpp, target_phase, exposure, 1, 0.0,
                            False, lock_timeout, "gated_scan", args, md))


@names_a_silent_ioc
@ranged(TIMELAPSE_RANGES)
def gated_timelapse(
    camera: Camera,
    gating: GatingTrigger,
    piezo: Piezo,
    z_positions: Sequence[float],
    n_timepoints: int,
    interval_s: float,
    frames_per_plane: int = 1,
    target_phase: float | None = None,
    exposure: float = 0.005,
    *,
    refresh_reference: bool = True,
    lock_timeout: float = 30.0,
    md: dict[str, Any] | None = None,
):
    """Gated stacks every ``interval_s`` seconds, ``n_timepoints`` times, in one run.

    Before each later stack the analyzer takes a new reference heartbeat and its
    long-term updating aligns it to the earlier ones, so the lock stays on the same
    heart phase for hours even as the heart's appearance and rate drift. A stack that
    overruns the interval starts the next one at once. Frames are stored as
    (timepoints x passes, planes, y, x).

    Parameters
    ----------
    camera : Camera
        Fluorescence camera (put in external trigger mode by this plan).
    gating : GatingTrigger
        The gating trigger device (its IOC owns the brightfield camera).
    piezo : Piezo
        Objective piezo; moving it also moves the light sheets.
    z_positions : list of float
        Focal positions (um), 1..1000 of them, within the piezo limits.
    n_timepoints : int
        Gated stacks to acquire, 1..1e6.
    interval_s : float
        Seconds from the start of one stack to the start of the next, up to a week.
    frames_per_plane : int, optional
        Passes over all planes per time point.
    target_phase : float, optional
        Heart phase (rad, [0, 2pi)); default: the analyzer's.
    exposure : float, optional
        Fluorescence exposure (s), at most 50 ms.
    refresh_reference : bool, optional
        Take a new reference heartbeat before each later stack (aligned to the first).
    lock_timeout : float, optional
        How long to wait for a heartbeat lock before failing (s, up to an hour).
    md : dict, optional
        Extra metadata for the start document.
    """
    md = check_md(md)
    check_device("camera", camera, Camera)
    check_device("gating", gating, GatingTrigger)
    check_device("piezo", piezo, Piezo)
    zs, fpp, target_phase, exposure = yield from _validate(
        piezo, z_positions, frames_per_plane, target_phase, exposure)
    lock_timeout = check_float("lock_timeout", lock_timeout, *GATED_RANGES["lock_timeout"],
                               lo_open=True)
    n = check_int("n_timepoints", n_timepoints, *TIMELAPSE_RANGES["n_timepoints"])
    interval_s = check_float("interval_s", interval_s, *TIMELAPSE_RANGES["interval_s"])
    args = {"z_positions": zs, "frames_per_plane": fpp, "target_phase": target_phase,
            "exposure": exposure, "n_timepoints": n, "interval_s": interval_s,
            "refresh_reference": bool(refresh_reference)}
    return (yield from _run(camera, gating, piezo, zs, fpp, target_phase, exposure, n,
                            interval_s, bool(refresh_reference), lock_timeout,
                            "gated_timelapse", args, md))
