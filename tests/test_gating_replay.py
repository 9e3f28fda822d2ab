"""The replay CLI contract, end to end through TIFF files in tmp_path."""

import csv
import math

import numpy as np
import pytest
import tifffile

from beamline_ls.gating import replay
from beamline_ls.gating.video_file import VideoError, load_video
from beamline_ls.sim.heart import SimHeart

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

FPS = 40.0


@pytest.fixture(scope="module")
def video():
    heart = SimHeart(seed=41, duration_s=10)
    times = np.arange(int(8 * FPS)) / FPS
    return heart, times, heart.render_video(times, (48, 56), 0.0)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_replay_csv_contract(tmp_path, video, capsys, dtype):
    heart, times, v = video
    data = v if dtype == "uint8" else v.astype(np.uint16) * 16
    tif = tmp_path / f"v_{dtype}.tif"
    tifffile.imwrite(tif, data)
    out = tmp_path / "out.csv"
    assert replay.main([str(tif), "--fps", str(FPS), "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == len(times)
    for c in ("frame", "timestamp_s", "phase_rad", "state", "trigger_time_s"):
        assert c in rows[0]
    fires = []
    for i, r in enumerate(rows):
        assert int(r["frame"]) == i
        assert float(r["timestamp_s"]) == pytest.approx(times[i], abs=1e-6)
        assert r["state"] in ("searching", "locked", "lost")
        if r["trigger_time_s"]:
            t = float(r["trigger_time_s"])
            assert t >= float(r["timestamp_s"]) + 0.015 - 1e-6
            fires.append(t)
    assert len(fires) >= 10
    # the triggers are on the heart: small spread of the TRUE phase
    tp = heart.true_phase_wrapped(np.array(fires))
    assert math.hypot(np.cos(tp).mean(), np.sin(tp).mean()) > 0.97
    printed = capsys.readouterr().out
    assert "period:" in printed and f"triggers: {len(fires)}" in printed and "p99" in printed


def test_replay_timestamps_file_and_latency(tmp_path, video):
    _, times, v = video
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, v)
    ts = 1000.0 + times
    tsf = tmp_path / "ts.txt"
    np.savetxt(tsf, ts, fmt="%.6f")
    out = tmp_path / "out.csv"
    assert replay.main([str(tif), "--fps", str(FPS), "--timestamps", str(tsf),
                        "--latency", "0.04", "--target-phase", "1.0", "--out", str(out)]) == 0
    rows = _rows(out)
    assert float(rows[3]["timestamp_s"]) == pytest.approx(ts[3], abs=1e-6)
    trig = [r for r in rows if r["trigger_time_s"]]
    assert trig
    assert all(float(r["trigger_time_s"]) >= float(r["timestamp_s"]) + 0.04 - 1e-6
               for r in trig)


def test_replay_static_video_no_triggers(tmp_path, capsys):
    rng = np.random.default_rng(0)
    v = np.clip(120 + rng.normal(0, 2, (200, 32, 32)), 0, 255).astype(np.uint8)
    tif = tmp_path / "static.tif"
    tifffile.imwrite(tif, v)
    out = tmp_path / "o.csv"
    assert replay.main([str(tif), "--fps", "40", "--out", str(out)]) == 0
    assert all(r["trigger_time_s"] == "" for r in _rows(out))
    assert "triggers: 0" in capsys.readouterr().out


@pytest.mark.parametrize(("fps", "said"), [
    (FPS * 8, "repeat too fast for a heart"),  # the heart would beat ~16 times a second
    (FPS / 10, "looked for a repeat within 1.5 s at 4 frames/s")])
def test_a_wrong_frame_rate_is_named_not_taken_for_a_heartbeat(tmp_path, video, capsys,
                                                                 fps, said):
    """The same heart replayed with the wrong --fps: no lock, no trigger, and the one
    line points at the frame rate instead of blaming the scene."""
    _, _, v = video
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, v)
    out = tmp_path / "o.csv"
    assert replay.main([str(tif), "--fps", str(fps), "--out", str(out)]) == 0
    assert all(r["trigger_time_s"] == "" for r in _rows(out))
    printed = capsys.readouterr().out
    assert "triggers: 0" in printed
    assert said in printed


