"""Every run as one self-describing HDF5 file, readable with plain h5py.

Written live by the session (``<data dir>/runs/<YYYY-MM-DD>/<scan_id>-<uid[:8]>.h5``)
and for any stored run by ``beamline-ls export``. Layout (details in docs/RUNFILE.md)::

    /                          attrs: layout, uid, scan_id, plan_name, sample_name,
                                      exit_status ("running" until the stop document,
                                      "incomplete" if none came), reason,
                                      file_written_by, file_written_at
    /start                     attrs: every start-document key (JSON text where HDF5
                                      cannot hold the value; those keys are listed in
                                      ``_json_keys``), ``document`` (the whole doc, JSON);
                                      dict values also as subgroups (/start/plan_args)
    /stop                      the same for the stop document (exists once stopped)
    /streams/<stream>          attrs: descriptor fields (uid, time, hints, ...), document
      data/<key>               one dataset per data key, (events or frames, *shape);
                               attrs: source, dtype, dtype_numpy, shape, units, external
                               stream-resource keys: virtual datasets into the camera's
                               files (relative paths), e.g. (volumes, planes, y, x)
      timestamps/<key>         per-event timestamps of event data keys
      seq_num, time            per event
      external/<key>           attrs: file (relative path), dataset, resources (JSON)
      config/<device>/data/<key>, config/<device>/timestamps/<key>
                               configuration of every device, from the descriptor
"""

import importlib
from typing import Any

from beamline_ls.runfile.embed import embed_frames, missing_frame_files, open_run_file
from beamline_ls.runfile.runfile import LAYOUT, RunFile

#: loaded on first use: the writer normalises documents with bluesky-tiled-plugins,
#: whose import (xarray, dask, pandas) is ~2.5 s that reading or verifying a file
#: (``beamline-ls verify``) does not need
_WRITER_NAMES = ("InvalidDocumentError", "RunFileWriter", "default_run_path",
                 "validate_document")


def __getattr__(name: str) -> Any:
    if name in _WRITER_NAMES:
        return getattr(importlib.import_module("beamline_ls.runfile.writer"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LAYOUT", "InvalidDocumentError", "RunFile", "RunFileWriter", "default_run_path",
           "embed_frames", "missing_frame_files", "open_run_file", "validate_document"]
