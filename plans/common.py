"""Small helpers shared by plans."""

import functools
import logging
import time
import uuid

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import FailedStatus, short_uid

from devices import DisconnectedError, ReadTimeoutError
from devices.scanboard import PIEZO_TRAVEL_UM

log = logging.getLogger(__name__)


def file_name_for(kind: str) -> tuple[str, str]:
    """(directory relative to the camera IOC's data root, unique file name)."""
    return time.strftime("%Y/%m/%d"), f"{kind}_{time.strftime('%H%M%S')}_{uuid.uuid4().hex[:8]}"


def focus_limits(scanboard):
    """``(low, high)``: the piezo's limits (um), which the scan board keeps to when it
    moves the focal plane (a plan simulator gets the piezo's whole travel)."""
    lo = yield from bps.rd(scanboard.z_low_limit, default_value=PIEZO_TRAVEL_UM[0])
    hi = yield from bps.rd(scanboard.z_high_limit, default_value=PIEZO_TRAVEL_UM[1])
    return float(lo), float(hi)


#: areaDetector's DetectorState of a camera that is not acquiring
NOT_ACQUIRING = ("Idle", "Disconnected")


def camera_busy(camera):
    """True when the camera acquires or its writer holds a file open (read with
    ``bps.rd``; simulators, which answer no reads, see an idle camera)."""
    capture = yield from bps.rd(camera.hdf.capture_rbv, default_value=0)
    state = yield from bps.rd(camera.cam.detector_state, default_value="Idle")
    return bool(capture) or state not in NOT_ACQUIRING


#: seconds a camera that is not open has to open when a plan asks (a real sCMOS opens
#: in a few seconds)
OPEN_TIMEOUT_S = 60.0


def ensure_open(camera):
    """Refuse to start on a camera that is not there (its SDK or cable; the IOC says
    "Disconnected" as areaDetector does), before a run is opened: the IOC is asked to
    try it once more (``ReadStatus``), and the refusal carries the driver's own
    reason. Without this the run was opened, and stored as failed, on a camera that
    could never have taken a frame."""
    state = yield from bps.rd(camera.cam.detector_state, default_value="Idle")
    if state != "Disconnected":
        return
    asked = yield from bps.abs_set(camera.cam.read_status, 1, group=(group := short_uid()))
    # bounded: opening a camera takes seconds; an SDK call that never returns held
    # the plan (and the queue behind it) for good
    yield from bps.wait(group=group, timeout=OPEN_TIMEOUT_S, error_on_timeout=False)
    if asked is not None and not asked.done:
        raise TimeoutError(f"{camera.name}: the camera IOC was asked to open the camera "
                           f"({camera.cam.read_status.pvname}) and did not answer in "
                           f"{OPEN_TIMEOUT_S:g} s (its driver does not return: see the "
                           "IOC's log); no run was started")
    state = yield from bps.rd(camera.cam.detector_state, default_value="Idle")
    if state == "Disconnected":
        why = yield from bps.rd(camera.cam.status_message, default_value="")
        raise RuntimeError(f"{camera.name}: {why or 'the camera is disconnected'}; "
                           "no run was started")


def ensure_idle(camera, scanboard=None):
    """Refuse to start on hardware another scan is using (another session, the queue
    worker, a process that died mid-scan), before anything is changed. Why here: a
    plan's cleanup stops the camera and the board whatever happened, so a plan that
    failed on busy hardware would stop a scan that is not its own. The camera's live
    preview is not a scan: plans take the camera over from it. (Read with ``bps.rd``;
    plan simulators see idle hardware.)"""
    yield from ensure_open(camera)
    busy = []
    # Capture_RBV, the IOC's own word on an open capture: Capture, the busy record a
    # client puts, reads back in ophyd as the value last put (before the IOC has
    # answered), and a put the IOC refused left it "Capture" for every later scan
    capture = yield from bps.rd(camera.hdf.capture_rbv, default_value=0)
    state = yield from bps.rd(camera.cam.detector_state, default_value="Idle")
    mode = yield from bps.rd(camera.cam.camera_mode, default_value="Paused")
    if capture or (state not in NOT_ACQUIRING and mode != "Preview"):
        busy.append(f"the camera is {'writing a file' if capture else 'acquiring'} "
                    f"(putting Abort to {camera.cam.camera_mode.pvname} stops it)")
    if scanboard is not None:
        running = yield from bps.rd(scanboard.running, default_value=0)
        # a paused board is a scan waiting to resume (or left by a halted run, which
        # skips every cleanup): its triggers never come to the next scan's camera
        paused = yield from bps.rd(scanboard.paused, default_value=0)
        if running or paused:
            busy.append(f"the scan board is {'paused' if paused and not running else 'running'}"
                        f" (putting 1 to {scanboard.stop_cmd.pvname} stops it)")
    if busy:
        raise RuntimeError("another scan is using the hardware: " + "; ".join(busy)
                           + "; nothing was changed or stopped")


