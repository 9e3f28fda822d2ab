"""NeXus markup of the run file, so h5web, silx, DAWN and NeXus readers plot it.

Added beside the run file's own layout (which stays as it is): the root becomes an
``NXroot`` whose ``default`` is ``/entry``, an ``NXentry`` with title, times, the run's
uid and program, an ``NXsample`` with the sample name, and one ``NXdata`` per stream
that holds camera images (``/entry/data`` for ``primary``): the image is the
``signal`` (a soft link to ``/streams/<stream>/data/<key>``, so it follows the
virtual dataset as the run grows) and every frame axis gets a coordinate:

- (volumes, planes, y, x): ``volume`` (index) and ``z`` (um, the mean focal position
  of each plane over volumes) or ``plane`` (index) where no z was recorded;
- (frames, y, x): ``time`` (s since the first frame's exposure) or ``frame`` (index).

Written when the run stops (or the file is closed without a stop), when every length
is known.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import h5py
import numpy as np

import beamline_ls

log = logging.getLogger(__name__)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + \
        time.strftime("%z", time.localtime(t))


def _text(group: h5py.Group, name: str, value: str | None) -> None:
    if value is not None:
        group.create_dataset(name, data=value, dtype=h5py.string_dtype())


def _image_keys(stream: h5py.Group) -> list[str]:
    data = stream.get("data")
    if data is None:
        return []
    return [k for k, ds in data.items()
            if isinstance(ds, h5py.Dataset) and ds.ndim >= 3 and k in stream.get("external", {})]


def _frame_axes(nxdata: h5py.Group, stream: h5py.Group, image: h5py.Dataset,
                key: str) -> list[str]:
    """Coordinates of the leading (frame) dimensions; returns the ``axes`` list."""
    lead = image.shape[:-2]
    data = stream["data"]
    prefix = key.rsplit("_image", 1)[0] if key.endswith("_image") else key

    def per_frame(name: str) -> np.ndarray | None:
        ds = data.get(f"{prefix}_{name}")
        if ds is None or ds.shape != lead:
            return None
        try:
            return ds[()].astype("f8")
        except OSError as exc:  # e.g. a frame file its IOC died with, still flagged open
            log.warning("run file %s: %s read from the frame files failed (%s); the NeXus "
                        "view uses frame indices instead", nxdata.file.filename,
                        ds.name, exc)
            return None

    if len(lead) == 2:
        nxdata.create_dataset("volume", data=np.arange(lead[0]))
        nxdata.attrs["volume_indices"] = 0
        z = per_frame("z")
        if z is not None and lead[0] > 0:
            valid = np.where(z > -1, z, np.nan)  # -1: a frame that is not there
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(valid, axis=0) if np.isfinite(valid).any() else None
            if mean is not None and np.isfinite(mean).all():
                ds = nxdata.create_dataset("z", data=mean)
                ds.attrs["units"] = "um"
                ds.attrs["long_name"] = "focal plane z (um)"
                nxdata.attrs["z_indices"] = 1
                return ["volume", "z", ".", "."]
        nxdata.create_dataset("plane", data=np.arange(lead[1]))
        nxdata.attrs["plane_indices"] = 1
        return ["volume", "plane", ".", "."]
    if len(lead) == 1:
        stamps = per_frame("timestamp")
        if stamps is not None and lead[0] > 0 and (stamps > 0).all():
            ds = nxdata.create_dataset("time", data=stamps - stamps[0])
            ds.attrs["units"] = "s"
            ds.attrs["long_name"] = "time since the first exposure (s)"
            nxdata.attrs["time_indices"] = 0
            return ["time", ".", "."]
        nxdata.create_dataset("frame", data=np.arange(lead[0]))
        nxdata.attrs["frame_indices"] = 0
        return ["frame", ".", "."]
    return ["."] * image.ndim


def write_nexus(f: h5py.File, start: dict[str, Any], stop: dict[str, Any] | None) -> None:
    """(Re)write the NeXus view of the open run file ``f``."""
    if "entry" in f:
        del f["entry"]
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = "entry"
    entry = f.create_group("entry")
    entry.attrs["NX_class"] = "NXentry"
    title = start.get("plan_name", "run")
    if start.get("sample_name"):
        title = f"{title}: {start['sample_name']}"
    _text(entry, "title", str(title))
    _text(entry, "entry_identifier", str(start.get("uid", "")))
    _text(entry, "start_time", _iso(start.get("time")))
    _text(entry, "end_time", _iso((stop or {}).get("time")))
    _text(entry, "program_name", f"beamline-ls {beamline_ls.__version__}")
    sample = entry.create_group("sample")
    sample.attrs["NX_class"] = "NXsample"
    _text(sample, "name", str(start.get("sample_name", "")))

    default = None
    streams = f.get("streams", {})
    for stream_name in sorted(streams, key=lambda n: (n != "primary", n)):
        stream = streams[stream_name]
        keys = _image_keys(stream)
        if not keys:
            continue
        key = keys[0]
        group_name = "data" if stream_name == "primary" else stream_name
        nxdata = entry.create_group(group_name)
        nxdata.attrs["NX_class"] = "NXdata"
        nxdata.attrs["signal"] = key
        nxdata[key] = h5py.SoftLink(f"/streams/{stream_name}/data/{key}")
        image = stream["data"][key]
        nxdata.attrs["axes"] = _frame_axes(nxdata, stream, image, key)
        _text(nxdata, "title", f"{title} ({stream_name})")
        default = default or group_name
    if default is not None:
        entry.attrs["default"] = default
