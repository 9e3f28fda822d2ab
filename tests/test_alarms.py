"""A refused put alarms the PV it was refused on, and only that one, until it is
written again (as an EPICS record's STAT and SEVR do). It used to raise MAJOR/WRITE on
every PV of the group, readbacks and states included (115 ``cam1:`` PVs, the whole
``scan:`` group), for as long as no other code cleared it: screens and alarm handlers
showed a healthy camera in alarm. Read with pyepics, as those clients do."""

from __future__ import annotations

import epics as ca  # pyepics
import pytest
from caproto import AlarmSeverity, AlarmStatus
from conftest import put_is_refused


def _alarm(pvname: str) -> tuple[int, int]:
    pv = ca.get_pv(pvname, form="time", connect=True, timeout=10)
    md = pv.get_with_metadata(use_monitor=False, form="time", timeout=10)
    assert md is not None, pvname
    return int(md["status"]), int(md["severity"])


NO_ALARM = (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
WRITE_MAJOR = (AlarmStatus.WRITE, AlarmSeverity.MAJOR_ALARM)


@pytest.mark.parametrize("setting,bad,others", [
    ("cam1:AcquireTime", -1.0, ["cam1:DetectorState_RBV", "cam1:ArrayCounter_RBV",
                                "cam1:AcquireTime_RBV", "cam1:StatusMessage_RBV"]),
    ("scan:VolumeRate", 0.0, ["scan:Running_RBV", "scan:Message_RBV"]),
])
def test_a_refused_put_alarms_only_its_own_pv_until_it_is_written_again(
        ioc, prefix, setting, bad, others):
    good = ca.caget(prefix + setting, use_monitor=False, timeout=10)
    assert good is not None
    assert put_is_refused(prefix + setting, bad)
    assert _alarm(prefix + setting) == WRITE_MAJOR
    for name in others:
        assert _alarm(prefix + name) == NO_ALARM, name
    # the same value written again is accepted: the alarm goes
    assert not put_is_refused(prefix + setting, good)
    assert _alarm(prefix + setting) == NO_ALARM
