"""Hardware -> IOC -> HDF5 -> ophyd -> RunEngine -> catalog -> a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from bluesky_tiled_plugins.queries import TimeRange
    from tiled.queries import Key
    from beamline_ls import open_catalog
    cat = open_catalog(sys.argv[1])
    uid = sys.argv[2]
    run = cat[uid]
    prim = run["primary"]
    img = prim["camera_image"]
    out = {
        "shape": list(img.shape),
        "z": prim["camera_z"].read().tolist(),
        "plane": prim["camera_plane"].read().tolist(),
        "volume": prim["camera_volume"].read().tolist(),
        "frame_id": prim["camera_frame_id"].read().tolist(),
        "t": prim["camera_timestamp"].read().tolist(),
        "plane_z": run.metadata["start"]["plane_z_um"],
        "exit": run.metadata["stop"]["exit_status"],
        "by_sample": list(cat.search(Key("sample_name") == "e2e beads")),
        "by_plan": len(cat.search(Key("plan_name") == "volumetric_scan")),
        "by_time": len(cat.search(TimeRange(since=float(sys.argv[3])))),
        "one_volume_mean": float(img[1].mean()),
        "settings": sorted(run.metadata["start"]["settings"]),
    }
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def volumetric_run(scope, session):
    from plans import volumetric_scan

    t0 = time.time()
    result = session.RE(volumetric_scan(scope.camera, scope.scanboard, 4, 12, 15.0, 70.0,
                                        4.0, md={"sample_name": "e2e beads"}))
    session.flush()
    return result, t0


def test_a_volumetric_run_reads_back_from_a_fresh_process(volumetric_run, settings):
    result, t0 = volumetric_run
    assert result.exit_status == "success"
    uid = result.run_start_uids[0]
    out = subprocess.run([sys.executable, "-c", READER, str(settings.data_dir), uid, str(t0)],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["exit"] == "success"
    assert data["shape"] == [4, 12, 256, 256]  # volumes x planes frames
    z, plane_z = np.array(data["z"]), np.array(data["plane_z"])
    assert z.shape == (4, 12)
    assert np.abs(z - plane_z[None, :]).max() < 1.0  # every frame within 1 um of its plane
    assert data["plane"] == [list(range(12))] * 4
    assert data["volume"] == [[v] * 12 for v in range(4)]
    assert np.all(np.diff(np.ravel(data["frame_id"])) == 1)  # no gaps: nothing lost
    t = np.ravel(data["t"])
    assert np.all(np.diff(t) > 0) and t[0] > t0
    assert uid in data["by_sample"]
    assert data["by_plan"] >= 1 and data["by_time"] >= 1
    assert data["one_volume_mean"] > 100  # real signal above the camera offset
    assert data["settings"] == ["camera", "scanboard"]


def test_the_start_document_records_the_waveform_and_versions(volumetric_run, session):
    result, _ = volumetric_run
    start = session.catalog[result.run_start_uids[0]].metadata["start"]
    assert start["waveform"]["n_planes"] == 12
    assert start["waveform"]["volume_rate_hz"] == 4.0
    assert start["versions"]["beamline_ls"]
    assert start["settings"]["camera"]["camera_cam_trigger_mode"] == "External"
    assert start["plan_args"]["skip_planes"][0] >= 1


def test_planar_scan_stores_frames_at_one_plane(scope, session):
    from plans import planar_scan

    result = session.RE(planar_scan(scope.camera, scope.scanboard, 15, 33.0, 0.004,
                                    frame_rate=50.0))
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    prim = run["primary"]
    assert prim["camera_image"].shape == (15, 256, 256)
    z = prim["camera_z"].read()
    assert np.abs(z - 33.0).max() < 0.1
    dt = np.diff(prim["camera_timestamp"].read())
    assert np.allclose(dt, 1 / 50.0, atol=1e-4)


@pytest.mark.slow
def test_a_planar_scan_slower_than_a_frame_per_10_s_waits_for_its_frames(scope, session):
    """A frame every 12.5 s (the plan takes frame rates down to 0.01 Hz): the scan waits
    for them. It ended 'fail' with "no progress for 10.0 s" after the first frame."""
    from plans import planar_scan

    result = session.RE(planar_scan(scope.camera, scope.scanboard, 2, 33.0, 0.002,
                                    frame_rate=0.08))
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    assert run.metadata["stop"]["exit_status"] == "success", run.metadata["stop"]
    prim = run["primary"]
    assert prim["camera_image"].shape == (2, 256, 256)
    assert np.diff(prim["camera_timestamp"].read()) == pytest.approx([12.5], abs=1e-3)
