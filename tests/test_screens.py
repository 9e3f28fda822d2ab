"""``beamline-ls screens``: Phoebus screens whose every PV exists on the running IOC
(issue 11, item 3)."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

DEVICE_SCREENS = {"camera-cam1.bob", "camera-image1.bob", "camera-HDF1.bob", "scan.bob",
                  "piezo.bob", "galvo1.bob", "galvo2.bob", "stage-X.bob", "stage-Y.bob",
                  "stage-Z.bob", "laser.bob", "gating.bob"}


@pytest.fixture(scope="module")
def screens(tmp_path_factory, prefix, ioc) -> Path:
    out = tmp_path_factory.mktemp("screens")
    done = subprocess.run([sys.executable, "-m", "beamline_ls.cli", "screens", str(out),
                           "--prefix", prefix], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def displayed_pvs(path: Path) -> list[str]:
    """Every PV a display addresses, its macros expanded."""
    root = ET.parse(path).getroot()
    macros = {m.tag: m.text or "" for m in root.find("macros")}
    names = []
    for el in root.iter("pv_name"):
        name = re.sub(r"\$\((\w+)\)", lambda m: macros[m.group(1)], el.text)
        names.append(name)
    return names


def test_every_device_has_a_screen_and_the_overview_opens_them(screens):
    files = {p.name for p in screens.glob("*.bob")}
    assert files == DEVICE_SCREENS | {"overview.bob"}
    overview = ET.parse(screens / "overview.bob").getroot()
    opened = {f.text for f in overview.iter("file")}
    assert opened == DEVICE_SCREENS


def test_every_pv_on_every_screen_exists_on_the_ioc(screens, prefix):
    from caproto.threading.client import Context

    names = sorted({pv for path in screens.glob("*.bob") for pv in displayed_pvs(path)})
    assert len(names) > 300
    assert all(name.startswith(prefix) for name in names)
    ctx = Context()
    try:
        pvs = ctx.get_pvs(*names, timeout=10)
        missing = []
        for pv in pvs:
            try:
                pv.wait_for_connection(timeout=20)
            except TimeoutError:
                missing.append(pv.name)
        assert missing == []
    finally:
        ctx.disconnect()


def test_screens_show_every_scalar_pv_of_the_camera_writer(screens, prefix):
    """Generated from the IOC's definitions: a PV added to a group appears."""
    from caproto import ChannelChar

    from beamline_ls.hardware.camera import SimCamera
    from beamline_ls.iocs.camera import CameraGroup
    from beamline_ls.sim.microscope import SimMicroscope

    group = CameraGroup(prefix=prefix, driver=SimCamera(SimMicroscope()),
                        data_root=screens / "frames")
    scalars = {name for name, pv in group.hdf.pvdb.items()
               if isinstance(pv, ChannelChar) or pv.max_length == 1}
    shown = set(displayed_pvs(screens / "camera-HDF1.bob"))
    assert scalars - shown == set()
