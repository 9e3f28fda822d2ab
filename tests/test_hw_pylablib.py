"""The sCMOS through pylablib at the SDK seam: cameras built with ``create_autospec``
from pylablib's real DCAMCamera and AndorSDK3Camera classes (a call the SDK class does
not have, or with a wrong signature, fails here as it would on the real camera), given
a small sensor model: ROI and exposure read back as the camera rounds them, frames
produced by trigger pulses, frames lost when its buffer is overwritten."""

from __future__ import annotations

import threading
import time
from unittest import mock

import h5py
import numpy as np
import pytest
from conftest import wait_for

from beamline_ls.hardware.camera import CameraSettings
from beamline_ls.hardware.factory import build_drivers
from beamline_ls.hardware.pylablib_camera import PylablibCamera, camera_class
from beamline_ls.pipeline.recorder import Recorder

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


class Sensor:
    """A camera behind a pylablib class: settings as the hardware takes them, and a
    frame per trigger with the camera's own index and timestamp."""

    def __init__(self, sdk: str, roi_step: int = 1, min_exposure: float = 1e-5) -> None:
        cls = camera_class(sdk)
        self.sdk = sdk
        self.cls = cls
        self.cam = cam = mock.create_autospec(cls, instance=True)
        self.roi_step = roi_step
        self.min_exposure = min_exposure
        self.roi = (0, 2048, 0, 2048, 1, 1)
        self.exposure = 0.01
        self.running = False
        self.index = 0
        self.frames: list[tuple[np.ndarray, object]] = []
        self.delivered: list = []  # frame infos handed out, in order
        self.cv = threading.Condition()
        if sdk == "dcam":
            from pylablib.devices.DCAM.DCAM import TDeviceInfo

            cam.get_device_info.return_value = TDeviceInfo(
                "Hamamatsu", "C13440-20CU", "S/N: 301234", "2.10")
        else:
            from pylablib.devices.Andor.AndorSDK3 import TDeviceInfo

            cam.get_device_info.return_value = TDeviceInfo(
                "Zyla", "ZYLA-5.5-USB3", "VSC-01234", "15.3", "3.15")
        cam.get_detector_size.return_value = (2048, 2048)
        cam.set_roi.side_effect = self._set_roi
        cam.get_roi.side_effect = lambda: self.roi
        cam.get_roi_limits.return_value = ("hlimits(step=4)", "vlimits(step=4)")
        cam.set_exposure.side_effect = self._set_exposure
        cam.get_exposure.side_effect = lambda: self.exposure
        cam.acquisition_in_progress.side_effect = lambda: self.running
        cam.start_acquisition.side_effect = self._start
        cam.stop_acquisition.side_effect = self._stop
        cam.wait_for_frame.side_effect = self._wait
        cam.read_multiple_images.side_effect = self._read
        cam.get_attribute_value.side_effect = self._attribute
        cam.get_frame_timings.return_value = (0.01, 0.02)

    def open(self, index: int):
        assert index == 0
        return self.cam

    def _set_roi(self, hstart=0, hend=None, vstart=0, vend=None, hbin=1, vbin=1):
        q = self.roi_step
        self.roi = (hstart // q * q, hend // q * q, vstart // q * q, vend // q * q, hbin, vbin)

    def _set_exposure(self, exposure):
        self.exposure = max(self.min_exposure, exposure)

    def _start(self, *args, **kwargs):
        self.running = True
        self.index = 0

    def _stop(self):
        self.running = False

    def _attribute(self, name, *args, **kwargs):
        values = {"TIMING READOUT TIME": 0.0098, "SENSOR TEMPERATURE": -8.0,
                  "ReadoutTime": 0.0101, "SensorTemperature": 0.3,
                  "TimestampClockFrequency": 1e8}
        return values[name]

    def trigger(self, n: int = 1, lose: int = 0) -> None:
        """``n`` trigger pulses; the first ``lose`` frames are overwritten unread."""
        h0, h1, v0, v1, hb, vb = self.roi
        with self.cv:
            for k in range(n):
                index = self.index
                self.index += 1
                if k < lose:
                    continue
                image = np.full(((v1 - v0) // vb, (h1 - h0) // hb), index, np.uint16)
                t = time.time()
                if self.sdk == "dcam":
                    from pylablib.devices.DCAM.DCAM import TFrameInfo
                    from pylablib.devices.interface.camera import TFramePosition

                    info = TFrameInfo(index, index, int(t * 1e6), index,
                                      TFramePosition(h0, v0), 2)
                else:
                    from pylablib.devices.Andor.AndorSDK3 import TFrameInfo

                    info = TFrameInfo(index, int(t * 1e8), image.nbytes, "Mono16",
                                      image.shape[1] * 2)
                self.frames.append((image, info))
            self.cv.notify_all()

    def _wait(self, since="lastread", nframes=1, timeout=20.0, error_on_stopped=False):
        with self.cv:
            if not self.cv.wait_for(lambda: self.frames, timeout):
                raise self.cls.TimeoutError("timeout")

    def _read(self, rng=None, peek=False, missing_frame="skip", return_info=False,
              return_rng=False):
        with self.cv:
            frames, self.frames = self.frames, []
        self.delivered += [i for _, i in frames]
        return [f for f, _ in frames], [i for _, i in frames]


def _call_names(cam) -> list[str]:
    return [c[0] for c in cam.method_calls]


@pytest.mark.parametrize("sdk,mode,expected", [
    ("dcam", "External", [("set_trigger_mode", ("ext",)),
                          ("set_attribute_value", ("TRIGGER ACTIVE", 1))]),
    ("dcam", "External Exposure", [("set_trigger_mode", ("ext",)),
                                   ("set_attribute_value", ("TRIGGER ACTIVE", 2))]),
    ("andor3", "External Exposure", [("set_trigger_mode", ("External Exposure",))]),
    ("andor3", "Internal", [("set_trigger_mode", ("Internal",))]),
])
def test_settings_reach_the_sdk_in_order_while_stopped(sdk, mode, expected):
    sensor = Sensor(sdk)
    camera = PylablibCamera(sdk, opener=sensor.open, readout_speed="")
    sensor.running = True  # left running by someone: stopped before any setting
    camera.apply(CameraSettings(exposure_s=0.02, binning=2, roi=(512, 256, 1024, 1536),
                                trigger_mode=mode))
    calls = [c for c in sensor.cam.method_calls if c[0] not in (
        "get_device_info", "get_detector_size", "acquisition_in_progress", "get_roi",
        "get_exposure", "get_attribute_value")]  # reads back, not settings
    names = [c[0] for c in calls]
    assert names[0] == "stop_acquisition"
    assert [(c[0], c[1]) for c in calls[1:1 + len(expected)]] == expected
    rest = calls[1 + len(expected):]
    assert rest[0] == mock.call.set_roi(512, 1536, 256, 1792, 2, 2)
    assert rest[1] == mock.call.set_exposure(0.02)
    assert rest[-1] == mock.call.setup_acquisition(mode="sequence", nframes=200)
    assert camera.name == ("Hamamatsu C13440-20CU (S/N: 301234)" if sdk == "dcam"
                           else "Andor ZYLA-5.5-USB3 (VSC-01234)")


def test_an_external_trigger_volumetric_scan_gets_every_frame_in_order():
    """4 planes x 3 volumes on external triggers: 12 frames, ids 0..11 from the
    camera's index, stamped on the host clock at the trigger, then it stops itself."""
    sensor = Sensor("dcam")
    camera = PylablibCamera("dcam", opener=sensor.open)
    got = []
    settings = CameraSettings(exposure_s=0.005, roi=(0, 0, 64, 32), trigger_mode="External")
    camera.start(settings, 12, got.append)
    try:
        for _ in range(3):  # the scan board's pulses, one volume at a time
            time.sleep(0.02)
            sensor.trigger(4)
        wait_for(lambda: not camera.running, 10, "the camera to end after 12 frames")
    finally:
        camera.stop()
    assert [f.frame_id for f in got] == list(range(12))
    assert all(f.image.shape == (32, 64) and f.image[0, 0] == f.frame_id for f in got)
    stamps = np.array([f.timestamp for f in got])
    assert np.all(np.diff(stamps) >= 0) and abs(stamps[-1] - time.time()) < 5
    # the camera's own timestamp travels with each frame (DCAM: microseconds -> s)
    assert [f.extra["camera_timestamp"] for f in got] == [
        i.timestamp_us * 1e-6 for i in sensor.delivered]
    assert camera.frame_fields == ("camera_timestamp",)
    assert camera.frames_lost == 0 and camera.failure == ""
    assert "stop_acquisition" in _call_names(sensor.cam) and not sensor.running


def test_frames_the_camera_lost_are_counted_and_left_as_holes(tmp_path):
    """The camera's buffer is overwritten before two frames are read: the driver counts
    them, the recorder leaves two holes at their places and still completes."""
    sensor = Sensor("andor3")
    camera = PylablibCamera("andor3", opener=sensor.open)
    rec = Recorder(buffer_frames=32)
    rec.start(tmp_path / "scan.h5", (32, 64), n_frames=10)
    camera.start(CameraSettings(exposure_s=0.005, roi=(0, 0, 64, 32),
                                trigger_mode="External"), 10, rec.submit)
    try:
        sensor.trigger(4)
        time.sleep(0.05)
        sensor.trigger(6, lose=2)  # frames 4 and 5 overwritten unread
        wait_for(lambda: not camera.running, 10, "the camera to end")
        wait_for(lambda: not rec.status.capturing, 10, "the capture to complete")
    finally:
        camera.stop()
        status = rec.stop()
    assert camera.frames_lost == 2 and camera.frames_acquired == 8
    assert status.frames_written == 8 and status.frames_missing == 2
    assert status.missing_ids == [4, 5] and status.frames_lost == 2
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        data = f["/entry/data/data"][:, 0, 0]
        assert list(data) == [0, 1, 2, 3, 0, 0, 6, 7, 8, 9]  # holes where 4, 5 were
        assert list(f["/entry/missing/frame_id"][:]) == [4, 5]


def test_a_setting_the_camera_does_not_take_names_camera_setting_and_limits():
    sensor = Sensor("dcam", roi_step=4, min_exposure=1e-3)
    camera = PylablibCamera("dcam", opener=sensor.open)
    with pytest.raises(ValueError, match=r"Hamamatsu C13440-20CU \(S/N: 301234\): exposure: "
                                         r"asked 0.0001 s, the camera set 0.001 s"):
        camera.apply(CameraSettings(exposure_s=1e-4, roi=(0, 0, 64, 32)))
    with pytest.raises(ValueError, match=r"C13440-20CU .*: ROI: asked \(2, 66, 0, 32, 1, 1\)"
                                         r".*the camera set \(0, 64, 0, 32, 1, 1\); limits"):
        camera.apply(CameraSettings(exposure_s=0.01, roi=(2, 0, 64, 32)))
    sensor.cam.set_readout_speed.side_effect = ValueError(
        "value 'turbo' is not in the allowed set ['slow', 'normal', 'fast']")
    camera.readout_speed = "turbo"
    with pytest.raises(ValueError, match=r"readout speed: value 'turbo' is not in the "
                                         r"allowed set \['slow', 'normal', 'fast'\]"):
        camera.apply(CameraSettings(exposure_s=0.01, roi=(0, 0, 64, 32)))
    with pytest.raises(ValueError, match=r"hardware.camera.sdk must be one of \['dcam', "
                                         r"'andor3'\], got 'pco'"):
        PylablibCamera("pco")


def test_the_sensor_temperature_and_readout_time_come_from_the_camera():
    for sdk, temp, readout in (("dcam", -8.0, 0.0098), ("andor3", 0.3, 0.0101)):
        camera = PylablibCamera(sdk, opener=Sensor(sdk).open)
        assert camera.sensor_shape == (0, 0)  # not open: asks the SDK nothing
        camera.open()
        assert camera.sensor_shape == (2048, 2048)
        assert camera.temperature_c() == temp
        camera.apply(CameraSettings(roi=(0, 0, 64, 64)))
        assert camera.readout_time_s(CameraSettings()) == readout


def test_a_configuration_of_real_devices_builds_no_simulator(tmp_path):
    """Every device real: no simulated microscope, heart or camera trigger line, and
    gated frames would carry no simulator field."""
    import tifffile

    stack = tmp_path / "bf.tif"
    tifffile.imwrite(stack, np.zeros((4, 16, 16), np.uint8), photometric="minisblack")
    sensor = Sensor("dcam")
    hardware = {
        "camera": {"backend": "pylablib", "sdk": "dcam"},
        "brightfield": {"backend": "tiff", "path": str(stack), "fps": 50},
        "scanboard": {"backend": "nidaqmx"},
        "stage": {"backend": "asi", "port": "/dev/ttyUSB0"},
        "laser": {"backend": "cobolt", "port": "/dev/ttyUSB1", "max_power_mw": 100,
                  "wavelength_nm": 488},
        "trigger_box": {"backend": "serial", "port": "/dev/ttyUSB2"},
    }
    d = build_drivers(hardware, task_factory=mock.Mock(), camera_opener=sensor.open)
    assert d.microscope is None
    assert d.gating.camera_line is None
    assert "true_phase" not in d.gating.fields
    assert isinstance(d.camera, PylablibCamera)
    assert d.gating.description.startswith("replay of bf.tif")
    assert "trigger box on /dev/ttyUSB2" in d.gating.description
    with pytest.raises(ValueError, match=r"hardware.camera.sdk: must be one of"):
        build_drivers({"camera": {"backend": "pylablib", "sdk": "pco"}})
    with pytest.raises(ValueError, match=r"hardware.camera.exposure: unknown key"):
        build_drivers({"camera": {"backend": "pylablib", "sdk": "dcam", "exposure": 1}})
    # refused when the IOC starts, not when the camera first opens (or, for the
    # library folder, as pylablib's "can't import library" naming no folder)
    with pytest.raises(ValueError, match=r"hardware.camera.readout_speed: must be one of "
                                         r"\['', 'slow', 'normal', 'fast'\], got 'superfast'"):
        build_drivers({"camera": {"backend": "pylablib", "sdk": "dcam",
                                  "readout_speed": "superfast"}})
    with pytest.raises(ValueError, match=r"hardware.camera.library_dir: no such directory: "
                                         r"/nonexistent/dcam"):
        build_drivers({"camera": {"backend": "pylablib", "sdk": "dcam",
                                  "library_dir": "/nonexistent/dcam"}})


def test_a_camera_whose_vendor_library_is_missing_names_the_library_and_the_setting(
        tmp_path):
    """pylablib's real DCAM class, on this Linux machine without the vendor SDK. It
    failed with "DLLs are not available on non-Windows platform" whatever was
    installed: pylablib 1.4 refuses every load off Windows when ``only_windows_dlls``
    is False, which this driver set. Now the load is tried (in ``library_dir`` too)
    and the failure names the sdk key, the library and where it is looked for."""
    camera = PylablibCamera("dcam", library_dir=str(tmp_path))  # an empty folder
    with pytest.raises(OSError) as failed:
        camera.open()
    message = str(failed.value)
    assert "sdk = 'dcam'" in message and "dcamapi.dll" in message, message
    assert "library_dir" in message, message
    assert "not available on non-Windows" not in message, message


def test_an_andor_camera_off_windows_says_pylablib_cannot_load_its_sdk_there():
    """pylablib loads Andor SDK3 with the stdcall convention, which ctypes has only
    on Windows (here it raised AttributeError: module 'ctypes' has no attribute
    'windll'): said as such, naming the way out."""
    with pytest.raises(OSError, match="stdcall convention.*sdk = 'dcam'"):
        PylablibCamera("andor3").open()
