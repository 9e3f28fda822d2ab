"""The operator console's parts without a server: the newest-frame slot, the image
encoder, the phase-lock trace, the calibration fit and the waveform view."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from beamline_ls.console.calibration import CalibrationPoints
from beamline_ls.console.encode import Contrast, EncoderCache, encode_image, roi_stats
from beamline_ls.console.phaselock import PhaseLockTrace, phase_at
from beamline_ls.console.slot import LatestSlot
from beamline_ls.console.waveform_view import waveform_view

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_the_slot_keeps_the_newest_frame_and_counts_the_ones_nobody_took():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.take() is None
    for i in range(5):
        slot.put(i)
    assert slot.take() == 4
    assert slot.take() == 4  # a second viewer may show the same frame
    assert (slot.received, slot.dropped) == (5, 4)
    slot.put(5)
    assert slot.fresh and slot.dropped == 4  # the taken frame 4 was not dropped
    assert slot.peek() == 5 and slot.fresh  # peeking takes nothing


def test_a_large_frame_is_binned_and_manual_contrast_maps_its_limits_to_black_and_white():
    frame = np.full((2048, 2048), 100, np.uint16)
    frame[:1024] = 1100  # top half bright
    enc = encode_image(frame, Contrast(100, 1100))
    img = decode(enc.data)
    assert img.shape == (512, 512) and enc.bin_factor == 4
    assert img.dtype == np.uint8
    # JPEG: within 2 levels, away from the edge between the halves
    assert img[:240].min() >= 253 and img[272:].max() <= 2


def test_automatic_contrast_stretches_a_dim_gradient_to_the_full_range():
    frame = np.tile(np.arange(1000, 1256, dtype=np.uint16), (64, 1))
    img = decode(encode_image(frame).data)
    assert img.shape == (64, 256)
    assert img[:, 0].max() <= 2 and img[:, -1].min() >= 253  # JPEG: within 2 levels
    flat = decode(encode_image(np.full((8, 8), 7, np.uint16)).data)  # no range: mid grey
    assert 100 < int(flat[0, 0]) < 155


@pytest.mark.parametrize("low, high", [("abc", "10"), ("10", "5"), ("nan", "")])
def test_bad_contrast_limits_are_refused_with_the_value(low, high):
    with pytest.raises(ValueError, match="contrast"):
        Contrast.parse(low, high)


def test_auto_is_the_default_contrast():
    assert Contrast.parse("", "auto") == Contrast()


def test_roi_statistics_use_full_resolution_pixels_and_clip_to_the_frame():
    frame = np.zeros((100, 200), np.uint16)
    frame[10:20, 30:40] = 50
    frame[15, 35] = 900
    s = roi_stats(frame, 30, 10, 40, 20)
    assert s["pixels"] == 100 and s["max"] == 900 and s["min"] == 50
    assert s["mean"] == pytest.approx((99 * 50 + 900) / 100)
    assert roi_stats(frame, 190, 90, 400, 400)["pixels"] == 100
    with pytest.raises(ValueError, match="outside"):
        roi_stats(frame, 300, 0, 400, 10)


def test_browsers_with_the_same_contrast_share_one_encoding_per_frame():
    cache = EncoderCache()
    frame = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    a = cache.get("camera", 1, frame, Contrast())
    b = cache.get("camera", 1, frame, Contrast())
    c = cache.get("camera", 1, frame, Contrast(0, 10))
    assert a is b and c is not a
    assert cache.encodes == 2


def test_the_phase_between_two_frames_is_interpolated_the_short_way_round():
    t = np.array([0.0, 0.01, 0.02])
    p = np.array([6.0, 6.2, 0.12])  # wraps between the 2nd and 3rd frame
    mid = phase_at(t, p, 0.015)
    assert mid == pytest.approx((6.2 + (0.12 + 2 * math.pi - 6.2) / 2) % (2 * math.pi))
    assert math.isnan(phase_at(t, p, 0.05))  # no frame after: not yet known
    assert math.isnan(phase_at(np.array([0.0, 1.0]), np.array([1.0, 2.0]), 0.5))  # gap


def test_overlapping_history_updates_merge_and_triggers_get_their_phase_at_firing():
    trace = PhaseLockTrace(window_s=20)
    t = 1000 + np.arange(200) / 80
    phase = (2 * math.pi * (t - 1000) / 0.5) % (2 * math.pi)
    flat = np.column_stack([t, phase]).ravel()
    trace.add_history(flat[: 2 * 120])
    trace.add_records([{"trigger_time": 1001.9, "fired_at": 1001.9, "status": "accepted",
                        "gating_phase": 1.0}])
    snap = trace.snapshot(since_s=100)
    assert snap["triggers"][0]["phase"] is None  # 1001.9 is after the last frame so far
    trace.add_history(flat[2 * 80:])  # overlaps the first update
    snap = trace.snapshot(since_s=100)
    assert len(snap["t"]) == 200 and snap["t"] == sorted(snap["t"])
    expected = (2 * math.pi * 1.9 / 0.5) % (2 * math.pi)
    assert snap["triggers"][0]["phase"] == pytest.approx(expected, abs=1e-3)


def test_three_calibration_points_fit_each_galvos_line():
    cal = CalibrationPoints()
    assert "at least 3" in cal.snapshot()["why"]
    for z in (10.0, 50.0, 90.0):
        cal.add(z, 0.1 + 0.03 * z, -0.2 + 0.01 * z)
    fits = cal.fits()
    assert fits["galvo1"].offset_v == pytest.approx(0.1)
    assert fits["galvo1"].slope_v_per_um == pytest.approx(0.03)
    assert fits["galvo2"].offset_v == pytest.approx(-0.2)
    assert cal.snapshot()["fit"]["galvo2"]["rms"] < 1e-9
    cal.remove(0)
    with pytest.raises(ValueError, match="at least 3"):
        cal.fits()
    with pytest.raises(IndexError):
        cal.remove(5)
    with pytest.raises(ValueError, match="positions"):
        cal.add(math.nan, 0.0, 0.0)


def test_points_at_one_depth_cannot_be_fitted():
    cal = CalibrationPoints()
    for v in (0.1, 0.2, 0.3):
        cal.add(40.0, v, v)
    with pytest.raises(ValueError, match="same piezo depth"):
        cal.fits()


SCAN = {"scan:VolumeRate": 5.0, "scan:NumPlanes": 20, "scan:ZStart": 10.0, "scan:ZStop": 80.0,
        "scan:ExposureTime": 0.004, "scan:SkipStart": 2, "scan:SkipEnd": 1,
        "scan:SampleRate": 20000.0, "scan:PiezoLag": 0.008, "scan:Galvo1Offset": 0.0,
        "scan:Galvo1Slope": 0.02, "scan:Galvo2Offset": 0.1, "scan:Galvo2Slope": 0.02}


def test_the_waveform_view_has_one_exposure_per_plane_inside_one_period():
    view = waveform_view(SCAN)
    assert len(view["exposures"]) == 20 and view["period"] == pytest.approx(0.2)
    assert all(0 <= a < b <= view["period"] for a, b in view["exposures"])
    assert len(view["t"]) == len(view["piezo"]) == len(view["galvo2"]) <= 2000
    assert view["expected_frame_rate"] == pytest.approx(100.0)
    # the piezo command spans every stored plane (10-80 um)
    z = np.array(view["piezo"])
    assert z.min() < 10.0 and z.max() > 80.0


def test_the_waveform_view_says_why_when_there_is_no_scan():
    assert "not connected" in waveform_view({})["error"]
    assert "error" in waveform_view({**SCAN, "scan:Galvo1Slope": 1.0})  # beyond 10 V
