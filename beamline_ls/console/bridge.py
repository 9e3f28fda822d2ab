"""Channel Access to the console: one client of the IOC for every browser.

The bridge subscribes (caproto's asyncio client, in the web server's event loop) to
every PV of :mod:`.pvs`, keeps the newest value of each, drops each new frame into a
one-frame slot per camera, and merges the gating history into a phase-lock trace.
Callbacks run on caproto's callback thread and only store; nothing here waits on a
browser, and the IOC serves this one client however many browsers watch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from beamline_ls.console.phaselock import PhaseLockTrace
from beamline_ls.console.pvs import (
    BRIGHTFIELD_IMAGE,
    CAMERA_IMAGE,
    MONITORED,
    PHASE_HISTORY,
    TRIGGER_RECORDS,
    WRITABLE,
)
from beamline_ls.console.slot import LatestSlot

log = logging.getLogger(__name__)

#: seconds a write may take (a motor move or enabling gating completes on its own time)
PUT_TIMEOUT_S = 60.0


class PutRefused(Exception):
    """A write the IOC refused or could not be asked (not connected, no answer); the
    message says why."""


class BadWrite(PutRefused, ValueError):
    """A write the console refuses itself: a PV it may not write, a value of the wrong
    kind. ``forbidden``: the PV is not one the console writes."""

    def __init__(self, message: str, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


@dataclass(frozen=True)
class LiveImage:
    seq: int  # the console's own count of frames received from this camera
    image: np.ndarray  # (y, x)
    received: float  # time.time() when it arrived


def _shape(n: int, x: Any, y: Any) -> tuple[int, int] | None:
    """(y, x) for a flat array of n pixels, from the published sizes."""
    try:
        xi, yi = int(x), int(y)
    except (TypeError, ValueError):
        return None
    return (yi, xi) if xi > 0 and yi > 0 and xi * yi == n else None


class Bridge:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.values: dict[str, Any] = {}
        self.meta: dict[str, dict] = {}  # units, limits, enum strings per short name
        self.connected: dict[str, bool] = {}
        self.camera: LatestSlot[LiveImage] = LatestSlot()
        self.brightfield: LatestSlot[LiveImage] = LatestSlot()
        self.phase = PhaseLockTrace()
        self.malformed_frames = 0  # arrays whose size matched no published shape
        self._ctx = None
        self._pvs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task] = []
        self._camera_sub: Any = None  # the camera's frames: subscribed while watched
        self._camera_callback = self._callback(CAMERA_IMAGE)
        self._stopping = threading.Event()  # abandons writes still waiting at stop

    # -- lifecycle (the web server's event loop) ----------------------------------------
    async def start(self) -> None:
        from caproto.asyncio.client import Context

        self._ctx = Context()
        shorts = [*MONITORED, CAMERA_IMAGE, BRIGHTFIELD_IMAGE, PHASE_HISTORY,
                  TRIGGER_RECORDS]
        suffix = {**MONITORED, CAMERA_IMAGE: CAMERA_IMAGE, BRIGHTFIELD_IMAGE:
                  BRIGHTFIELD_IMAGE, PHASE_HISTORY: PHASE_HISTORY,
                  TRIGGER_RECORDS: TRIGGER_RECORDS}
        names = [self.prefix + suffix[s] for s in shorts]
        pvs = await self._ctx.get_pvs(*names, connection_state_callback=self._on_connection)
        for short, pv in zip(shorts, pvs, strict=True):
            self._pvs[short] = pv
            self.connected[short] = False
            self._tasks.append(asyncio.create_task(self._watch(short, pv)))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ctx is not None:
            await self._ctx.disconnect()
            self._ctx = None

    async def _watch(self, short: str, pv) -> None:
        """Wait (forever) for the PV, read its metadata once, then subscribe."""
        while True:
            try:
                await pv.wait_for_connection(timeout=5.0)
                break
            except TimeoutError:
                continue
        try:
            ctrl = await pv.read(data_type="control", timeout=10.0)
            md = ctrl.metadata
            meta = {"units": _text(getattr(md, "units", b"")),
                    "enum": [_text(s) for s in getattr(md, "enum_strings", ())]}
            for attr, key in (("lower_ctrl_limit", "low"), ("upper_ctrl_limit", "high"),
                              ("precision", "precision")):
                v = getattr(md, attr, None)
                if v is not None:
                    meta[key] = float(v) if attr != "precision" else int(v)
            self.meta[short] = meta
        except Exception as exc:  # metadata is a nicety; the value still matters
            log.info("no metadata for %s: %s", pv.name, exc)
            self.meta.setdefault(short, {"enum": []})
        if short == CAMERA_IMAGE:
            return  # see watch_camera
        sub = pv.subscribe()
        callback = self._callback(short)
        self._subs.append((sub, callback))  # caproto keeps callbacks by weak reference
        sub.add_callback(callback)

    async def watch_camera(self, on: bool) -> None:
        """Subscribe to the camera's frames only while someone watches them: a frame
        of a large sensor is megabytes that the IOC would otherwise send for nobody."""
        if on and self._camera_sub is None:
            self._camera_sub = self._pvs[CAMERA_IMAGE].subscribe()
            self._camera_sub.add_callback(self._camera_callback)
        elif not on and self._camera_sub is not None:
            sub, self._camera_sub = self._camera_sub, None
            await sub.clear()

    @property
    def watching_camera(self) -> bool:
        return self._camera_sub is not None

    def _on_connection(self, pv, state: str) -> None:
        for short, p in self._pvs.items():
            if p is pv:
                self.connected[short] = state == "connected"

    # -- updates (caproto's callback thread) --------------------------------------------
    def _callback(self, short: str):
        def on_update(sub, response) -> None:
            try:
                try:
                    data = response.data
                except IndexError:  # caproto cannot extract a zero-length array
                    data = np.zeros(0)
                self._update(short, data)
            except Exception:
                log.exception("console: update of %s failed", short)
        return on_update

    def _update(self, short: str, data) -> None:
        if short == CAMERA_IMAGE:
            self._frame(self.camera, np.asarray(data), "image1:ArraySize0_RBV",
                        "image1:ArraySize1_RBV", "cam1:ArraySizeX_RBV", "cam1:ArraySizeY_RBV")
        elif short == BRIGHTFIELD_IMAGE:
            self._frame(self.brightfield, np.asarray(data), "gating:ImageSizeX_RBV",
                        "gating:ImageSizeY_RBV")
        elif short == PHASE_HISTORY:
            arr = np.asarray(data, dtype=float)
            if arr.size >= 2:
                self.phase.add_history(arr[: arr.size // 2 * 2])
        elif short == TRIGGER_RECORDS:
            try:
                records = json.loads(_text(data) or "[]")
            except json.JSONDecodeError:
                return
            self.phase.add_records(records)
        else:
            value = self._decode(short, data)
            with self._lock:
                self.values[short] = value

    def _decode(self, short: str, data) -> Any:
        arr = np.asarray(data)
        if arr.dtype.kind in "SUO" or (arr.dtype == np.uint8 and arr.size > 1):
            return _text(data)
        enum = self.meta.get(short, {}).get("enum") or []
        if arr.size == 0:
            return None
        value = arr.flat[0]
        if enum and arr.dtype.kind in "iu":
            i = int(value)
            return enum[i] if 0 <= i < len(enum) else i
        if arr.dtype.kind == "f":
            v = float(value)
            return v if math.isfinite(v) else None
        return value.item() if hasattr(value, "item") else value

    def _frame(self, slot: LatestSlot[LiveImage], flat: np.ndarray, *size_keys: str) -> None:
        with self._lock:
            sizes = [self.values.get(k) for k in size_keys]
        shape = None
        for i in range(0, len(sizes), 2):
            shape = _shape(flat.size, sizes[i], sizes[i + 1])
            if shape is not None:
                break
        if shape is None:
            side = int(round(math.sqrt(flat.size)))
            if flat.size <= 1 or side * side != flat.size:
                self.malformed_frames += 1  # a blank placeholder or a size change in flight
                return
            shape = (side, side)
        seq = slot.received + 1
        slot.put(LiveImage(seq, flat.reshape(shape), time.time()))

    # -- reads and writes (event loop) ---------------------------------------------------
    def snapshot(self) -> dict:
        """Newest values of the connected PVs (a disconnected PV's last value is not
        live: it is left out, so the page shows it as unknown)."""
        connected = dict(self.connected)
        with self._lock:
            values = {k: v for k, v in self.values.items() if connected.get(k, True)}
        return {"values": values, "connected": connected}

    def device_connected(self, short: str) -> bool:
        """Whether the console is connected to the device of ``short`` (its own PV when
        monitored, else any monitored PV of the same device): a write to an IOC that is
        down is refused at once instead of searching for a minute."""
        if short in self.connected:
            return self.connected[short]
        device = short.split(".", 1)[0] if "." in short else short.split(":", 1)[0] + ":"
        return any(ok for k, ok in self.connected.items() if k.startswith(device))

    async def read(self, short: str) -> Any:
        """A fresh read of a monitored PV (not the newest monitor update: a value
        just after a completed move may still be on its way)."""
        pv = self._pvs.get(short)
        if pv is None or not pv.connected:
            raise PutRefused(f"{self.prefix}{short} is not connected")
        reply = await pv.read(timeout=5.0)
        return self._decode(short, reply.data)

    async def put(self, short: str, value: Any) -> None:
        """Write ``value`` to the PV named ``short`` (one of :data:`WRITABLE`) and wait
        for the IOC to complete it; :class:`PutRefused` with the reason otherwise.

        The write runs on a worker thread on a circuit of its own
        (:func:`beamline_ls.ca_put.put_and_wait`): writes clicked one after another
        proceed together, and a refused put returns the IOC's own reason at once.
        """
        from caproto import ChannelType, ErrorResponseReceived

        from beamline_ls.ca_put import put_and_wait

        if short not in WRITABLE:
            raise BadWrite(f"{short!r} is not writable from the console", forbidden=True)
        if not self.device_connected(short):
            raise PutRefused(f"{self.prefix}{short}: the IOC is not connected")
        enum = self.meta.get(short, {}).get("enum") or []
        kwargs: dict = {}
        if isinstance(value, str):
            if short in self.meta and not enum:
                raise BadWrite(f"{short} takes a number, got {value!r}")
            if enum and value not in enum:
                raise BadWrite(f"{short} takes one of {enum}, got {value!r}")
            data: list = [value.encode()]
            kwargs["data_type"] = ChannelType.STRING
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadWrite(f"{short} takes a number, got {value!r}")
        elif not math.isfinite(float(value)):
            raise BadWrite(f"{short} takes a finite number, got {value!r}")
        else:
            data = [value]
        name = self.prefix + short
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: put_and_wait(
                name, data, timeout=PUT_TIMEOUT_S, cancel=self._stopping, **kwargs))
        except ErrorResponseReceived as exc:
            reply = exc.args[0] if exc.args else None
            why = _text(getattr(reply, "error_message", b"")).strip() or str(exc)
            why = why.removeprefix("Python exception: ")
            raise PutRefused(f"the IOC refused {name} = {value!r}: {why}") from None
        except TimeoutError as exc:
            raise PutRefused(f"{name}: not done within {PUT_TIMEOUT_S:.0f} s "
                             f"({exc})") from exc
        except Exception as exc:  # search failed, circuit lost: the IOC is unreachable
            raise PutRefused(f"{name}: {type(exc).__name__}: {exc}") from exc


def _text(data) -> str:
    if isinstance(data, bytes):
        raw = data
    elif isinstance(data, str):
        return data
    else:
        arr = np.asarray(data)
        if arr.dtype.kind == "S" or arr.dtype == object:
            raw = arr.flat[0] if arr.size else b""
            if isinstance(raw, str):
                return raw
        else:
            raw = arr.astype(np.uint8).tobytes()
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
