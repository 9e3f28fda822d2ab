"""``image1:``: the live image as areaDetector's NDStdArrays plugin (``ArrayData``),
for ophyd's ``ImagePlugin``, ADCore's screens and image viewers.

The camera thread only swaps a reference to its newest frame into a one-frame slot; a
frame replaced before the event loop sent it counts as dropped (``DroppedArrays_RBV``).
Converting and sending happen off the camera's and the writer's threads, at most once
per ``MinCallbackTime``, so a slow viewer costs live frames, never acquisition or
writing.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from beamline_ls.frame import Frame
from beamline_ls.iocs.ad_plugin import PluginGroup

#: the largest frame ArrayData carries (a 4096 x 4096 sensor); clients size their
#: buffers from the element count of the frame actually sent
MAX_PIXELS = 4096 * 4096
#: default MinCallbackTime: a 10 Hz live view (0 sends every frame the loop can)
LIVE_PERIOD_S = 0.1


class StdArraysGroup(PluginGroup):
    """NDStdArrays: the newest frame as a flat (y * x) LONG array."""

    plugin_type = "NDPluginStdArrays"
    port = "IMAGE1"

    array_data = pvproperty(name="ArrayData", value=np.zeros(2, np.int32),
                            dtype=ChannelType.LONG, max_length=MAX_PIXELS, read_only=True,
                            doc="the newest frame, rows one after another (x fastest)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slot: Frame | None = None
        self._slot_lock = threading.Lock()
        self._sent_id = -1

    @array_data.startup
    async def array_data(self, instance, async_lib):
        """A blank frame of the configured size until the first one arrives, so
        clients that shape ArrayData by ArraySize0/1 can from the start."""
        h, w = self.parent.frame_shape()
        await self.array_data.write(np.zeros(h * w, np.int32))
        await self.min_callback_time.write(LIVE_PERIOD_S)

    def take(self, frame: Frame) -> bool:
        with self._slot_lock:
            replaced = self._slot is not None
            self._slot = frame
        return not replaced

    def queue_state(self) -> tuple[int, int]:
        return (1, int(self._slot is not None))

    async def send_newest(self) -> None:
        """Send the frame in the slot (event loop; conversion on a worker thread)."""
        with self._slot_lock:
            frame, self._slot = self._slot, None
        if frame is None:
            return
        flat = await asyncio.get_running_loop().run_in_executor(
            None, lambda: frame.image.astype(np.int32).ravel())
        await self.array_data.write(flat)
        self._sent_id = frame.frame_id
