"""Assemble every device's PVGroup under one prefix and serve them on loopback.

All simulated groups share one simulated microscope in one process: a client finds
them all with a single search, and the camera renders what the scan board does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

from caproto.asyncio.server import Context as AsyncioContext
from caproto.asyncio.utils import _TransportWrapper
from caproto.server import PVGroup
from caproto.server import common as caproto_server_common
from threadpoolctl import threadpool_limits

from beamline_ls.config import Settings
from beamline_ls.epics_env import udp_port_taken
from beamline_ls.hardware.factory import Drivers, build_drivers
from beamline_ls.hardware.positioner import FocusPositioner
from beamline_ls.iocs.access import AccessPolicy
from beamline_ls.iocs.ca_ordering import order_replies
from beamline_ls.iocs.camera import CameraGroup
from beamline_ls.iocs.claim import claim_data_dir, refuse_if_served
from beamline_ls.iocs.enum_puts import explain_choices
from beamline_ls.iocs.gating import GatingGroup
from beamline_ls.iocs.laser import LaserGroup
from beamline_ls.iocs.motor import MotorGroup
from beamline_ls.iocs.scanboard import ScanBoardGroup
from beamline_ls.log import success
from beamline_ls.signals import cancel_on_stop_signals, stop_on_sigterm

log = logging.getLogger(__name__)

def build_groups(settings: Settings, drivers: Drivers) -> list[PVGroup]:
    """One PVGroup per device; PV names are ``settings.prefix`` + the group's suffixes.
    Frames go under ``settings.frames_dir``, copies of closed files to ``mirror_dir``
    or a client's ``HDF1:MirrorPath`` within ``allowed_mirror_roots``; motor and
    galvo calibrations are kept under ``autosave_dir``."""
    prefix, data_root = settings.prefix, settings.frames_dir
    gating = drivers.gating
    scan = ScanBoardGroup(prefix=f"{prefix}scan:", driver=drivers.scanboard,
                          autosave=settings.autosave_dir / "scanboard.json")
    camera = CameraGroup(prefix=prefix, driver=drivers.camera, data_root=data_root,
                         annotate=gating.annotate if gating else None,
                         mirror_root=settings.mirror_dir,
                         mirror_roots=settings.allowed_mirror_roots,
                         autosave=settings.autosave_dir / "camera.json")
    focus = FocusPositioner(drivers.scanboard, drivers.piezo, scan.calibrations)
    piezo = MotorGroup(prefix=f"{prefix}piezo", driver=focus,
                       autosave=settings.autosave_dir / "piezo.json")
    scan.z_limits = lambda: (piezo.cal.dial_low, piezo.cal.dial_high)
    groups: list[PVGroup] = [
        camera,
        scan,
        piezo,
        LaserGroup(prefix=f"{prefix}laser:", driver=drivers.laser),
    ]
    if gating is not None:
        groups.append(GatingGroup(
            prefix=f"{prefix}gating:", driver=gating,
            exposure_after_trigger=lambda: camera.cam.acquire_time.value
            + camera.cam.readout_time.value))
    for i, g in enumerate(drivers.galvos, start=1):
        groups.append(MotorGroup(prefix=f"{prefix}galvo{i}", driver=g,
                                 autosave=settings.autosave_dir / f"galvo{i}.json"))
    for axis, d in drivers.stage.items():
        groups.append(MotorGroup(prefix=f"{prefix}stage:{axis.upper()}", driver=d,
                                 autosave=settings.autosave_dir / f"stage-{axis}.json"))
    return groups


def build_pvdb(groups: list[PVGroup]) -> dict:
    pvdb: dict = {}
    for g in groups:
        overlap = pvdb.keys() & g.pvdb.keys()
        if overlap:
            raise ValueError(f"duplicate PV names: {sorted(overlap)[:5]}")
        pvdb.update(g.pvdb)
    return pvdb


class NoDelayContext(AsyncioContext):
    """caproto's asyncio server with Nagle's algorithm off on every client circuit.

    caproto creates its TCP sockets with protocol number 0, so asyncio does not switch
    TCP_NODELAY on for them. With Nagle on, a reply sent while an earlier one is still
    unacknowledged waits for the client's delayed ACK (~40 ms on Linux): two puts in
    flight took 45 ms instead of 1.5 ms, and every read during an acquisition (when
    monitor updates are in flight) paid the same delay.
    """

    async def server_accept_loop(self, sock: socket.socket) -> None:
        def new_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            if raw is not None:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = _TransportWrapper(reader, writer)
            self.server_tasks.create(self.tcp_handler(transport, transport.getpeername()))

        await asyncio.start_server(new_client, sock=sock)


def run(pvdb: dict, interfaces: list[str], before_stop=None) -> None:
    """Serve ``pvdb`` until SIGTERM or SIGINT (caproto's ``run`` with
    :class:`NoDelayContext`); either goes through the server's own shutdown, after
    ``before_stop()`` (a coroutine function) while clients are still served."""

    async def main() -> None:
        context = NoDelayContext(pvdb, interfaces)
        order_replies(context)  # a put's completion after the monitor updates it caused
        with cancel_on_stop_signals(asyncio.current_task(), before_stop):
            await context.run(log_pv_names=False)  # returns after its shutdown if cancelled

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # stopped before the server ran


#: Batching window of caproto's monitor updates (its default: 10 ms).
MONITOR_BATCH_S = 0.002


def low_latency_monitors() -> None:
    """Send monitor updates after at most ~2 ms of batching instead of caproto's 10 ms.

    caproto holds a monitor update while further updates keep arriving within its
    batching window, so during an acquisition -- when the status loops post several
    counters every 20 ms -- each update reached clients 15-25 ms late, and a client
    learned that a scan or its file was complete that much later. A setting of
    ``CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC`` in the environment is left alone.
    """
    if "CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC" not in os.environ:
        caproto_server_common.HIGH_LOAD_TIMEOUT = MONITOR_BATCH_S


def loopback_server_env() -> None:
    """Default the server to loopback only, unless the site configured otherwise."""
    os.environ.setdefault("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1")
    os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
    os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", "127.0.0.1")
    # EPICS base sends beacons to the repeater's port unless told otherwise; caproto
    # sends them to 5065 whatever the repeater port is (a traceback every beacon)
    if os.environ.get("EPICS_CA_REPEATER_PORT"):
        os.environ.setdefault("EPICS_CAS_BEACON_PORT", os.environ["EPICS_CA_REPEATER_PORT"])


def warn_if_port_shared(interfaces: list[str], port: int) -> None:
    """Say so when another server already listens for searches on our UDP port.

    Both servers then bind it, and the kernel hands a unicast search (a client with
    ``EPICS_CA_ADDR_LIST=127.0.0.1``) to one of them only: each client finds the PVs of
    one IOC and times out on the other's, with nothing said on either side."""
    if udp_port_taken(port):  # read from the kernel's table: a probe bind would race
        log.warning("another server already listens on UDP port %d: clients searching "
                    "%s will find only one of the two IOCs; give this one its own port "
                    "(EPICS_CA_SERVER_PORT, the same for its clients)", port,
                    " ".join(interfaces))


