"""The camera IOC as areaDetector lays it out: the driver (``cam1:``,
:mod:`beamline_ls.iocs.ad_driver`) and its plugins, the live image (``image1:``,
:mod:`beamline_ls.iocs.ad_stdarrays`), the HDF5 file writer (``HDF1:``,
:mod:`beamline_ls.iocs.ad_hdf5`) and the summary of what it wrote, a row per volume
(``VOL1:``, :mod:`beamline_ls.iocs.ad_summary`).

Frames never cross Channel Access on their way to disk: the camera driver hands each
one (on its own thread) to :meth:`CameraGroup.on_frame`, which passes it to every
enabled plugin; the writer's recorder writes HDF5 on its own thread. One loop on the
event loop brings all counters to Channel Access every 20 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from caproto.server import SubGroup, pvproperty

from beamline_ls.frame import Frame
from beamline_ls.hardware.camera import CameraDriver
from beamline_ls.iocs.ad_driver import DriverGroup
from beamline_ls.iocs.ad_hdf5 import HDF5FileGroup
from beamline_ls.iocs.ad_stdarrays import StdArraysGroup
from beamline_ls.iocs.ad_summary import SummaryGroup
from beamline_ls.iocs.alarms import RecordAlarms

REFRESH_S = 0.02
PUBLISH_EVERY = 10


class CameraGroup(RecordAlarms):
    """``cam1:``, ``image1:``, ``HDF1:`` and ``VOL1:`` of one camera."""

    cam = SubGroup(DriverGroup, prefix="cam1:")
    image = SubGroup(StdArraysGroup, prefix="image1:")
    hdf = SubGroup(HDF5FileGroup, prefix="HDF1:")
    summary = SubGroup(SummaryGroup, prefix="VOL1:")
    heartbeat = pvproperty(name="cam1:Heartbeat_RBV", value=0, read_only=True,
                           doc="counts seconds of the status loop (a stuck loop stops it)")

    def __init__(self, *args, driver: CameraDriver, data_root: Path,
                 annotate: Callable[[Frame], None] | None = None,
                 mirror_root: str | Path | None = None,
                 mirror_roots: Sequence[str | Path] = (), autosave: Path | None = None,
                 **kwargs):
        self.driver = driver
        super().__init__(*args, **kwargs)
        self.cam.autosave = autosave  # binning, ROI, exposure, period across restarts
        self.annotate = annotate  # adds per-frame metadata known elsewhere (gating)
        self.hdf.configure(Path(data_root), mirror_root, mirror_roots)

    @property
    def recorder(self):
        return self.hdf.recorder

    @property
    def plugins(self) -> tuple:
        return (self.image, self.hdf)

    # -- frame path (camera thread) ---------------------------------------------------
    def on_frame(self, frame: Frame) -> None:
        cam = self.cam
        # the camera counts from 0 at each start; areaDetector's UniqueId follows
        # ArrayCounter, so ids go on across acquisitions (ophyd's count of NumImages=3
        # twice: 0..5 in the file, not 0 1 2 0 1 2) and a gap is still a lost frame
        frame.frame_id += cam.frame_base
        if self.annotate is not None:
            self.annotate(frame)
        cam.note_frame(frame.timestamp)
        cam.latest = frame  # the preview samples this; it never slows saving
        acc = cam.accumulator
        if acc is not None:
            if acc.add(frame.image):
                cam.background_done.set()
            return
        if cam.array_callbacks.value != "Enable":
            return
        self.image.receive(frame)
        if not cam.preview_mode:
            self.hdf.receive(frame)

    def frame_shape(self) -> tuple[int, int]:
        """(y, x) of the frames the current settings give (the sensor's when invalid)."""
        try:
            return self.cam.settings().frame_shape
        except ValueError:
            return self.driver.sensor_shape

    def prime_plugins(self, shape: tuple[int, int]) -> None:
        for plugin in self.plugins:
            plugin.prime(shape)

    def pool(self) -> tuple[int, int, int]:
        """The frame buffer (the writer's ring) as (capacity, used, bytes per frame)."""
        capacity, used = self.hdf.queue_state()
        h, w = self.frame_shape()
        return capacity, used, h * w * 2

    # -- status loop (event loop) -------------------------------------------------------
    @heartbeat.startup
    async def heartbeat(self, instance, async_lib):
        loop = asyncio.get_running_loop()
        beat = loop.time()
        passes = 0
        while True:
            await self.cam.refresh()
            await self.summary.publish(self.recorder.summary)
            await self.hdf.refresh()
            await self.image.send_newest()
            passes += 1
            if passes % PUBLISH_EVERY == 0:  # plugin and pool counters: 5 Hz is plenty
                pool = self.pool()
                for group in (self.cam, *self.plugins):
                    await group.publish_pool(pool)
                for plugin in self.plugins:
                    await plugin.publish()
            if loop.time() - beat >= 1.0:
                beat = loop.time()
                await self.heartbeat.write(self.heartbeat.value + 1)
            await asyncio.sleep(REFRESH_S)
