"""Signals for the IOC's long-text PVs (paths, messages: CHAR waveforms).

pyepics asks a read for as many characters as the channel's last monitor update held,
so with a text PV whose length changes (caproto sends the text's own length), a read
right after a longer message was written came back cut to the previous length:
"capturing" turned the next "aborted after 2 frames ..." into "aborted a". These
signals ask for the whole current text (count 0: "as long as it is now").
"""

from __future__ import annotations

from ophyd import EpicsSignal, EpicsSignalRO


class _WholeText:
    """Mixin: string values, and reads that ask for the whole current text."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("string", True)
        super().__init__(*args, **kwargs)

    def get(self, *, count=0, **kwargs):
        return super().get(count=count, **kwargs)


class TextSignal(_WholeText, EpicsSignal):
    """A writable long-text PV, read whole."""


class TextSignalRO(_WholeText, EpicsSignalRO):
    """A read-only long-text PV, read whole."""