def test_replay_errors(tmp_path, capsys):
    out = str(tmp_path / "o.csv")
    assert replay.main([str(tmp_path / "missing.tif"), "--fps", "40", "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, np.zeros((10, 16, 16), np.uint8))
    for bad in ("0", "-5", "nan"):
        assert replay.main([str(tif), "--fps", bad, "--out", out]) == 2
        assert "--fps" in capsys.readouterr().err
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((16, 16), np.uint8))
    assert replay.main([str(flat), "--fps", "40", "--out", out]) == 2
    assert "expected one stack of 2-D frames" in capsys.readouterr().err
    fl = tmp_path / "float.tif"
    tifffile.imwrite(fl, np.full((10, 16, 16), np.nan, np.float32))
    assert replay.main([str(fl), "--fps", "40", "--out", out]) == 2
    assert "NaN" in capsys.readouterr().err
    channels = tmp_path / "channels.tif"
    tifffile.imwrite(channels, np.zeros((10, 2, 16, 16), np.uint16), imagej=True,
                     metadata={"axes": "TCYX"})
    assert replay.main([str(channels), "--fps", "40", "--out", out]) == 2
    assert "2 channels" in capsys.readouterr().err
    tsf = tmp_path / "ts.txt"
    np.savetxt(tsf, np.arange(5.0))
    assert replay.main([str(tif), "--fps", "40", "--timestamps", str(tsf), "--out", out]) == 2
    assert "timestamps" in capsys.readouterr().err
    assert replay.main([str(tmp_path), "--fps", "40", "--out", out]) == 2
    assert "is a directory" in capsys.readouterr().err
    # a plot that could not be written is found out before the replay, not after it
    plot = tmp_path / "no-such-dir" / "lock.png"
    assert replay.main([str(tif), "--fps", "40", "--out", out, "--plot", str(plot)]) == 2
    assert "no directory" in capsys.readouterr().err


def test_a_latency_longer_than_half_a_beat_is_warned_about(tmp_path, video, capsys):
    _, _, frames = video
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, frames.astype(np.uint16))
    out = str(tmp_path / "o.csv")
    assert replay.main([str(tif), "--fps", str(FPS), "--out", out]) == 0
    assert "warning" not in capsys.readouterr().out
    assert replay.main([str(tif), "--fps", str(FPS), "--out", out, "--latency", "0.6"]) == 0
    assert "beats ahead" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["rgb", "float 0..1", "int16 background-subtracted",
                                  "imagej stack without axes"])
