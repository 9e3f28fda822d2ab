"""A put to a choice PV (an enum) that names no choice is refused with the choices.

caproto (1.3) converts a client's value for an enum before any putter runs. A string
that names no state, or an index past the last state, fails there and reaches the
client as "Python exception: CaprotoConversionError" with an empty message: the
conversion's own reason is dropped, so an operator at a stock client never learns
what the PV takes. Two more differences from EPICS records: a state index sent as
text ("1", which EPICS base's ``caput`` sends) is refused, and 1.5 is taken as 1.

:func:`explain_choices` wraps each enum entry of a pvdb (per instance, the way
:mod:`beamline_ls.iocs.access` adds its check): a value that names no state is refused
with the PV name, the value and the states, before the conversion or a putter sees it;
an index given as text is taken as that index, as an EPICS record takes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caproto import ChannelEnum, ChannelType


def explain_choices(pvdb: Mapping[str, Any]) -> int:
    """Refuse, with the choices named, a put that names no state of an enum PV of
    ``pvdb``; returns how many PVs it covers."""
    count = 0
    for name, data in pvdb.items():
        if isinstance(data, ChannelEnum):
            data.write_from_dbr = _checked(name, data, data.write_from_dbr)
            count += 1
    return count


def _checked(name: str, data: ChannelEnum, original):
    async def write_from_dbr(values, data_type, metadata, *args, **kwargs):
        states = tuple(data.enum_strings)
        problem = _no_such_state(values, data_type, states)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
        index = _index_as_text(values, states)
        if index is not None and metadata is None:  # EPICS caput sends "1" as text
            values, data_type = [index], ChannelType.LONG
        return await original(values, data_type, metadata, *args, **kwargs)

    return write_from_dbr


_NOTHING = object()


def _first(values: Any) -> Any:
    """The first value as received, text decoded; ``_NOTHING`` when there is none."""
    try:
        value = values[0]
    except (IndexError, TypeError, KeyError):
        return _NOTHING  # nothing to check: the conversion reports it
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).split(b"\0", 1)[0].decode("latin-1")
    return value


def _no_such_state(values: Any, data_type: Any, states: tuple[str, ...]) -> str | None:
    """Why ``values`` (as received) names no state, or None when it names one."""
    value = _first(values)
    if value is _NOTHING:
        return None
    choices = ", ".join(repr(s) for s in states)
    kind = ChannelType(data_type) if isinstance(data_type, int) else data_type
    if isinstance(value, str):
        if value in states:
            return None
        # as EPICS records do: a string that is a whole number is taken as the index
        try:
            index = int(value)
        except ValueError:
            return f"{value!r} is not one of the states {choices}"
    else:
        try:
            index = int(value)
        except (TypeError, ValueError):
            return None
        if kind in (ChannelType.FLOAT, ChannelType.DOUBLE) and index != float(value):
            return f"{float(value):g} is not a state index (0 to {len(states) - 1}: {choices})"
    if not 0 <= index < len(states):
        return f"{index} is not a state index (0 to {len(states) - 1}: {choices})"
    return None


def _index_as_text(values: Any, states: tuple[str, ...]) -> int | None:
    """The state index a text value gives as a number ("1"), if it is one."""
    value = _first(values)
    if not isinstance(value, str) or value in states:
        return None
    try:
        return int(value)
    except ValueError:
        return None
