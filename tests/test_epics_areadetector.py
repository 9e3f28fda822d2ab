"""The camera IOC driven as an areaDetector by ophyd's stock classes and pyepics: no
project class in these tests (issue 11, item 2)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import put_is_refused, wait_for
from ophyd import ADComponent as ADC
from ophyd import EpicsSignal, EpicsSignalRO, do_not_wait_for_lazy_connection
from ophyd.areadetector.cam import AreaDetectorCam
from ophyd.areadetector.detectors import DetectorBase
from ophyd.areadetector.filestore_mixins import (
    FileStoreHDF5IterativeWrite,
    FileStoreHDF5Single,
    FileStoreIterativeWrite,
)
from ophyd.areadetector.plugins import (
    HDF5Plugin,
    HDF5Plugin_V34,
    ImagePlugin,
    ImagePlugin_V34,
)
from ophyd.areadetector.trigger_mixins import SingleTrigger

N_IMAGES = 4
N_POINTS = 3


class StockHDF5(HDF5Plugin, FileStoreHDF5IterativeWrite):
    """The beamline-standard HDF5 plugin with asset documents, as in NSLS-II profiles."""


class StockHDF5Single(HDF5Plugin, FileStoreHDF5Single, FileStoreIterativeWrite):
    """One file per frame (areaDetector's Single mode), as ophyd ships it."""


def stock_detector(prefix: str, frames_dir: Path, plugin: type = StockHDF5):
    write = str(frames_dir / "ophyd" / "%Y" / "%m" / "%d") + "/"

    class StockDetector(SingleTrigger, DetectorBase):
        cam = ADC(AreaDetectorCam, "cam1:")
        image = ADC(ImagePlugin, "image1:")
        hdf1 = ADC(plugin, "HDF1:", write_path_template=write, root=str(frames_dir))

    det = StockDetector(prefix, name="det")
    det.hdf1.kind = "normal"
    det.read_attrs = ["hdf1"]
    return det



def connect_every_signal(device, timeout: float = 30.0) -> None:
    """Wait until every signal of ``device``, lazy ones included, is connected (each
    PV the stock classes name exists). By default ophyd waits for each lazy signal as
    it creates it, one connection after another (4.5 s for this detector); created
    without that wait, they connect together and are waited for as a whole."""
    with contextlib.ExitStack() as stack:
        for dev in [device] + [d for _, d in device.walk_subdevices(include_lazy=True)]:
            stack.enter_context(do_not_wait_for_lazy_connection(dev))
        device.wait_for_connection(all_signals=True, timeout=timeout)


@pytest.fixture
def det(scope, prefix, settings):
    det = stock_detector(prefix, settings.frames_dir)
    # every component, lazy ones included: each PV the stock classes define exists
    connect_every_signal(det)
    # the session's devices configure the camera for their own scans; a stock client
    # sets what it needs itself
    det.cam.trigger_mode.set("Internal").wait(10)
    det.cam.acquire_time.set(0.003).wait(10)
    det.cam.acquire_period.set(0.0).wait(10)
    det.cam.num_images.set(N_IMAGES).wait(10)
    det.hdf1.frames_per_volume = None
    EpicsSignal(prefix + "HDF1:FramesPerVolume").put(0, wait=True)
    yield det
    det.destroy()


def test_stock_ophyd_detector_counts_and_its_images_read_back_through_the_catalog(
        det, session, settings):
    from bluesky.plans import count

    result = session.RE(count([det], num=N_POINTS))
    run = session.catalog[result.run_start_uids[0]]
    assert run.metadata["stop"]["exit_status"] == "success"
    images = run["primary"]["det_image"].read()
    h, w = det.cam.array_size.array_size_y.get(), det.cam.array_size.array_size_x.get()
    assert images.shape == (N_POINTS, N_IMAGES, h, w)
    # the same frames as in the file the IOC wrote, where ophyd's template says
    path = Path(det.hdf1.full_file_name.get())
    assert path.name == f"{det.hdf1.file_name.get()}_000000.h5"
    with h5py.File(path, "r") as f:
        stored = f["/entry/data/data"][()]
        ids = f["/entry/meta/frame_id"][()]
    assert stored.shape == (N_POINTS * N_IMAGES, h, w)
    # one id per frame of the file, on from acquisition to acquisition (ArrayCounter),
    # so a repeated or missing id means a repeated or lost frame
    assert np.all(np.diff(ids) == 1), ids
    np.testing.assert_array_equal(np.asarray(images).reshape(stored.shape), stored)
    assert stored.reshape(N_POINTS * N_IMAGES, -1).mean(axis=1).min() > 0  # real exposures
    # the file was closed at unstage, and the writer says what it did
    assert det.hdf1.capture.get() == 0
    assert det.hdf1.write_status.get(as_string=True) == "Write OK"
    assert int(det.hdf1.num_captured.get()) == N_POINTS * N_IMAGES
    # flushed for SWMR readers, as ADCore counts it
    assert int(EpicsSignal(det.hdf1.prefix + "SWMRCbCounter_RBV").get()) > 0


def test_a_stock_trigger_finds_its_frames_counted_by_the_file_writer(det):
    """ophyd stages the HDF5 plugin with BlockingCallbacks on: in areaDetector the
    driver's thread then writes each frame itself, so when a trigger's Acquire put
    completes, NumCaptured_RBV already counts its frames. It lagged by one in 8 of
    30 triggers (the counters were published only by the 5 Hz status loop)."""
    det.stage_sigs[det.cam.image_mode] = "Single"
    det.stage()
    try:
        behind = []
        for i in range(1, 31):
            det.trigger().wait(20)
            captured = int(det.hdf1.num_captured.get(use_monitor=False))
            if captured != i:
                behind.append((i, captured))
    finally:
        det.unstage()
    assert behind == []  # (frames acquired, NumCaptured_RBV when the trigger ended)


def _three_frame_capture(det, settings, name: str, write_mode: str) -> None:
    """Set up a 3-frame capture into ``name`` (FileWriteMode ``write_mode``) and a
    3-image acquisition, as a stock client would; the capture itself is the caller's."""
    hdf = det.hdf1
    hdf.file_path.set(str(settings.frames_dir) + "/").wait(10)
    hdf.file_name.set(name).wait(10)
    hdf.file_template.set("%s%s_%6.6d.h5").wait(10)
    hdf.file_write_mode.set(write_mode).wait(10)
    hdf.num_capture.set(3).wait(10)
    det.cam.image_mode.set("Multiple").wait(10)
    det.cam.num_images.set(3).wait(10)


def test_write_file_after_a_capture_mode_capture_completes_with_the_file_written(
        det, settings):
    """ADCore's Capture mode: NumCapture frames, then WriteFile (AutoSave off) writes
    them; here they went to the file as they came, so WriteFile completes at once."""
    from caproto.sync.client import write

    hdf = det.hdf1
    hdf.auto_save.set("No").wait(10)
    _three_frame_capture(det, settings, "capture_mode", "Capture")
    try:
        hdf.capture.set(1).wait(10)  # completes once the file is open
        EpicsSignal(det.cam.acquire.setpoint_pvname, put_complete=True).set(1).wait(30)
        wait_for(lambda: int(hdf.capture.get(use_monitor=False)) == 0, 30,
                 what="the capture to end")
        write(hdf.write_file.setpoint_pvname, [1], notify=True, timeout=10, repeater=False)
        path = Path(hdf.full_file_name.get(use_monitor=False))
        with h5py.File(path, "r") as f:
            assert f["/entry/data/data"].shape[0] == 3
    finally:
        hdf.file_write_mode.set("Stream").wait(10)
        hdf.auto_save.set("Yes").wait(10)
        det.cam.num_images.set(N_IMAGES).wait(10)


def test_a_capture_put_with_completion_returns_when_the_file_is_whole(det, settings):
    """Capture is a busy record in ADCore: ``caput -c HDF1:Capture 1`` returns when the
    capture has ended, so a script can read the file next. It returned as soon as the
    file opened (33 ms, nothing captured yet)."""
    import threading

    import epics  # pyepics, as such a script

    hdf = det.hdf1
    _three_frame_capture(det, settings, "busy_capture", "Stream")
    returned: list[float] = []
    put = threading.Thread(target=lambda: returned.append(
        epics.caput(hdf.capture.setpoint_pvname, 1, wait=True, timeout=60) and time.monotonic()))
    try:
        put.start()
        wait_for(lambda: int(hdf.capture.get(use_monitor=False)) == 1, 30, "the file open")
        time.sleep(0.5)
        assert not returned  # open, nothing captured: the put is still pending
        acquired_at = time.monotonic()
        EpicsSignal(det.cam.acquire.setpoint_pvname, put_complete=True).set(1).wait(30)
        put.join(60)
        assert returned and returned[0] > acquired_at
        # when it returns the file is whole and closed
        assert int(hdf.capture.get(use_monitor=False)) == 0
        with h5py.File(hdf.full_file_name.get(use_monitor=False), "r") as f:
            assert f["/entry/data/data"].shape[0] == 3
    finally:
        if put.is_alive():
            hdf.capture.set(0).wait(10)
            put.join(30)
        det.cam.num_images.set(N_IMAGES).wait(10)


def test_a_second_acquire_put_completes_when_the_acquisition_ends(det):
    """Acquire is a busy record: a put of 1 with completion while the camera acquires
    completes when that acquisition ends, as the first one does. It completed at once
    (2 ms into a 1.3 s acquisition)."""
    import threading

    import epics  # pyepics, as a second client's script

    n = 200
    det.cam.image_mode.set("Multiple").wait(10)
    det.cam.num_images.set(n).wait(10)
    pv = det.cam.acquire.setpoint_pvname
    first = threading.Thread(target=lambda: epics.caput(pv, 1, wait=True, timeout=60))
    try:
        first.start()
        wait_for(lambda: det.cam.detector_state.get(use_monitor=False) == 1, 30, "acquiring")
        assert epics.caput(pv, 1, wait=True, timeout=60)
        assert det.cam.detector_state.get(use_monitor=False) == 0  # Idle: it had ended
        assert int(det.cam.num_images_counter.get(use_monitor=False)) == n
    finally:
        first.join(60)
        det.cam.num_images.set(N_IMAGES).wait(10)


def test_single_mode_writes_a_file_per_frame(scope, prefix, settings):
    """ophyd's FileStoreHDF5Single: FileWriteMode Single, AutoSave, a file per frame
    named by the template and FileNumber (a plain RunEngine: the catalog does not read
    per-frame files)."""
    from bluesky import RunEngine
    from bluesky.plans import count

    det = stock_detector(prefix, settings.frames_dir, StockHDF5Single)
    det.wait_for_connection(timeout=30)
    det.cam.trigger_mode.set("Internal").wait(10)
    det.cam.num_images.set(2).wait(10)
    try:
        RE = RunEngine({})
        docs = []
        RE(count([det], num=3), lambda name, doc: docs.append((name, doc)))
        directory = Path(det.hdf1.file_path.get())
        name = det.hdf1.file_name.get()
        wait_for(lambda: len(list(directory.glob(f"{name}_*.h5"))) == 6,
                 what="six single-frame files")
        files = sorted(directory.glob(f"{name}_*.h5"))
        assert [f.name for f in files] == [f"{name}_{i:06d}.h5" for i in range(6)]
        for f in files:
            with h5py.File(f, "r") as h5:
                data = h5["/entry/data/data"]
                assert data.shape[0] == 1 and data[0].mean() > 0
        assert int(det.hdf1.file_number.get(use_monitor=False)) == 6
        assert [d["spec"] for n, d in docs if n == "resource"] == ["AD_HDF5_SINGLE"]
        assert det.hdf1.write_status.get(as_string=True, use_monitor=False) == "Write OK"
        # Capture has no meaning in Single mode: refused, and WriteMessage says why (as
        # ADCore's "capture not supported in Single mode"), not the last file's news
        det.hdf1.file_write_mode.set("Single").wait(10)  # unstaged: back to Stream
        assert put_is_refused(prefix + "HDF1:Capture", 1)
        assert "in Single mode" in det.hdf1.write_message.get(use_monitor=False)
        assert det.hdf1.write_status.get(as_string=True, use_monitor=False) == "Write error"
    finally:
        EpicsSignal(prefix + "HDF1:FileWriteMode").put("Stream", wait=True)
        det.destroy()


def test_acquire_put_completes_when_the_acquisition_ends(det):
    """areaDetector's Acquire is a busy record: put-with-completion returns when the
    frames are taken, as caput -c and pyepics wait=True expect."""
    det.cam.image_mode.set("Multiple").wait(10)
    det.cam.num_images.set(30).wait(10)
    hdf_counter = EpicsSignal(det.hdf1.prefix + "ArrayCounter")
    hdf_counter.put(0, wait=True)
    EpicsSignal(det.hdf1.prefix + "EnableCallbacks").put(1, wait=True)
    acquire = EpicsSignal(det.cam.acquire.setpoint_pvname, put_complete=True)
    t0 = time.monotonic()
    acquire.set(1).wait(60)
    took = time.monotonic() - t0
    assert int(det.cam.num_images_counter.get(use_monitor=False)) == 30
    # the plugins' counts are current when the put completes (blocking callbacks)
    assert int(EpicsSignal(hdf_counter.pvname + "_RBV").get(use_monitor=False)) == 30
    assert int(det.cam.acquire.get(use_monitor=False)) == 0  # Acquire_RBV
    assert det.cam.detector_state.get(as_string=True, use_monitor=False) == "Idle"
    period = det.cam.acquire_time.get() + float(EpicsSignal(
        det.cam.prefix + "ReadoutTime_RBV").get())
    assert took >= 29 * period  # it waited for the frames, not just the start


def test_stop_ends_a_continuous_acquisition_and_its_pending_put(det):
    det.cam.image_mode.set("Continuous").wait(10)
    acquire = EpicsSignal(det.cam.acquire.setpoint_pvname, put_complete=True)
    status = acquire.set(1)
    wait_for(lambda: int(det.cam.num_images_counter.get(use_monitor=False)) > 5,
             what="frames of the continuous acquisition")
    assert not status.done
    det.cam.acquire.set(0).wait(10)
    status.wait(10)
    assert det.cam.detector_state.get(as_string=True, use_monitor=False) == "Idle"
    det.cam.image_mode.set("Multiple").wait(10)


def test_a_preview_taking_over_an_acquisition_completes_its_pending_put(det):
    """CameraMode Preview (the operator's live view) while an Acquire put with
    completion waits: that acquisition is over, and so is its put; it waited forever
    on an acquisition that was gone."""
    import epics  # pyepics, as the console's or a second client's script

    mode = f"{det.cam.prefix}CameraMode"
    det.cam.image_mode.set("Continuous").wait(10)
    acquire = EpicsSignal(det.cam.acquire.setpoint_pvname, put_complete=True)
    status = acquire.set(1)
    try:
        wait_for(lambda: int(det.cam.num_images_counter.get(use_monitor=False)) > 5,
                 what="frames of the acquisition")
        assert not status.done
        assert epics.caput(mode, "Preview", wait=True, timeout=30)
        status.wait(30)
        assert det.cam.detector_state.get(as_string=True, use_monitor=False) == "Acquire"
    finally:
        epics.caput(mode, "Paused", wait=True, timeout=30)
        wait_for(lambda: det.cam.detector_state.get(as_string=True, use_monitor=False)
                 == "Idle", 30, "the preview stopped")
        det.cam.image_mode.set("Multiple").wait(10)


def test_image_plugin_shows_the_newest_frame_it_took(det):
    det.image.enable.set(1).wait(10)
    det.cam.array_callbacks.set(1).wait(10)
    det.cam.image_mode.set("Single").wait(10)
    counted = int(det.cam.array_counter.get(use_monitor=False))
    EpicsSignal(det.cam.acquire.setpoint_pvname, put_complete=True).set(1).wait(30)
    # UniqueId follows ArrayCounter across acquisitions (0-based: the frame's index)
    wait_for(lambda: int(det.image.unique_id.get(use_monitor=False)) == counted
             and det.image.array_size.get() != (0, 0, 0), what="image1 to take the frame")
    assert int(det.cam.array_counter.get(use_monitor=False)) == counted + 1
    time.sleep(0.2)  # the loop sends ArrayData within one 20 ms pass
    h, w = det.cam.array_size.array_size_y.get(), det.cam.array_size.array_size_x.get()
    # as areaDetector reports a mono frame: ArraySize0 = x, ArraySize1 = y, 2 dims
    assert (det.image.array_size.width.get(), det.image.array_size.height.get()) == (w, h)
    assert det.image.ndimensions.get() == 2
    # (ophyd's ImagePlugin.image asks for depth x height elements, 0 for a mono
    # frame; pyepics returns no elements for a count of 0 from caproto servers)
    image = np.asarray(det.image.array_data.get()).reshape(h, w)
    assert image.mean() > 0
    assert det.image.plugin_type.get().startswith("NDPluginStdArrays")


@pytest.fixture(scope="module")
def v34_plugins(scope, prefix):
    """ophyd's ADCore 3.4 plugin classes on the camera's image1: and HDF1:."""
    image, hdf = ImagePlugin_V34(prefix + "image1:", name="image"), \
        HDF5Plugin_V34(prefix + "HDF1:", name="hdf")
    yield image, hdf
    image.destroy()
    hdf.destroy()


def test_ophyds_adcore_3_4_plugin_classes_find_every_pv_they_name(v34_plugins):
    """ophyd's ImagePlugin_V34 and HDF5Plugin_V34 (what NSLS-II profiles use) connect
    every signal, lazy ones and per-dimension groups included."""
    image, hdf = v34_plugins
    for plugin in (image, hdf):
        connect_every_signal(plugin)
    assert image.queue_size.get() >= 1
    # the per-dimension PVs describe the frames as Dimensions does (x first)
    dims = list(image.dimensions.get(use_monitor=False))
    wait_for(lambda: image.array_size_all.array_size0.get(use_monitor=False) == dims[0] > 0,
             10, "ArraySize0 = Dimensions[0]")
    assert image.array_size_xyz.array_size_x.get(use_monitor=False) == dims[0]
    assert np.atleast_1d(image.dim_sa.dim1_sa.get(use_monitor=False)).tolist() == [dims[1]]
    assert image.sort_mode.get(as_string=True) == "Unsorted"
    assert put_is_refused(hdf.prefix + "NumThreads", 4)  # refused with the reason


def test_a_plugins_max_array_rate_and_min_callback_time_are_one_limit(v34_plugins):
    """ADCore 3.4: MaxArrayRate sets MinCallbackTime (and back), so clients of
    either see the same limit."""
    image = v34_plugins[0]
    before = image.min_callback_time.get(use_monitor=False)
    try:
        image.max_array_rate.set(4.0).wait(10)
        wait_for(lambda: image.min_callback_time.get(use_monitor=False) == 0.25, 10,
                 "MinCallbackTime following MaxArrayRate")
        image.min_callback_time.set(0.5).wait(10)
        wait_for(lambda: image.max_array_rate.get(use_monitor=False) == 2.0, 10,
                 "MaxArrayRate following MinCallbackTime")
    finally:
        image.min_callback_time.set(before).wait(10)


def test_refused_settings_say_why(det):
    """A feature this camera lacks is refused at once with the reason, not ignored."""
    assert put_is_refused(det.hdf1.prefix + "Compression", 3)  # zlib
    assert det.hdf1.compression.get(as_string=True, use_monitor=False) == "None"


def test_a_region_the_sensor_cannot_read_is_held_to_it_when_put_so_a_stock_count_runs(
        det, scope):
    """As areaDetector drivers do: a region or binning the sensor cannot take is
    clamped when it is put (the readback says what the camera will use), not refused
    later at Capture, where ophyd's HDF5 staging would wait for ever; a binning the
    camera lacks is refused at once. Changes made while acquiring apply from the next
    acquisition, and the array size keeps describing the frames being delivered."""
    from bluesky import RunEngine
    from bluesky.plans import count

    cam = det.cam
    width = int(cam.max_size.max_size_x.get())
    try:
        cam.min_x.put(0, wait=True)
        cam.size.size_x.put(width + 3000, wait=True)  # wider than the sensor
        wait_for(lambda: cam.size.size_x.get(use_monitor=False) == width, 10, "SizeX held")
        cam.min_x.put(width - 100, wait=True)  # the region moves right: it shrinks to fit
        wait_for(lambda: cam.size.size_x.get(use_monitor=False) == 100, 10, "SizeX shrunk")
        assert cam.min_x.get(use_monitor=False) == width - 100
        assert put_is_refused(cam.prefix + "BinX", 3)  # this camera bins 1, 2 or 4
        cam.bin_x.put(2, wait=True)  # BinY follows; the region is whole bins
        wait_for(lambda: cam.bin_y.get(use_monitor=False) == 2, 10, "BinY following BinX")
        assert cam.size.size_x.get(use_monitor=False) % 2 == 0
        cam.size.size_y.put(64, wait=True)
        cam.min_y.put(0, wait=True)
        RunEngine({})(count([det], num=1))  # staged, captured, closed: nothing refused
        assert (cam.array_size.array_size_x.get(use_monitor=False),
                cam.array_size.array_size_y.get(use_monitor=False)) == (50, 32)
        # a change while acquiring is for the next acquisition
        cam.image_mode.put("Continuous", wait=True)
        cam.acquire.put(1)
        wait_for(lambda: cam.detector_state.get(as_string=True) == "Acquire", 10, "acquiring")
        cam.size.size_y.put(32, wait=True)
        time.sleep(0.5)  # several refreshes of the IOC's status
        assert cam.size.size_y.get(use_monitor=False) == 32
        assert cam.array_size.array_size_y.get(use_monitor=False) == 32  # 64 / bin 2
        cam.acquire.put(0, wait=True)
        cam.image_mode.put("Multiple", wait=True)
    finally:
        cam.bin_x.put(1, wait=True)
        scope.camera.set_centered_roi(256)


def test_a_new_file_path_is_created_at_the_put_as_create_directory_allows(det, settings):
    """As areaDetector does: FilePathExists_RBV = 1 means the directory exists, made at
    the FilePath put within CreateDirectory's depth; beyond it, 0 and the reason."""
    from ophyd import EpicsSignalWithRBV

    hdf = det.hdf1
    create = EpicsSignalWithRBV(hdf.prefix + "CreateDirectory", name="create")
    create.wait_for_connection(10)
    made = settings.frames_dir / "probe-new" / "day1"
    refused = settings.frames_dir / "probe-deep" / "day1"
    try:
        hdf.file_path.put(f"{made}", wait=True)  # default -20: the last 20 levels
        wait_for(lambda: hdf.file_path_exists.get(use_monitor=False) == 1, 10, "created")
        assert made.is_dir()
        # the path held ends with the separator, as areaDetector's (checkPath):
        # scripts name files FilePath_RBV + FileName
        rbv = EpicsSignalRO(hdf.prefix + "FilePath_RBV", name="rbv", string=True)
        assert rbv.get(use_monitor=False) == f"{made}/"
        create.put(-1, wait=True)  # the last level only: two are missing
        hdf.file_path.put(f"{refused}/", wait=True)
        wait_for(lambda: hdf.file_path_exists.get(use_monitor=False) == 0, 10, "refused")
        assert "CreateDirectory -1" in hdf.write_message.get(use_monitor=False)
        assert not refused.parent.exists()
    finally:
        create.put(-20, wait=True)
        hdf.file_path.put(str(settings.frames_dir) + "/", wait=True)
        for d in (made, made.parent):
            if d.is_dir():
                d.rmdir()


def test_a_file_path_problem_is_said_and_cleared_with_the_path(det, settings, tmp_path):
    """FilePathExists_RBV = 0 and WriteMessage give the reason for a path the IOC may
    not write; the next, good path clears both (a stale message would blame it)."""
    hdf = det.hdf1
    hdf.file_path.put(str(tmp_path) + "/", wait=True)  # outside the IOC's data root
    wait_for(lambda: hdf.file_path_exists.get(use_monitor=False) == 0, 10, "path refused")
    assert "outside the IOC's data root" in hdf.write_message.get(use_monitor=False)
    assert hdf.write_status.get(as_string=True, use_monitor=False) == "Write error"
    hdf.file_path.put(str(settings.frames_dir) + "/", wait=True)
    wait_for(lambda: hdf.file_path_exists.get(use_monitor=False) == 1, 10, "path accepted")
    assert hdf.write_message.get(use_monitor=False) == ""
    assert hdf.write_status.get(as_string=True, use_monitor=False) == "Write OK"