#: seconds a cleanup put may take: an IOC that does not complete it by then is frozen
#: or gone, and waiting on (Channel Access calls it gone only after ~30 s) delays the
#: error the user is owed
CLEANUP_TIMEOUT_S = 10.0


#: seconds a cleanup waits on the puts to a camera IOC that has just let a read time
#: out (frozen or swamped): they are sent all the same
SILENT_IOC_WAIT_S = 2.0


#: seconds an IOC has to take a setting (a put with completion): an exposure or a
#: waveform parameter is applied in milliseconds; a driver call that never returns
#: (a hung vendor SDK) held the plan, and the queue behind it, for good
SETTINGS_TIMEOUT_S = 30.0


def _pv_of(signal) -> str:
    """The PV a put goes to (an EpicsSignal's setpoint, not its readback), or the
    name of a signal that has none."""
    return getattr(signal, "setpoint_pvname", None) or getattr(signal, "pvname", None) \
        or signal.name


def set_settings(*args):
    """``bps.mv(*args)`` for settings (not moves, which take their own time), bounded
    by `SETTINGS_TIMEOUT_S`: a setting left unanswered ends the plan naming its PV and
    value, before anything is started."""
    group = short_uid("settings")
    pairs = list(zip(args[::2], args[1::2], strict=True))
    statuses = []
    for signal, value in pairs:
        statuses.append((yield from bps.abs_set(signal, value, group=group)))
    yield from bps.wait(group=group, timeout=SETTINGS_TIMEOUT_S, error_on_timeout=False)
    late = [f"{_pv_of(signal)} = {value!r}"
            for (signal, value), st in zip(pairs, statuses, strict=True)
            if st is not None and not st.done]
    if late:
        raise TimeoutError(f"the IOC did not take {', '.join(late)} in "
                           f"{SETTINGS_TIMEOUT_S:g} s (frozen, or its driver does not "
                           "return: see the IOC's log); nothing was started")


def _send(pairs, group: str):
    """Set each ``(signal, value)`` in order into ``group``; a put that cannot be sent
    (its IOC gone) does not keep the ones after it from being sent. Returns the first
    such failure, or None."""
    failure: Exception | None = None
    for signal, value in pairs:
        try:
            yield from bps.abs_set(signal, value, group=group)
        except Exception as exc:  # noqa: BLE001 - returned, once every put was sent
            failure = failure or exc
    return failure


def abort_camera(camera, *also, then=()):
    """Plans' cleanup: the puts ``also`` (``(signal, value)``: the board's stop, the
    gating's disarm), then stop camera and writer at once if either is busy, then the
    puts ``then`` (settings to restore once the camera takes no more frames, such as
    the laser's power). The writer is left as a stock areaDetector client expects it:
    ``HDF1:FramesPerVolume`` back to 0, or the next capture of a client that knows
    nothing of volumes (3 frames, say) is refused as "not a whole number of 10-plane
    volumes". Every put is sent whatever failed before it (a board IOC that does not
    answer its stop must not leave the camera capturing with its file open: the next
    scan would be refused as "hardware in use"), then all are waited for together for
    at most `CLEANUP_TIMEOUT_S` (then bluesky's ``wait`` raises, and `with_cleanup`
    logs it): an IOC that does not answer costs the user one timeout, not one per put.
    A camera IOC that has just let a read time out is frozen or swamped: its puts are
    still sent (they take effect if it answers again) but waited for only
    `SILENT_IOC_WAIT_S` (a frozen camera IOC delayed the error by the full timeout).
    The first failure is raised after the wait."""
    group = short_uid("cleanup")
    failure = yield from _send(also, group)
    silent = False
    try:
        busy = yield from camera_busy(camera)
    except Exception as exc:  # noqa: BLE001 - no answer (or a put above failed late)
        busy = True  # asked to abort all the same
        failure = failure or exc
        silent = isinstance(exc, ReadTimeoutError)
    puts = [(camera.cam.camera_mode, "Abort")] if busy else []
    later = yield from _send([*puts, (camera.hdf.frames_per_volume, 0), *then], group)
    failure = failure or later
    yield from bps.wait(group=group,
                        timeout=SILENT_IOC_WAIT_S if silent else CLEANUP_TIMEOUT_S)
    if failure is not None:
        raise failure


#: the Event stream of the camera's capture summary (a row per volume, or per block of
#: 100 planar frames: index, frames, z range, mean, max); BestEffortCallback plots it
SUMMARY_STREAM = "summary"


def summary_hints(camera) -> dict:
    """Start-document hints that make BestEffortCallback plot the summary stream
    against its row index (fly scans emit no Events in ``primary``)."""
    return {"dimensions": [([camera.summary.index_key], SUMMARY_STREAM)]}


def declare_summary(camera):
    """Declare the summary stream (after ``prepare``: the index key depends on it)."""
    yield from bps.declare_stream(camera.summary, name=SUMMARY_STREAM, collect=True)


