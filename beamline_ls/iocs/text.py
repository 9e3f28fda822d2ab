"""Long text PVs (CHAR waveforms holding UTF-8), writable with an empty string.

caproto 1.3 cannot convert a CHAR write whose bytes are all zero (an empty string: what
``caput PV ""`` or ``ophyd`` ``set("")`` send) and answers the write with an error, so
"clear this path" silently kept the old value. :class:`TextPV` takes that write as "".
"""

from __future__ import annotations

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty
from caproto.server.server import PvpropertyChar


class TextPV(PvpropertyChar):
    """A writable CHAR-waveform string PV that also accepts the empty string."""

    async def write_from_dbr(self, data, data_type, metadata, *args, **kwargs):
        if data_type == ChannelType.CHAR and not np.any(np.asarray(data)):
            await self.write("")
            return
        await super().write_from_dbr(data, data_type, metadata, *args, **kwargs)


def text_pv(name: str, value: str = "", *, read_only: bool = False, max_length: int = 512,
            doc: str = "") -> pvproperty:
    """A string PV longer than EPICS' 40-character STRING (paths, messages, JSON)."""
    if read_only:
        return pvproperty(name=name, value=value, dtype=ChannelType.CHAR,
                          max_length=max_length, string_encoding="utf-8", read_only=True,
                          doc=doc)
    return pvproperty(name=name, value=value, dtype=TextPV, max_length=max_length,
                      string_encoding="utf-8", doc=doc)
