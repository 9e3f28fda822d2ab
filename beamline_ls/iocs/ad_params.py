"""areaDetector-style parameters: a setting with its ``_RBV`` readback, and settings
this hardware holds at one value.

areaDetector drivers and plugins expose almost every parameter twice: ``Name`` (what a
client asked for) and ``Name_RBV`` (what the driver holds). Stock clients rely on the
pair: ophyd's ``EpicsSignalWithRBV.set`` waits for the readback, ADCore's screens show
both. :func:`setting` makes the pair; the setting's class writes every accepted value
(from a client or from the IOC itself) to its readback, so the two never disagree.

Some parameters name features this microscope does not have (a shutter output on the
camera, HDF5 compression filters, NDAttribute files). :func:`fixed` makes them exist
with the one value the hardware has and refuses any other with the reason, so a client
that asks for the feature gets an error at once instead of a setting silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caproto import ChannelType
from caproto.server import pvproperty
from caproto.server.server import (
    PvpropertyDouble,
    PvpropertyEnum,
    PvpropertyInteger,
    PvpropertyString,
)

from beamline_ls.iocs.text import TextPV


class _WritesReadback:
    """Copies every value it takes to the PV of the same name plus ``_RBV``."""

    async def write(self, value, *args, **kwargs):
        await super().write(value, *args, **kwargs)
        twin = self.group.pvdb.get(self.pvname + "_RBV")
        if twin is not None and twin is not self:
            held, shown = getattr(self, "enum_strings", None), getattr(twin, "enum_strings",
                                                                       None)
            value = self.value
            if held and shown and list(held) != list(shown):  # the readback's own words
                value = shown[list(held).index(value)]
            await twin.write(value)


class _HeldAt:
    """Refuses any value outside ``allowed``, with ``reason``."""

    def __init__(self, *args, allowed: Sequence[Any] = (), reason: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed = tuple(allowed)
        self.reason = reason

    async def verify_value(self, value):
        strings = getattr(self, "enum_strings", None)
        if strings and not isinstance(value, str):  # an enum put by index
            index = int(value)
            value = strings[index] if 0 <= index < len(strings) else str(index)
        if value not in self.allowed:
            raise ValueError(f"{self.pvname} = {value!r} refused: {self.reason}")
        return await super().verify_value(value)


class SettingInteger(_WritesReadback, PvpropertyInteger):
    """LONG setting mirrored to its readback."""


class SettingDouble(_WritesReadback, PvpropertyDouble):
    """DOUBLE setting mirrored to its readback."""


class SettingEnum(_WritesReadback, PvpropertyEnum):
    """ENUM setting mirrored to its readback."""


class SettingText(_WritesReadback, TextPV):
    """Long-text setting mirrored to its readback."""


class SettingString(_WritesReadback, PvpropertyString):
    """STRING (40 characters) setting mirrored to its readback."""


class HeldInteger(_HeldAt, SettingInteger):
    """LONG setting held at its allowed values."""


class HeldDouble(_HeldAt, SettingDouble):
    """DOUBLE setting held at its allowed values."""


class HeldEnum(_HeldAt, SettingEnum):
    """ENUM setting held at its allowed values."""


class HeldText(_HeldAt, SettingText):
    """Long-text setting held at its allowed values."""


class HeldString(_HeldAt, SettingString):
    """STRING setting held at its allowed values."""


_SETTING = {int: SettingInteger, float: SettingDouble, "enum": SettingEnum,
            "text": SettingText, str: SettingString}
_HELD = {int: HeldInteger, float: HeldDouble, "enum": HeldEnum, "text": HeldText,
         str: HeldString}
_READBACK = {int: ChannelType.LONG, float: ChannelType.DOUBLE, "enum": ChannelType.ENUM,
             "text": ChannelType.CHAR, str: ChannelType.STRING}
TEXT_LENGTH = 512


def _kind(value: Any, enum_strings: Sequence[str] | None, text: bool) -> Any:
    if enum_strings is not None:
        return "enum"
    if text:
        return "text"
    return type(value)


def _shape(kind: Any, enum_strings: Sequence[str] | None, kwargs: dict) -> dict:
    shaped = dict(kwargs)
    if kind == "enum":
        shaped["enum_strings"] = list(enum_strings or ())
    if kind == "text":
        shaped.setdefault("max_length", TEXT_LENGTH)
        shaped.setdefault("string_encoding", "utf-8")
    return shaped


def readback(name: str, value: Any, *, enum_strings: Sequence[str] | None = None,
             text: bool = False, doc: str = "", **kwargs) -> pvproperty:
    """A read-only status PV (``..._RBV`` or a counter)."""
    kind = _kind(value, enum_strings, text)
    return pvproperty(name=name, value=value, dtype=_READBACK[kind], read_only=True,
                      doc=doc, **_shape(kind, enum_strings, kwargs))


def setting(name: str, value: Any, *, enum_strings: Sequence[str] | None = None,
            rbv_enum_strings: Sequence[str] | None = None, text: bool = False,
            doc: str = "", **kwargs) -> tuple[pvproperty, pvproperty]:
    """``name`` and ``name_RBV``; every value ``name`` takes shows on ``name_RBV``
    (in ``rbv_enum_strings``, state by state, where areaDetector's readback words its
    states its own way: WriteFile "Write" reads back "Writing").

    Use it as ``gain, gain_rbv = setting("Gain", 1.0)``; a putter on the first still
    runs before the value is taken (and can refuse it).
    """
    kind = _kind(value, enum_strings, text)
    shaped = _shape(kind, enum_strings, kwargs)
    rbv_shaped = {k: v for k, v in _shape(kind, rbv_enum_strings or enum_strings,
                                          kwargs).items()
                  if k not in ("lower_ctrl_limit", "upper_ctrl_limit")}
    return (pvproperty(name=name, value=value, dtype=_SETTING[kind], doc=doc, **shaped),
            pvproperty(name=name + "_RBV", value=value, dtype=_READBACK[kind],
                       read_only=True, doc=f"what {name} holds", **rbv_shaped))


def fixed(name: str, value: Any, reason: str, *, allowed: Sequence[Any] = (),
          enum_strings: Sequence[str] | None = None,
          rbv_enum_strings: Sequence[str] | None = None, text: bool = False,
          rbv: bool = True, **kwargs) -> Any:
    """A setting this hardware holds at ``value`` (or one of ``allowed``): other
    values are refused with ``reason``. Returns ``(setting, readback)`` when ``rbv``,
    else the setting alone (``rbv_enum_strings``: as for :func:`setting`)."""
    kind = _kind(value, enum_strings, text)
    shaped = _shape(kind, enum_strings, kwargs)
    held = pvproperty(name=name, value=value, dtype=_HELD[kind], doc=reason,
                      allowed=(value, *allowed), reason=reason, **shaped)
    if not rbv:
        return held
    return held, pvproperty(name=name + "_RBV", value=value, dtype=_READBACK[kind],
                            read_only=True, doc=f"what {name} holds",
                            **_shape(kind, rbv_enum_strings or enum_strings, kwargs))


async def write_if_changed(pv, value: Any) -> None:
    """Write ``value`` only when it differs (every write is a monitor update to every
    client)."""
    if pv.value != value:
        await pv.write(value)