def collect_summary(camera):
    """Events for the summary rows finished since the last call."""
    yield from bps.collect(camera.summary, name=SUMMARY_STREAM)


def collect_all(camera, stream_name: str = "primary"):
    """Collect until every written frame has its StreamDatum documents.

    One collect covers one file of a capture at most (bluesky numbers the rows of a
    collect together), so a capture that rolled over into several files needs one
    collect per file still pending once the camera has completed.
    """
    while camera.assets_pending():
        before = camera.collected_index
        yield from bps.collect(camera, name=stream_name)
        if camera.collected_index == before:  # a plan simulator answers no message
            return


def collect_stored(camera, stream_name: str = "primary"):
    """On the way out of an interrupted run: collect every frame already written.

    A failure here is logged, not raised: the run ends with the exception that
    interrupted it, which is what the user must see."""
    try:
        yield from collect_all(camera, stream_name)
        yield from collect_summary(camera)
    except Exception as exc:  # noqa: BLE001 - the interrupting exception wins
        log.warning("%s: frames written before the run ended could not all be "
                    "collected: %s", camera.name, cause_of(exc))


def collect_cut_short(camera, stream_name: str = "primary"):
    """In an interrupted run's cleanup, once the camera was stopped: the volume (or
    gated pass) the stop cut short goes into the run too, as the file holds it (the
    planes never taken as holes), once the capture has closed (waited for at most
    `CLEANUP_TIMEOUT_S`). Only whole volumes are collected while a capture runs, so
    without this an abort mid-pass left that pass's frames out of the run. Logged,
    not raised: the run ends with what interrupted it."""
    try:
        for _ in range(int(CLEANUP_TIMEOUT_S / 0.1)):
            capture = yield from bps.rd(camera.hdf.capture_rbv, default_value=0)
            if capture in ("Done", 0):
                break
            yield from bps.sleep(0.1)
        yield from collect_all(camera, stream_name)
        yield from collect_summary(camera)
    except Exception as exc:  # noqa: BLE001 - the interrupting exception wins
        log.warning("%s: the frames of the volume the stop cut short could not be "
                    "collected: %s", camera.name, cause_of(exc))


def names_a_silent_ioc(plan_function):
    """Decorate a plan: a device channel that is not connected (its IOC stopped,
    starting up, or unreachable) fails the plan saying so, not only "camera_cam_..._time
    is not connected", which is all ophyd says; so does a read that times out on a
    connected channel (the IOC frozen or swamped: ophyd says only "Failed to read ...
    within 2.00 sec"). The plan's signature is kept (the queue
    server reads it)."""
    @functools.wraps(plan_function)
    def plan(*args, **kwargs):
        try:
            return (yield from plan_function(*args, **kwargs))
        except DisconnectedError as exc:
            raise DisconnectedError(
                f"{exc}: its IOC does not answer (stopped, starting up, or unreachable); "
                "its channels connect again within seconds of it being up: run the plan "
                "again then") from None
        except ReadTimeoutError as exc:  # connected, silent: a frozen or swamped IOC
            raise ReadTimeoutError(
                f"{exc}: its IOC is connected but does not answer (stopped by a debugger "
                "or the system, or overloaded: see its log and its host's load); run the "
                "plan again once it answers") from None

    return plan


def cause_of(exc: Exception) -> Exception:
    """What failed: a failed status's own exception (bluesky's ``FailedStatus`` says
    only "ProgressStatus(device=camera, done=True, success=False)"), else ``exc``."""
    cause = exc.__cause__ if isinstance(exc, FailedStatus) else None
    return cause if isinstance(cause, Exception) else exc


def with_real_cause(plan):
    """Run ``plan``; when a device's status fails, raise that status's own exception
    (e.g. "camera: disk full: ... (120 of 400 frames stored, 280 lost)") instead of
    bluesky's ``FailedStatus``, whose text names only the status object. The exception
    the user sees and the stop document's ``reason`` then both say what happened."""
    try:
        return (yield from plan)
    except FailedStatus as exc:
        cause = cause_of(exc)
        if cause is not exc:
            raise cause from None
        raise


def with_cleanup(plan, cleanup):
    """``plan``, then the ``cleanup`` plan whatever happened (as bluesky's
    ``finalize_wrapper``), but the user sees the failure that came first: after the
    plan failed (say the IOC was killed), a cleanup that fails too (it cannot reach
    the IOC either) is logged, not raised in its place. After a success, a failing
    cleanup fails the plan."""
    failed: list[Exception] = []

    def note(exc: Exception):
        failed.append(exc)
        yield from ()

    def final():
        try:
            yield from cleanup
        except Exception as exc:
            if not failed:
                raise
            log.error("cleaning up after '%s' failed too: %s", failed[0], exc)

    return (yield from bpp.contingency_wrapper(plan, except_plan=note, final_plan=final))
