"""Write access comes back with the IOC after a Channel Access circuit recovers.

When an IOC does not answer for longer than ``EPICS_CA_CONN_TMO`` (30 s by default:
frozen, too busy, or the network down), libca calls the circuit unresponsive and
reports its channels disconnected with no access rights. When the IOC answers again,
it reports them connected but does not report the access rights again: pyepics
re-reads them for itself (``PV.force_read_access_rights``) without calling the access
callbacks. ophyd 1.x's ``EpicsSignalBase`` keeps the "no access" of the outage and
counts it as valid, so after the outage every put of the session raised
``ReadOnlyError: No write access to underlying EPICS PV`` (measured: ophyd 1.11.2,
pyepics 3.5.10, an IOC frozen 45 s) while caget/caput worked, until the session was
restarted.

:func:`install` wraps ``EpicsSignalBase._pv_connected`` (private; ophyd offers no
public hook) so that each (re)connection hands ophyd the rights libca holds now. It
runs when `devices` is imported, before any signal exists (each signal binds its
connection callback when created); signals of stock ophyd devices made later in the
session are covered too. On an ophyd other than 1.x, or without the private methods,
it does nothing and says so.

Reading the rights asks libca about the channel, from ophyd's dispatcher thread, while
the session's own thread may be destroying the signal: ophyd then clears the channel
(``release_pvs``), and libca read freed memory. A CI run died of it (a segmentation
fault: one thread in ``ca.write_access``, the other in ``ca.clear_channel``, as a
private microscope's devices were destroyed after its IOC had restarted). So channels
are read and cleared under one lock (`_CHANNELS`: ophyd's ``cl.release_pvs`` is wrapped
too), and a channel already cleared is not read. Calling ``ophyd.set_cl`` again after
this module was imported drops that wrapper.
"""

from __future__ import annotations

import logging
import threading

import ophyd
from ophyd.signal import EpicsSignalBase

log = logging.getLogger(__name__)

_MARK = "_beamline_ls_restores_rights"
#: held while a channel's rights are read and while ophyd clears channels
_CHANNELS = threading.RLock()


def _rights_now(pv) -> tuple[bool, bool] | None:
    """(read, write) access libca holds for ``pv`` now; None off pyepics."""
    chid = getattr(pv, "chid", None)
    if chid is None:
        return None
    try:
        from epics import ca

        return ca.read_access(chid) == 1, ca.write_access(chid) == 1
    except Exception:  # noqa: BLE001 - not a pyepics channel, or gone again
        return None


def install() -> bool:
    """Make ophyd signals take the current access rights at every (re)connection;
    True when installed (or already), False on an ophyd this does not know."""
    if getattr(EpicsSignalBase, _MARK, False):
        return True
    major = ophyd.__version__.split(".")[0]
    original = getattr(EpicsSignalBase, "_pv_connected", None)
    if major != "1" or original is None or not hasattr(EpicsSignalBase,
                                                       "_pv_access_callback"):
        log.warning("ophyd %s: access rights after an unresponsive IOC are not restored "
                    "(beamline-ls knows ophyd 1.x); restart the session after an outage "
                    "if puts raise ReadOnlyError", ophyd.__version__)
        return False

    def _pv_connected(self, pvname, conn, pv):
        original(self, pvname, conn, pv)
        if not conn:
            return
        with _CHANNELS:  # the channel cannot be cleared while it is read
            if self._destroyed or getattr(pv, "chid", None) is None:
                return
            rights = _rights_now(pv)
        if rights is not None:
            self._pv_access_callback(*rights, pv)

    _pv_connected.__doc__ = original.__doc__
    EpicsSignalBase._pv_connected = _pv_connected
    _guard_release(ophyd.cl)
    setattr(EpicsSignalBase, _MARK, True)
    return True


def _guard_release(cl) -> None:
    """Make ``cl.release_pvs`` (ophyd's control layer: where signals clear their
    channels) hold `_CHANNELS`."""
    release = getattr(cl, "release_pvs", None)
    if release is None or getattr(release, _MARK, False):
        return

    def release_pvs(*pvs):
        with _CHANNELS:
            return release(*pvs)

    setattr(release_pvs, _MARK, True)
    cl.release_pvs = release_pvs
