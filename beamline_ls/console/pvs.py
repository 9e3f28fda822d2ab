"""The PVs the console shows and the ones it may write, by short name.

One table: the bridge subscribes to every PV named here, the page refers to them by
the short names, and a write request names a short name from :data:`WRITABLE` (the
console never writes a PV that is not listed, whatever a browser sends).
"""

from __future__ import annotations

MOTORS = ("piezo", "galvo1", "galvo2", "stage:X", "stage:Y", "stage:Z")
MOTOR_FIELDS = ("RBV", "VAL", "DMOV", "EGU", "HLM", "LLM")


def _motor_pvs() -> dict[str, str]:
    return {f"{m}.{f}": f"{m}.{f}" for m in MOTORS for f in MOTOR_FIELDS}


#: short name -> PV suffix (after the microscope's prefix)
MONITORED: dict[str, str] = {
    # camera driver, live image and file writer (areaDetector names)
    **{f"cam1:{s}": f"cam1:{s}" for s in (
        "DetectorState_RBV", "CameraMode", "Acquire", "ArrayCounter_RBV", "ArrayRate_RBV",
        "AcquireTime_RBV", "AcquirePeriod_RBV", "TriggerMode_RBV", "ImageMode_RBV",
        "NumImages_RBV", "NumImagesCounter_RBV", "ArraySizeX_RBV", "ArraySizeY_RBV",
        "BinX_RBV", "StatusMessage_RBV", "TemperatureActual", "Model_RBV",
        "TriggersMissed_RBV", "BackgroundValid_RBV", "BackgroundFrames_RBV",
        "BackgroundLevel_RBV", "BackgroundEnable", "ReadoutTime_RBV")},
    **{f"image1:{s}": f"image1:{s}" for s in (
        "ArraySize0_RBV", "ArraySize1_RBV", "UniqueId_RBV", "DroppedArrays_RBV")},
    **{f"HDF1:{s}": f"HDF1:{s}" for s in (
        "FilePath_RBV", "FileName_RBV", "FullFileName_RBV", "Capture_RBV", "NumCapture_RBV",
        "NumCaptured_RBV", "DroppedArrays_RBV", "LostFrames_RBV", "WriteMessage",
        "WriteStatus", "MirrorPath", "MirrorQueued_RBV", "MirrorVerified_RBV",
        "MirrorFailed_RBV", "MirrorMessage_RBV")},
    # scan board
    **{f"scan:{s}": f"scan:{s}" for s in (
        "Mode", "VolumeRate", "NumPlanes", "ZStart", "ZStop", "PlaneZ", "SkipStart",
        "SkipEnd", "ExposureTime", "SampleRate", "PiezoLag", "Galvo1Offset", "Galvo1Slope",
        "Galvo2Offset", "Galvo2Slope", "NumVolumes", "Running_RBV", "VolumesDone_RBV",
        "Period_RBV", "PlaneInterval_RBV", "StartTime_RBV", "Message_RBV")},
    **_motor_pvs(),
    # laser
    **{f"laser:{s}": f"laser:{s}" for s in (
        "Power", "Power_RBV", "Enable", "Enable_RBV", "Wavelength_RBV", "MaxPower_RBV",
        "Message_RBV")},
    # gating
    **{f"gating:{s}": f"gating:{s}" for s in (
        "Enable", "FrameRate", "State_RBV", "Period_RBV", "Phase_RBV", "TargetPhase",
        "TargetPhase_RBV", "Latency", "Armed_RBV", "TriggersFired_RBV", "TriggersLate_RBV",
        "Message_RBV", "Source_RBV", "FramesLost_RBV", "FramesSkipped_RBV",
        "ImageSizeX_RBV", "ImageSizeY_RBV", "ImageCounter_RBV")},
}

#: array PVs the bridge handles itself (frames, histories), not sent as values
CAMERA_IMAGE = "image1:ArrayData"
BRIGHTFIELD_IMAGE = "gating:Image_RBV"
PHASE_HISTORY = "gating:History_RBV"
TRIGGER_RECORDS = "gating:LastTriggers_RBV"

#: what a logged-in operator may write from the console
WRITABLE: frozenset[str] = frozenset({
    *(f"{m}.VAL" for m in MOTORS), *(f"{m}.STOP" for m in MOTORS),
    "cam1:CameraMode", "cam1:AcquireTime", "cam1:BackgroundAcquire", "cam1:BackgroundEnable",
    "laser:Power", "laser:Enable",
    "gating:Enable", "gating:TargetPhase", "gating:Refresh", "gating:FrameRate",
    "scan:Galvo1Offset", "scan:Galvo1Slope", "scan:Galvo2Offset", "scan:Galvo2Slope",
    "scan:PlaneZ", "scan:Mode",
})
