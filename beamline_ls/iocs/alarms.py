"""An alarm per PV, as every EPICS record has its own STAT and SEVR.

caproto gives all pvproperties of a PVGroup that name no ``alarm_group`` one shared
alarm, and a put its putter refuses raises that alarm to WRITE/MAJOR. So one refused
``cam1:AcquireTime`` put showed all 115 ``cam1:`` PVs, DetectorState_RBV and the
counters included, in MAJOR alarm on every screen and alarm handler, until some later
code happened to clear it (a new user's probe). An EPICS IOC marks only the record the
put was refused by (asyn device support: WRITE, until the record is written again).

:class:`RecordAlarms` is the base of this project's PVGroups. Each pvproperty a
subclass defines (or mixes in) gets the alarm group of its own attribute name, which
is exactly what ``pvproperty(..., alarm_group=<attr>)`` written out by hand would do;
a record's fields (the motor record's) keep sharing their record's alarm, as in EPICS.
A put that is accepted clears that PV's WRITE alarm again (the putters are wrapped,
and PVs without a putter clear it in ``group_write``); other alarms (communication,
queue levels, a refused motor move) belong to the code that raised them.

Checked against caproto 1.x, whose pvproperty keeps its spec in ``pvproperty.pvspec``
(a ``PVSpec`` namedtuple it updates with ``_replace`` itself, as ``.putter`` does).
"""

from __future__ import annotations

import functools
from typing import Any

import caproto
from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, pvproperty

if not caproto.__version__.startswith("1."):  # the PVSpec layout this module relies on
    raise ImportError(f"beamline_ls.iocs.alarms supports caproto 1.x, not {caproto.__version__}")

_DONE = "_beamline_ls_own_alarm"


async def clear_write_alarm(instance: Any) -> None:
    """Clear the WRITE alarm a refused put left on ``instance`` (its own, not others)."""
    alarm = instance.alarm
    if alarm is not None and alarm.status == AlarmStatus.WRITE:
        await alarm.write(status=AlarmStatus.NO_ALARM, severity=AlarmSeverity.NO_ALARM)


def _clearing(put):
    @functools.wraps(put)
    async def put_and_clear(group, instance, value):
        result = await put(group, instance, value)
        await clear_write_alarm(instance)
        return result

    return put_and_clear


def _own_alarm(attr: str, prop: pvproperty) -> None:
    if getattr(prop, _DONE, False):
        return
    spec = prop.pvspec
    changes: dict[str, Any] = {}
    if spec.alarm_group is None:
        changes["alarm_group"] = attr
    if spec.put is not None:
        changes["put"] = _clearing(spec.put)
    if changes:
        prop.pvspec = spec._replace(**changes)
    setattr(prop, _DONE, True)


class RecordAlarms(PVGroup):
    """A PVGroup whose PVs each have their own alarm (see the module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if isinstance(value, pvproperty):
                    _own_alarm(attr, value)

    async def group_write(self, instance: Any, value: Any) -> Any:
        await clear_write_alarm(instance)
        return value
