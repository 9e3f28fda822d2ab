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


def explain_choices(pvdb: Mapping[str, Any]) -> None:
    """Refuse, with the choices named, a put that names no state of an enum PV of
    ``pvdb``."""
    for name, data in pvdb.items():
        if isinstance(data, ChannelEnum):
            data.write_from_dbr = _checked(name, data, data.write_from_dbr)


def _checked(name: str, data: ChannelEnum, original):
    async def write_from_dbr(values, data_type, metadata, *args, **kwargs):
        problem, text_index = _judge(values, data_type, tuple(data.enum_strings))
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
        if text_index is not None and metadata is None:  # EPICS caput sends "1" as text
            values, data_type = [text_index], ChannelType.LONG
        return await original(values, data_type, metadata, *args, **kwargs)

    return write_from_dbr


def _judge(values: Any, data_type: Any, states: tuple[str, ...]
           ) -> tuple[str | None, int | None]:
    """``(why the value names no state, or None; the index it gives as text, or None)``
    for ``values`` as received."""
    try:
        value = values[0]
    except (IndexError, TypeError, KeyError):
        return None, None  # nothing to check: the conversion reports it
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).split(b"\0", 1)[0].decode("latin-1")
    choices = ", ".join(repr(s) for s in states)
    text_index = None
    if isinstance(value, str):
        if value in states:
            return None, None
        # as EPICS records do: a string that is a whole number is taken as the index
        try:
            index = text_index = int(value)
        except ValueError:
            return f"{value!r} is not one of the states {choices}", None
    else:
        try:
            index = int(value)
        except (TypeError, ValueError):
            return None, None
        kind = ChannelType(data_type) if isinstance(data_type, int) else data_type
        if kind in (ChannelType.FLOAT, ChannelType.DOUBLE) and index != float(value):
            return (f"{float(value):g} is not a state index (0 to {len(states) - 1}: "
                    f"{choices})", None)
    if not 0 <= index < len(states):
        return f"{index} is not a state index (0 to {len(states) - 1}: {choices})", None
    return None, text_index
