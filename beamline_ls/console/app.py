"""The console's web app (Starlette): the page, its state over a WebSocket, images,
and the writes a logged-in operator may make.

Reading is open to anyone who can reach the address (loopback by default). Every
write -- a PV put, a calibration point, applying a calibration -- needs the console's
API key in the ``X-API-Key`` header; the page asks for it once (its login box) and
keeps it for the browser tab.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from beamline_ls.console.bridge import BadWrite, Bridge, PutRefused
from beamline_ls.console.calibration import GALVOS, CalibrationPoints
from beamline_ls.console.encode import Contrast, EncoderCache, roi_stats
from beamline_ls.console.pvs import WRITABLE
from beamline_ls.console.queue_view import QueuePoller
from beamline_ls.console.runs import RunsPoller
from beamline_ls.console.waveform_view import waveform_view

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: the page's state updates: at most this often (5 a second; images have their own pace)
STATE_PERIOD_S = 0.2
#: the camera's frames are fetched from the IOC while a page is open or for this long
#: after the last image request
WATCH_LINGER_S = 10.0


def plotly_js() -> Path:
    """plotly.js as the plotly wheel ships it (no npm, no CDN)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"plotly.min.js is not in the plotly package at {path}")
    return path


class Console:
    """The shared state behind every browser: bridge, calibration points, runs, the
    encoded images and the one state message per update."""

    def __init__(self, prefix: str, api_key: str,
                 open_catalog: Callable[[], Any] | None = None,
                 bridge: Bridge | None = None, queue: QueuePoller | None = None) -> None:
        if not api_key:
            raise ValueError("the console needs an API key for writes")
        self.prefix = prefix
        self.api_key = api_key
        self.bridge = bridge or Bridge(prefix)
        self.calibration = CalibrationPoints()
        self.runs = RunsPoller(open_catalog)
        self.queue = queue or QueuePoller(None)
        self.encoder = EncoderCache()
        self.browsers = 0
        self.last_image_request = -math.inf  # time.monotonic() of the last one
        self._state: tuple[float, str] = (0.0, "")

    @property
    def camera_wanted(self) -> bool:
        return self.browsers > 0 or (
            time.monotonic() - self.last_image_request < WATCH_LINGER_S)

    async def follow_viewers(self) -> None:
        """Keep the camera subscription on exactly while someone watches (forever)."""
        while True:
            await self.bridge.watch_camera(self.camera_wanted)
            await asyncio.sleep(0.2)

    def state_json(self) -> str:
        """The state message, built at most once per ``STATE_PERIOD_S`` for everyone."""
        now = time.monotonic()
        built, text = self._state
        if now - built < STATE_PERIOD_S * 0.9 and text:
            return text
        b = self.bridge
        snap = b.snapshot()
        images = {}
        for name, slot in (("camera", b.camera), ("brightfield", b.brightfield)):
            item = slot.peek()
            images[name] = {
                "seq": item.seq if item else 0,
                "width": int(item.image.shape[1]) if item else 0,
                "height": int(item.image.shape[0]) if item else 0,
                "received": slot.received, "dropped": slot.dropped,
                "age": round(time.time() - item.received, 3) if item else None}
        state = {
            "time": time.time(), "prefix": self.prefix, "values": snap["values"],
            "connected": sum(snap["connected"].values()),
            "disconnected": sorted(k for k, v in snap["connected"].items() if not v),
            "meta": {k: m for k, m in b.meta.items() if m.get("units") or m.get("enum")},
            "images": images, "phase": b.phase.snapshot(),
            "calibration": self.calibration.snapshot(), "runs": self.runs.snapshot(),
            "queue": self.queue.snapshot(),
            "console": {"browsers": self.browsers, "encodes": self.encoder.encodes,
                    "watching_camera": b.watching_camera,
                    "malformed_frames": b.malformed_frames},
        }
        text = json.dumps(state, default=_json_default)
        self._state = (now, text)
        return text

    def authorized(self, request: Request) -> bool:
        given = request.headers.get("x-api-key", "")
        return bool(given) and secrets.compare_digest(given.encode(), self.api_key.encode())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def create_app(console: Console) -> Starlette:
    """The console's routes around ``console`` (started and stopped with the app)."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await console.bridge.start()
        console.runs.start()
        console.queue.start()
        follower = asyncio.create_task(console.follow_viewers())
        try:
            yield
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            console.runs.stop()
            console.queue.stop()
            await console.bridge.stop()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def plotly(request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript")

    async def info(request: Request) -> Response:
        return JSONResponse({"prefix": console.prefix, "writable": sorted(WRITABLE)})

    async def login(request: Request) -> Response:
        if not console.authorized(request):
            return _error(401, "wrong API key")
        return JSONResponse({"ok": True})

    async def state(request: Request) -> Response:
        return Response(console.state_json(), media_type="application/json")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        console.browsers += 1
        try:
            while True:
                await websocket.send_text(console.state_json())
                await asyncio.sleep(STATE_PERIOD_S)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            console.browsers -= 1

    def slot_for(source: str):
        return {"camera": console.bridge.camera,
                "brightfield": console.bridge.brightfield}.get(source)

    async def image(request: Request) -> Response:
        source = request.path_params["source"]
        slot = slot_for(source)
        if slot is None:
            return _error(404, f"no camera {source!r}: camera or brightfield")
        if source == "camera":
            console.last_image_request = time.monotonic()
            await console.bridge.watch_camera(True)
        try:
            contrast = Contrast.parse(request.query_params.get("low"),
                                      request.query_params.get("high"))
        except ValueError as exc:
            return _error(400, str(exc))
        after = request.query_params.get("after", "")
        item = slot.peek()
        if item is None or (after.isdigit() and item.seq <= int(after)):
            return Response(status_code=204)  # nothing newer than what the page shows
        item = slot.take()
        try:
            enc = await run_in_threadpool(console.encoder.get, source, item.seq,
                                          item.image, contrast)
        except ValueError as exc:  # one manual limit on the wrong side of the other
            return _error(400, str(exc))
        return Response(enc.data, media_type="image/jpeg", headers={
            "Cache-Control": "no-store", "X-Frame-Seq": str(item.seq),
            "X-Low": f"{enc.low:g}", "X-High": f"{enc.high:g}",
            "X-Bin": str(enc.bin_factor), "X-Frame-Width": str(item.image.shape[1]),
            "X-Frame-Height": str(item.image.shape[0])})

    async def roi(request: Request) -> Response:
        slot = slot_for(request.path_params["source"])
        if slot is None:
            return _error(404, "no such camera")
        item = slot.peek()
        if item is None:
            return _error(409, "no frame yet")
        try:
            q = request.query_params
            box = [int(q[k]) for k in ("x0", "y0", "x1", "y1")]
            return JSONResponse(await run_in_threadpool(roi_stats, item.image, *box))
        except KeyError as exc:
            return _error(400, f"ROI needs x0, y0, x1, y1 (missing {exc})")
        except ValueError as exc:
            return _error(400, str(exc))

    async def waveforms(request: Request) -> Response:
        values = console.bridge.snapshot()["values"]
        return JSONResponse(await run_in_threadpool(waveform_view, values))

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except json.JSONDecodeError as exc:
            raise ValueError(f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("request body must be a JSON object")
        return data

    def needs_key(handler):
        async def guarded(request: Request) -> Response:
            if not console.authorized(request):
                return _error(401, "writes need the console's API key (log in)")
            try:
                return await handler(request)
            except (ValueError, IndexError, PutRefused) as exc:
                log.error("console: %s refused: %s", request.url.path, exc)
                if isinstance(exc, BadWrite):  # the request itself is wrong
                    return _error(403 if exc.forbidden else 400, str(exc))
                return _error(409 if isinstance(exc, PutRefused) else 400, str(exc))
        return guarded

    async def put(request: Request) -> Response:
        data = await body(request)
        pv, value = data.get("pv"), data.get("value")
        if not isinstance(pv, str):
            raise ValueError("'pv' must name a PV (e.g. 'laser:Power')")
        await console.bridge.put(pv, value)
        log.info("console: %s%s <- %r", console.prefix, pv, value)
        return JSONResponse({"ok": True, "pv": pv, "value": value})

    async def calibration_add(request: Request) -> Response:
        positions = [_number(await console.bridge.read(f"{m}.RBV"))
                     for m in ("piezo", *GALVOS)]
        point = console.calibration.add(*positions)
        return JSONResponse({"ok": True, "point": [point.z_um, *point.volts]})

    async def calibration_remove(request: Request) -> Response:
        data = await body(request)
        index = data.get("index")
        if not isinstance(index, int):
            raise ValueError("'index' must be the point's number")
        console.calibration.remove(index)
        return JSONResponse({"ok": True})

    async def calibration_clear(request: Request) -> Response:
        console.calibration.clear()
        return JSONResponse({"ok": True})

    async def calibration_apply(request: Request) -> Response:
        fits = console.calibration.fits()
        for i, galvo in enumerate(GALVOS, start=1):
            await console.bridge.put(f"scan:Galvo{i}Offset", fits[galvo].offset_v)
            await console.bridge.put(f"scan:Galvo{i}Slope", fits[galvo].slope_v_per_um)
        log.info("console: galvo calibration applied: %s", fits)
        return JSONResponse({"ok": True, "fit": {g: [c.offset_v, c.slope_v_per_um]
                                                 for g, c in fits.items()}})

    async def background(request: Request) -> Response:
        """Average N frames with the laser off as the camera's background (sashimi's
        "turn off the lights"), the laser restored afterwards, as ``acquire_background``
        does from a plan."""
        n = (await body(request)).get("frames", 50)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            raise ValueError(f"'frames' must be a whole number in [1, 10000], got {n!r}")
        was_on = await console.bridge.read("laser:Enable_RBV") == "On"
        await console.bridge.put("laser:Enable", "Off")
        try:
            await console.bridge.put("cam1:BackgroundAcquire", n)
        finally:
            if was_on:
                await console.bridge.put("laser:Enable", "On")
        log.info("console: background of %d frames taken", n)
        return JSONResponse({"ok": True, "frames": n})

    async def queue_control(request: Request) -> Response:
        action = request.path_params["action"]
        reply = await run_in_threadpool(console.queue.control, action)
        log.info("console: queue %s: %s", action, reply)
        return JSONResponse({"ok": True, "reply": reply})

    routes = [
        Route("/", index),
        Route("/plotly.min.js", plotly),
        Route("/api/info", info),
        Route("/api/state", state),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/image/{source}.jpg", image),
        Route("/api/roi/{source}", roi),
        Route("/api/waveforms", waveforms),
        Route("/api/put", needs_key(put), methods=["POST"]),
        Route("/api/calibration/add", needs_key(calibration_add), methods=["POST"]),
        Route("/api/calibration/remove", needs_key(calibration_remove), methods=["POST"]),
        Route("/api/calibration/clear", needs_key(calibration_clear), methods=["POST"]),
        Route("/api/calibration/apply", needs_key(calibration_apply), methods=["POST"]),
        Route("/api/background", needs_key(background), methods=["POST"]),
        Route("/api/queue/{action}", needs_key(queue_control), methods=["POST"]),
        WebSocketRoute("/ws", ws),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan
