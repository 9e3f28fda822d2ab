"""``VOL1:``: a summary row per volume of the capture in progress (per block of 100
frames when planar), for live tables: ``Rows_RBV`` holds the newest rows flattened,
``Columns_RBV`` names their columns, ``Count_RBV`` counts the rows finished.

The rows come from the writer (:mod:`beamline_ls.pipeline.summary`), so they describe
the frames stored. ``Rows_RBV`` is one array, so a client reads a consistent set of
rows in one get; each row carries its index, so a client that reads every few tenths
of a second picks up where it left off (256 rows are kept: 2.5 s at 100 volumes/s).
Before the first row of a capture, ``Rows_RBV`` is one row of index -1 (no data).
The array is 256 x 7 doubles (14,336 bytes): within Channel Access' default
``EPICS_CA_MAX_ARRAY_BYTES`` (16384), so stock clients need no setting.
"""

from __future__ import annotations

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from beamline_ls.iocs.ad_params import write_if_changed
from beamline_ls.iocs.alarms import RecordAlarms
from beamline_ls.iocs.text import text_pv
from beamline_ls.pipeline.summary import COLUMNS, KEEP_ROWS, CaptureSummary

#: ``Rows_RBV`` before the capture's first row: one row whose index is -1
NO_ROWS = np.array([-1.0] + [np.nan] * (len(COLUMNS) - 1))


class SummaryGroup(RecordAlarms):
    """The capture summary's PVs; :meth:`publish` brings a recorder's rows to them."""

    rows = pvproperty(name="Rows_RBV", value=NO_ROWS, dtype=ChannelType.DOUBLE,
                      max_length=KEEP_ROWS * len(COLUMNS), read_only=True,
                      doc="newest summary rows, flattened (columns: Columns_RBV)")
    columns = text_pv("Columns_RBV", ",".join(COLUMNS), read_only=True, max_length=128,
                      doc="the columns of each row of Rows_RBV")
    count = pvproperty(name="Count_RBV", value=0, read_only=True,
                       doc="rows finished in the current (or last) capture")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._published: tuple[int, int] = (-1, 0)  # (id of the summary, rows finished)

    async def publish(self, summary: CaptureSummary) -> None:
        """Show ``summary``'s rows if they changed (event loop; a copy under a lock)."""
        state = (id(summary), summary.finished)
        if state == self._published:
            return
        self._published = state
        rows = summary.rows()
        await self.rows.write(rows.ravel() if rows.size else NO_ROWS)
        await write_if_changed(self.count, summary.finished)
