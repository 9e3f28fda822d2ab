"""`beamline-ls bench writer`: JSON contract, frame accounting, argument errors."""

import json
import os

import pytest

from beamline_ls.pipeline import bench

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

KEYS = {"mb_per_s", "raw_mb_per_s", "frames_expected", "frames_written", "frames_dropped",
        "cpu_s", "raw_cpu_s", "demand_mb_per_s", "keeps_up", "ratio_to_raw", "producer_fps",
        "ratio_to_achievable", "buffer_warm", "buffer_prepare_s", "settle_s"}


def test_json_contract_with_a_small_shape(tmp_path, capsys):
    rc = bench.main(["writer", "--shape", "64x48", "--rate", "50", "--seconds", "1",
                     "--dir", str(tmp_path), "--json", "--settle", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)  # exactly one JSON object on stdout
    assert KEYS <= result.keys()
    assert result["shape"] == [64, 48]
    assert result["frames_expected"] == 50
    assert result["frames_written"] + result["frames_dropped"] == result["frames_expected"]
    assert result["mb_per_s"] > 0 and result["raw_mb_per_s"] > 0 and result["cpu_s"] >= 0
    assert result["demand_mb_per_s"] == pytest.approx(50 * 64 * 48 * 2 / 1e6)
    # the buffer was prepared before the clock; the paced pipeline is compared with
    # what it could reach at most, min(raw, demand)
    assert result["buffer_warm"] is True and result["settle_s"] == 0
    assert result["ratio_to_achievable"] == pytest.approx(
        result["mb_per_s"] / min(result["raw_mb_per_s"], result["demand_mb_per_s"]))
    # per-frame dispatch latency (from the concurrence log) and memory held
    lat = result["latency_ms"]
    assert 0 <= lat["queue_p50"] <= lat["queue_p99"] and 0 < lat["write_p50"] <= lat["write_max"]
    assert result["max_rss_mb"] > 0
    assert os.listdir(tmp_path) == []  # temporary files cleaned up


def test_cold_buffer_and_settle_are_reported(tmp_path, capsys):
    rc = bench.main(["writer", "--shape", "16x16", "--rate", "40", "--seconds", "0.25",
                     "--dir", str(tmp_path), "--json", "--cold-buffer", "--settle", "0.1"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert result["buffer_warm"] is False and result["settle_s"] == 0.1
    assert result["frames_written"] + result["frames_dropped"] == 10


def test_human_summary_and_keep(tmp_path, capsys):
    rc = bench.main(["writer", "--shape", "32x32", "--rate", "40", "--seconds", "0.5",
                     "--dir", str(tmp_path), "--keep", "--buffer-frames", "8",
                     "--settle", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "verdict:" in out and "raw h5py" in out and "MB/s" in out
    (kept,) = tmp_path.iterdir()
    assert sorted(p.name for p in kept.iterdir()) == ["pipeline.h5", "raw.h5", "raw_plain.h5"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shape", "2048"], "bad shape"),
        (["--shape", "0x10"], "bad shape"),
        (["--shape", "axb"], "bad shape"),
        (["--rate", "0"], "must be > 0"),
        (["--rate", "-5"], "must be > 0"),
        (["--seconds", "0"], "must be > 0"),
        (["--seconds", "soon"], "not a number"),
        (["--buffer-frames", "1"], ">= 2"),
        (["--settle", "-1"], "--settle must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, args, message):
    assert bench.main(["writer", "--dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_or_unwritable_directory_exits_2(tmp_path, capsys, monkeypatch):
    assert bench.main(["writer", "--dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    afile = tmp_path / "file"
    afile.write_text("x")
    assert bench.main(["writer", "--dir", str(afile)]) == 2
    assert "not a directory" in capsys.readouterr().err
    # the permission check itself (root may write anywhere, so simulate a read-only dir)
    monkeypatch.setattr(bench.os, "access", lambda path, mode: False)
    assert bench.main(["writer", "--dir", str(tmp_path)]) == 2
    assert "not writable" in capsys.readouterr().err


def test_missing_subcommand_exits_2(capsys):
    assert bench.main([]) == 2
    assert bench.main(["disk"]) == 2
    capsys.readouterr()
