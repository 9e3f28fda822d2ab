"""Plans validate every argument before anything moves."""

import pytest


def board_state(scope):
    sb = scope.scanboard
    return {s: getattr(sb, s).get(use_monitor=False)
            for s in ("num_planes", "volume_rate", "z_start", "z_stop", "num_volumes")}


@pytest.mark.parametrize("kwargs, param", [
    (dict(n_volumes=0), "n_volumes"),
    (dict(n_volumes=2.5), "n_volumes"),
    (dict(n_planes=1), "n_planes"),
    (dict(n_planes=5000), "n_planes"),
    (dict(z_start=-5.0), "z_start"),
    (dict(z_stop=500.0), "z_stop"),
    (dict(z_stop=10.0), "z_start and z_stop"),
    (dict(volume_rate=0.0), "volume_rate"),
    (dict(volume_rate=float("nan")), "volume_rate"),
    (dict(volume_rate=90.0), "volume_rate"),
    (dict(exposure=0.5), "exposure"),
    (dict(exposure=-1.0), "exposure"),
    (dict(skip_planes=(1, 2, 3)), "skip_planes"),
    (dict(skip_planes=99), "skip_planes"),
    # more frames than one capture takes: refused before the board is set up for them
    (dict(n_volumes=200_000, n_planes=1000, volume_rate=0.01), "200000000 frames"),
    (dict(md={"x": object()}), r"md\['x'\] cannot be stored in the catalog"),
    (dict(md={"scan_id": 5}), r"md\['scan_id'\] is set by the RunEngine"),  # never twice
    (dict(md={"sample": 3}), r"md\['sample'\]"),
    (dict(md={"uid": "mine"}), r"md\['uid'\] is set by the RunEngine"),
    # the catalog finds runs by it: a run stored as plan_name "spoof" was lost to
    # Key("plan_name") == "volumetric_scan"
    (dict(md={"plan_name": "spoof"}), r"md\['plan_name'\] is set by the plan"),
    (dict(md={"a.b": 1}), r"md key 'a.b' may not contain"),
    (dict(md=["sample"]), "md must be a dict"),
])
def test_volumetric_scan_rejects_bad_arguments_before_moving(scope, session, kwargs, param):
    from plans import volumetric_scan

    args = dict(n_volumes=2, n_planes=10, z_start=10.0, z_stop=50.0, volume_rate=2.0)
    args.update(kwargs)
    before = board_state(scope)
    n_runs = len(session.catalog)
    with pytest.raises(ValueError, match=param):
        session.RE(volumetric_scan(scope.camera, scope.scanboard, **args))
    assert board_state(scope) == before
    session.flush()
    assert len(session.catalog) == n_runs


def test_devices_passed_in_the_wrong_places_are_named(scope, session):
    """Camera and scan board swapped, or a plan given a name instead of a device: the
    parameter and what it got are named before anything moves (it was an
    AttributeError, 'flyback_settle', from inside the plan)."""
    from plans import gated_scan, planar_scan, volumetric_scan

    before = board_state(scope)
    with pytest.raises(TypeError, match=r"camera must be a Camera device, got 'scanboard' "
                                        r"\(ScanBoard\)"):
        session.RE(volumetric_scan(scope.scanboard, scope.camera, 2, 10, 10.0, 50.0, 2.0))
    with pytest.raises(TypeError, match="scanboard must be a ScanBoard device, got 'sb'"):
        session.RE(planar_scan(scope.camera, "sb", 5, 40.0, 0.002))
    with pytest.raises(TypeError, match="gating must be a GatingTrigger device, got "
                                        "'piezo'"):
        session.RE(gated_scan(scope.camera, scope.piezo, scope.gating, [40.0]))
    assert board_state(scope) == before


@pytest.mark.parametrize("kwargs, param", [
    (dict(n_frames=0), "n_frames"),
    (dict(z=401.0), "z"),
    (dict(exposure=0.0), "exposure"),
    (dict(exposure=20.0), "exposure"),
    (dict(frame_rate=1e6), "frame_rate"),
])
def test_planar_scan_rejects_bad_arguments(scope, session, kwargs, param):
    from plans import planar_scan

    args = dict(n_frames=3, z=40.0, exposure=0.005)
    args.update(kwargs)
    with pytest.raises(ValueError, match=param):
        session.RE(planar_scan(scope.camera, scope.scanboard, **args))