def serve(settings: Settings) -> None:
    """Run the IOC of ``settings`` (prefix, hardware, data directories) until
    SIGINT/SIGTERM."""
    loopback_server_env()
    from beamline_ls import ca_repeater

    if ca_repeater.beacons_need_one():
        ca_repeater.start_in_thread()  # unless one runs: beacons need a repeater
    # Multi-threaded BLAS spins against the camera, writer and CA threads on a small
    # machine; single-threaded matmuls of simulated frames were measured 3.5x faster.
    threadpool_limits(1)
    # The CA event loop shares the GIL with the camera and writer threads; the default
    # 5 ms switch interval made each client round trip wait tens of ms during acquisition.
    sys.setswitchinterval(0.0005)
    low_latency_monitors()
    prefix, data_root = settings.prefix, settings.frames_dir
    access = AccessPolicy.from_config(settings.access)  # a bad table fails before any port opens
    interfaces = os.environ["EPICS_CAS_INTF_ADDR_LIST"].split()
    port = int(os.environ.get("EPICS_CA_SERVER_PORT", "5064"))
    refuse_if_served(f"{prefix}cam1:Acquire", interfaces, port)  # before any hardware opens
    stop_on_sigterm()  # until the event loop runs and takes both signals over
    drivers = build_drivers(settings.hardware)
    groups: list[PVGroup] = []
    claim = None
    try:
        # once the configuration is accepted: a refused one leaves none
        settings.ensure_dirs(writable=(settings.frames_dir, settings.state_dir,
                                       settings.autosave_dir))
        claim = claim_data_dir(settings.state_dir, prefix)  # held while serving
        groups = build_groups(settings, drivers)
        pvdb = build_pvdb(groups)
        access.apply(pvdb, prefix)
        explain_choices(pvdb)  # a put naming no state is refused with the states
        warn_if_port_shared(interfaces, port)
        success(log, "IOC serving %d PVs with prefix %r on %s port %s; frames under %s",
                len(pvdb), prefix, interfaces,
                os.environ.get("EPICS_CA_SERVER_PORT", "5064"), data_root)
        cameras = [g for g in groups if isinstance(g, CameraGroup)]

        async def close_captures() -> None:
            """Open captures closed, and said so, while clients are connected."""
            await asyncio.gather(*(g.hdf.close_for_ioc_stop() for g in cameras))
            if any(g.hdf.write_status.value == "Write error" for g in cameras):
                await asyncio.sleep(0.3)  # the last monitor updates reach the clients

        run(pvdb, interfaces, close_captures)
    except KeyboardInterrupt:
        pass
    finally:
        drivers.close()  # gating, cameras, scan board, serial ports and NI tasks
        for g in groups:
            if isinstance(g, CameraGroup) and g.recorder.capturing:
                g.recorder.stop()
        if claim is not None:
            claim.close()
        log.info("IOC stopped")
