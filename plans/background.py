"""Background: the mean of laser-off frames, subtracted from later frames in the IOC."""

import bluesky.plan_stubs as bps

from devices.camera import Camera
from devices.laser import Laser
from plans.common import names_a_silent_ioc, with_cleanup, with_real_cause
from plans.validation import check_device, check_int, ranged

#: frames a background may average (checked by the plan and the queue server)
BACKGROUND_RANGES = {"n": (1, 10_000)}


@names_a_silent_ioc
@ranged(BACKGROUND_RANGES)
def acquire_background(camera: Camera, n: int = 50, laser: Laser | None = None):
    """Average ``n`` frames with the excitation off as the camera's background.

    Later frames are written minus it (saturating at zero) until exposure, binning or
    ROI change, which invalidates it (``camera.cam.background_valid`` goes to 0).

    Parameters
    ----------
    camera : Camera
        The camera (must be idle).
    n : int, optional
        Frames to average, 1..10000 (about 50 is usual).
    laser : Laser, optional
        If given, switched off for the background and restored afterwards.
    """
    n = check_int("n", n, *BACKGROUND_RANGES["n"])
    check_device("camera", camera, Camera)
    if laser is not None:
        check_device("laser", laser, Laser)
    restore = None
    if laser is not None:
        restore = yield from bps.rd(laser.enable, default_value=None)

    def inner():
        if laser is not None:
            yield from bps.mv(laser.enable, "Off")
        yield from bps.mv(camera.cam.background_acquire, n)

    def cleanup():
        if laser is not None and restore is not None:
            yield from bps.mv(laser.enable, restore)

    return (yield from with_real_cause(with_cleanup(inner(), cleanup())))
