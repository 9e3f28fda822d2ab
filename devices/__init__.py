"""ophyd devices of the light-sheet microscope (EPICS clients of beamline-ls IOCs).

Import this only after the EPICS environment is set (see beamline_ls.epics_env).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields

from ophyd.signal import EpicsSignalBase, ReadTimeoutError
from ophyd.utils.errors import DisconnectedError

from devices import ca_recovery
from devices.camera import Acquisition, Camera
from devices.gating import GatingTrigger
from devices.laser import Laser
from devices.positioners import Galvo, Piezo, Stage
from devices.scanboard import ScanBoard

ca_recovery.install()  # before any signal exists: each binds its callbacks when made

#: seconds a read waits for a connected IOC's answer before calling it silent. ophyd's
#: 2 s failed plans on a loaded two-core host where every IOC was healthy (a gated
#: scan's first read of a just-started IOC, in a CI run); facility profiles raise it
#: the same way. A frozen IOC is still named within seconds of this.
READ_TIMEOUT_S = 5.0
try:
    EpicsSignalBase.set_defaults(timeout=READ_TIMEOUT_S)
except RuntimeError:  # signals made before this import keep ophyd's default
    logging.getLogger(__name__).warning(
        "EPICS signals were made before `devices` was imported: their reads time out "
        "after ophyd's default, not %g s", READ_TIMEOUT_S)


@dataclass
class Microscope:
    camera: Camera
    scanboard: ScanBoard
    piezo: Piezo
    galvo1: Galvo
    galvo2: Galvo
    stage: Stage
    laser: Laser
    gating: GatingTrigger

    def all(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def destroy(self) -> None:
        """Drop every device's Channel Access connections (before the IOC goes away)."""
        for dev in self.all():
            dev.destroy()


def connect_microscope(prefix: str, timeout: float = 10.0) -> Microscope:
    """Instantiate every device under ``prefix`` and wait for all connections."""
    scope = Microscope(
        camera=Camera(prefix, name="camera"),
        scanboard=ScanBoard(f"{prefix}scan:", name="scanboard"),
        piezo=Piezo(f"{prefix}piezo", name="piezo"),
        galvo1=Galvo(f"{prefix}galvo1", name="galvo1"),
        galvo2=Galvo(f"{prefix}galvo2", name="galvo2"),
        stage=Stage(f"{prefix}stage:", name="stage"),
        laser=Laser(f"{prefix}laser:", name="laser"),
        gating=GatingTrigger(f"{prefix}gating:", name="gating"),
    )
    for dev in scope.all():
        try:
            dev.wait_for_connection(timeout=timeout)
        except TimeoutError as exc:  # ophyd lists ~70 PVs; say what to do first
            raise TimeoutError(_no_answer(prefix, dev.name, timeout, str(exc))) from None
    return scope


def _no_answer(prefix: str, device: str, timeout: float, detail: str) -> str:
    """Why the devices did not connect, in the words a user acts on."""
    env = {k: os.environ.get(k, "(unset)") for k in ("EPICS_CA_ADDR_LIST",
                                                     "EPICS_CA_SERVER_PORT")}
    return (f"{device}: its IOC did not answer within {timeout:g} s (prefix {prefix!r}, "
            f"EPICS_CA_ADDR_LIST={env['EPICS_CA_ADDR_LIST']}, EPICS_CA_SERVER_PORT="
            f"{env['EPICS_CA_SERVER_PORT']}). Is it running with that prefix? Start it "
            f"with `beamline-ls ioc --prefix {prefix} --data-dir DIR` (the session's data "
            f"directory), or set BEAMLINE_LS_PREFIX to the prefix it serves. "
            f"ophyd: {detail[:300]}{'...' if len(detail) > 300 else ''}")


__all__ = ["Acquisition", "Camera", "DisconnectedError", "GatingTrigger", "Galvo", "Laser",
           "Microscope", "Piezo", "ReadTimeoutError", "ScanBoard", "Stage",
           "connect_microscope"]