def test_replay_gates_videos_as_other_tools_save_them_and_says_what_it_converted(
        tmp_path, video, capsys, form):
    """Fiji and camera programs save brightfield as RGB, or after processing as float
    or signed integers, and a stack saved for ImageJ without naming its axis reads
    as channels; each is gated like the grey stack it holds, and what was done to it
    is printed."""
    heart, times, v = video
    tif = tmp_path / "v.tif"
    if form == "rgb":  # a warm-tinted colour camera
        rgb = np.stack([v, (v * 0.85).astype(np.uint8), (v * 0.6).astype(np.uint8)], -1)
        tifffile.imwrite(tif, rgb, photometric="rgb")
        said = "converted RGB to grey"
    elif form == "float 0..1":
        tifffile.imwrite(tif, v.astype(np.float32) / 255.0)
        said = "mapped float32 pixels"
    elif form == "int16 background-subtracted":
        tifffile.imwrite(tif, v.astype(np.int16) - int(v.mean()))
        said = "mapped int16 pixels"
    else:  # tifffile's imagej=True calls the one axis of a 3-D stack channels
        tifffile.imwrite(tif, v, imagej=True)
        said = "'channels') as time"
    out = tmp_path / "out.csv"
    assert replay.main([str(tif), "--fps", str(FPS), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert said in printed, printed
    rows = _rows(out)
    assert len(rows) == len(times)
    fires = np.array([float(r["trigger_time_s"]) for r in rows if r["trigger_time_s"]])
    assert fires.size >= 10
    tp = heart.true_phase_wrapped(fires)
    assert math.hypot(np.cos(tp).mean(), np.sin(tp).mean()) > 0.97


def test_an_uncompressed_recording_is_read_as_replay_goes_not_loaded_first(tmp_path):
    """A recording of many gigabytes replays without first needing that much memory:
    uncompressed stacks are memory-mapped read-only; compressed ones are read whole,
    with the same frames."""
    rng = np.random.default_rng(0)
    v = rng.integers(0, 4000, (20, 24, 32), dtype=np.uint16)
    plain, packed = tmp_path / "plain.tif", tmp_path / "packed.tif"
    tifffile.imwrite(plain, v)
    tifffile.imwrite(packed, v, compression="zlib")
    frames, _ = load_video(plain)
    assert isinstance(frames, np.memmap) and frames.shape == v.shape
    assert not frames.flags.writeable
    assert np.array_equal(frames, v)
    whole, _ = load_video(packed)
    assert np.array_equal(whole, v)
    big_endian = tmp_path / "fiji.tif"  # ImageJ's default byte order
    tifffile.imwrite(big_endian, v + 700, byteorder=">", imagej=True)
    frames, notes = load_video(big_endian)
    assert frames.dtype == np.uint16 and np.array_equal(frames, v + 700)
    assert not any("mapped" in n for n in notes)  # grey levels as recorded


def test_a_video_written_frame_by_frame_is_read_as_one_stack(tmp_path):
    """tifffile's ``append=True`` (the usual way to stream frames to disk) stores each
    frame as a series of its own; its pages are the video, uncompressed ones
    memory-mapped, compressed ones read whole; RGB frames the same way."""
    rng = np.random.default_rng(1)
    v = rng.integers(0, 4000, (12, 24, 32), dtype=np.uint16)
    plain, packed, colour = (tmp_path / f"{n}.tif" for n in ("plain", "packed", "colour"))
    for frame in v:
        tifffile.imwrite(plain, frame, append=True)
        tifffile.imwrite(packed, frame, append=True, compression="zlib")
    with tifffile.TiffWriter(colour) as writer:
        for frame in v:
            writer.write(np.repeat((frame // 16).astype(np.uint8)[..., None], 3, axis=2),
                         photometric="rgb")
    frames, notes = load_video(plain)
    assert any("12 single-page series" in n for n in notes)
    assert frames.shape == v.shape and np.array_equal(frames, v)
    assert not frames.flags.writeable  # a read-only map of the file, not a copy
    assert np.array_equal(load_video(packed)[0], v)
    grey, notes = load_video(colour)
    assert grey.shape == v.shape and grey.dtype == np.uint8
    assert np.array_equal(np.asarray(grey), (v // 16).astype(np.uint8))


def test_conversions_are_made_frame_by_frame_from_the_memory_map(tmp_path):
    """Float, big-endian and RGB recordings are memory-mapped too and converted one
    frame at a time as they are read (a recording larger than memory replays)."""
    rng = np.random.default_rng(2)
    v = rng.normal(0.0, 1.0, (10, 16, 24)).astype(np.float32)
    tif = tmp_path / "float.tif"
    tifffile.imwrite(tif, v)
    frames, notes = load_video(tif)
    assert not isinstance(frames, np.ndarray)  # nothing converted yet
    lo, hi = float(v.min()), float(v.max())
    expect = np.rint((v[3].astype(np.float64) - lo) * 65535.0 / (hi - lo))
    assert frames.dtype == np.uint16 and np.array_equal(frames[3], expect)
    assert any("mapped float32" in n for n in notes)


def test_a_few_channels_are_not_taken_for_a_video(tmp_path):
    """Three colour channels of one image say channels, not time: refused, saying so."""
    tif = tmp_path / "rgb_channels.tif"
    tifffile.imwrite(tif, np.zeros((3, 32, 32), np.uint16), imagej=True)
    with pytest.raises(VideoError, match="3 channels"):
        load_video(tif)


@pytest.mark.parametrize("odd", [np.zeros((16, 40), np.uint8), np.zeros((32, 40), np.uint16)],
                         ids=["smaller", "uint16"])
def test_a_stack_with_one_odd_page_names_that_page(tmp_path, odd):
    """A page of another size or type saved into the stack (a thumbnail, a mask, a
    frame of another camera setting): the message names it, not the axes it split
    the file into."""
    tif = tmp_path / "odd.tif"
    with tifffile.TiffWriter(tif) as w:
        for k in range(10):
            w.write(np.full((32, 40), k, np.uint8))
        w.write(odd)
    shape = "x".join(map(str, odd.shape))
    with pytest.raises(VideoError, match=f"odd.tif: page 10 is {shape} {odd.dtype}, the "
                                         "pages before it 32x40 uint8"):
        load_video(tif)


def _locked_run(n: int, fps: float, fire_every: int, reason: str) -> list:
    """Decisions of a video locked from its first frame: a trigger every
    ``fire_every`` frames (0: none), every other frame refused for ``reason``."""
    from beamline_ls.gating.analyzer import Decision

    out = []
    for i in range(n):
        t = i / fps
        fires = fire_every and i % fire_every == 0
        out.append(Decision(i, t, "locked", fire_time=t + 0.02 if fires else None,
                            reason="" if fires else reason))
    return out


def test_a_lock_that_gives_few_triggers_says_why():
    # 10 s locked at 40 fps on a 0.5 s beat: ~20 beats, no trigger, every frame refused
    # because the phase read did not advance like a heart
    line = replay.why_few_triggers(_locked_run(400, 40.0, 0, "implausible rate"), 0.5)
    assert line is not None
    assert "0 in 10.0 s of lock (~20 beats)" in line
    assert "'implausible rate'" in line and "did not advance at the heart's rate" in line


def test_a_lock_that_triggers_each_beat_needs_no_explanation():
    # a trigger every 20 frames = every beat; the frames between wait for their phase
    assert replay.why_few_triggers(_locked_run(400, 40.0, 20, "waiting"), 0.5) is None


def test_every_refusal_of_the_line_fit_has_words_in_the_summary():
    # the compiled line fit names its refusals by code; a reason added or renamed there
    # without words here would drop out of replay's "few triggers" line silently
    from beamline_ls.gating.linefit import REJECT_REASONS
    from beamline_ls.gating.predict import REFUSALS

    assert set(REJECT_REASONS[1:]) <= set(REFUSALS)
    line = replay.why_few_triggers(_locked_run(400, 40.0, 0, "timestamp gap"), 0.5)
    assert line is not None and "frames were missing for more than half a beat" in line
