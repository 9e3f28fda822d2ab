"""``beamline-ls demo``: the whole path on the simulated microscope.

Starts the simulated hardware IOC on private loopback ports, connects the ophyd
devices, runs a planar and a volumetric scan with progress bars, stores frames in
HDF5 and documents in the catalog, reads the volumetric run back through the catalog,
prints where everything went and how to load it, and stops every process it started.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from beamline_ls.config import Settings, load_settings
from beamline_ls.epics_env import LoopbackEpics
from beamline_ls.log import success
from beamline_ls.stack import running_microscope

log = logging.getLogger(__name__)

ROI_SIZE = 512


def run_demo(data_dir: Path | None = None, prefix: str = "BLSDEMO:", n_volumes: int = 10) -> int:
    if n_volumes < 1:
        raise ValueError("--volumes must be >= 1")
    settings = load_settings(data_dir=data_dir or Path.cwd() / "beamline-ls-data",
                             prefix=prefix)
    settings.ensure_dirs()
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    epics = LoopbackEpics()
    epics.apply()  # before ophyd is imported
    epics.start_repeater(logs / "repeater.log")
    print(f"Starting the simulated microscope IOC ({prefix}*, loopback port "
          f"{epics.server_port}) ...", flush=True)
    try:
        with running_microscope(epics, settings, logs / "ioc.log",
                                roi=ROI_SIZE) as (_, scope, session):
            return _scans(settings, scope, session, n_volumes)
    finally:
        epics.stop()


def _scans(settings: Settings, scope: Any, session: Any, n_volumes: int) -> int:
    """The two scans, read back through the catalog, and where everything went."""
    from plans import planar_scan, volumetric_scan

    logs = settings.data_dir / "logs"
    scope.laser.set(20.0).wait(5)

    print("\n1/2 planar scan: 50 frames at z = 45 um, 5 ms exposure", flush=True)
    planar = session.RE(planar_scan(scope.camera, scope.scanboard, 50, 45.0, 0.005,
                                    md={"sample_name": "demo beads"}))
    print(f"\n2/2 volumetric scan: {n_volumes} volumes x 20 planes, 10-80 um, "
          f"5 volumes/s", flush=True)
    t0 = time.monotonic()
    volumetric = session.RE(volumetric_scan(scope.camera, scope.scanboard, n_volumes, 20,
                                            10.0, 80.0, 5.0,
                                            md={"sample_name": "demo beads"}))
    elapsed = time.monotonic() - t0
    session.flush()

    cat = session.catalog
    print("\nRuns written:")
    for label, result in (("planar", planar), ("volumetric", volumetric)):
        uid = result.run_start_uids[0]
        run = cat[uid]
        start, stop = run.metadata["start"], run.metadata["stop"]
        image = run["primary"][f"{scope.camera.name}_image"]
        print(f"  {label:10s} scan_id {start['scan_id']}, uid {uid[:8]}, "
              f"exit {stop['exit_status']}, frames {tuple(image.shape)}")
        if stop["exit_status"] != "success":
            raise RuntimeError(f"{label} run ended {stop['exit_status']}: {stop['reason']}")
    vol = cat[volumetric.run_start_uids[0]]["primary"]
    z = vol[f"{scope.camera.name}_z"].read()
    print(f"  volumetric acquisition took {elapsed:.2f} s for "
          f"{n_volumes / 5.0:.2f} s of volumes; plane z from {z[0, 0]:.2f} to "
          f"{z[0, -1]:.2f} um")
    print(f"\nFrames (HDF5):  {settings.frames_dir}")
    print(f"Catalog:        {settings.catalog_dir}")
    print(f"IOC log:        {logs / 'ioc.log'}")
    print("\nLoad the data from any Python session:\n")
    print("    from beamline_ls import open_catalog")
    print(f"    cat = open_catalog({str(settings.data_dir)!r})")
    print('    volumes = cat[-1]["primary"]["camera_image"].read()  '
          "# (volumes, planes, y, x)\n")
    success(log, "demo finished")
    return 0