def test_scans_keep_to_the_piezos_limits_and_refuse_before_moving(scope, session,
                                                                  piezo_high_limit):
    """A limit set on the piezo's motor record holds for scans, which the scan board
    drives without that record: refused with the limits named, nothing moved, no run."""
    from plans import planar_scan, volumetric_scan

    piezo_high_limit(30.0)
    before = board_state(scope)
    n_runs = len(session.catalog)
    outside = r"from 8\.333 to 44\.996 um, outside the piezo's limits \[0, 30\]"
    with pytest.raises(ValueError, match=outside):
        session.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 10, 10.0, 40.0, 2.0))
    with pytest.raises(ValueError, match=r"z: the focal plane at 35\.000 um, outside the piezo"):
        session.RE(planar_scan(scope.camera, scope.scanboard, 3, 35.0, 0.005))
    assert board_state(scope) == before
    session.flush()
    assert len(session.catalog) == n_runs


def test_a_camera_ioc_writing_where_the_catalog_does_not_read_is_refused_before_a_run(
        scope, session, tmp_path):
    """An IOC started on another data directory than the session's (a leftover IOC):
    its runs would be stored with frames the catalog refuses to serve. The scan is
    refused before its run opens, naming both places and the fix."""
    from beamline_ls.profile import catalog_roots
    from plans import planar_scan

    assert catalog_roots(session.settings) == (str(session.settings.frames_dir),)
    n_runs = len(session.catalog)
    scope.camera.catalog_roots = (str(tmp_path / "frames"),)
    try:
        with pytest.raises(RuntimeError) as refused:
            session.RE(planar_scan(scope.camera, scope.scanboard, 3, 35.0, 0.005))
    finally:
        scope.camera.catalog_roots = catalog_roots(session.settings)
    message = str(refused.value)
    assert "HDF1:DataRoot_RBV" in message and str(tmp_path / "frames") in message
    assert "--data-dir" in message
    session.flush()
    assert len(session.catalog) == n_runs
    # where they agree, the scan goes
    session.RE(planar_scan(scope.camera, scope.scanboard, 3, 35.0, 0.005))


def test_the_range_is_named_in_the_message(scope, session):
    from plans import volumetric_scan

    with pytest.raises(ValueError, match=r"n_planes must be in \[2, 1000\], got 1"):
        session.RE(volumetric_scan(scope.camera, scope.scanboard, 1, 1, 10.0, 50.0, 1.0))


def test_a_run_that_fails_to_reach_the_catalog_fails_loudly_once(session):
    """A plan that skips the metadata check (here bluesky's own count) and stores an
    object the catalog cannot hold: the run itself raises, naming it and the cause;
    the next flush does not repeat it and the session keeps working."""
    from bluesky.plans import count
    from conftest import plain_detector
    det = plain_detector()

    session.flush()
    with pytest.raises(RuntimeError, match=r"run \S+ is not fully stored: .* failed to reach "
                                           r"the catalog, which lacks the whole run "
                                           r"\(read back\); last error: .*not JSON"):
        session.RE(count([det], md={"unstorable": object()}))
    session.flush()  # reported once: no error for the same failure again
    uid = session.RE(count([det], 1)).run_start_uids[0]
    session.flush()
    assert session.catalog[uid].metadata["stop"]["exit_status"] == "success"


def test_a_volumetric_scan_leaves_the_writer_as_stock_clients_expect(scope, session):
    """HDF1:FramesPerVolume is this project's own PV: left at a scan's 10 planes, the
    next capture of a stock areaDetector client (3 frames, say) was refused as "not a
    whole number of 10-plane volumes". The scan puts it back to 0."""
    from plans import volumetric_scan

    result = session.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 10, 10.0, 40.0,
                                        2.0))
    assert result.exit_status == "success"
    assert int(scope.camera.hdf.frames_per_volume.get(use_monitor=False)) == 0


def test_a_scan_that_ends_well_warns_of_nothing(scope, session, caplog):
    """The cleanup after a scan that ended well collects nothing and says nothing: a
    cut-short volume is looked for only in a run that was interrupted (the cleanup is
    shared by the volumetric and planar scans)."""
    import logging

    from plans import planar_scan

    with caplog.at_level(logging.WARNING, logger="plans"):
        assert session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0,
                                      0.002)).exit_status == "success"
    said = [r.getMessage() for r in caplog.records if r.name.startswith("plans")]
    assert said == []
