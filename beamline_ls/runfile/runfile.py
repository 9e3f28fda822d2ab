"""One run's HDF5 file, written document by document (layout in ``beamline_ls.runfile``).

:class:`RunFile` receives NORMALISED documents (event-model's latest schema, as
``bluesky_tiled_plugins``' ``RunNormalizer`` emits them: StreamResource/StreamDatum
instead of Resource/Datum, ``dtype_numpy`` on every data key), whatever their origin
(the RunEngine live, or the catalog replaying a stored run), so both give the same
file. It never stores what differs between those origins: event and stream-resource
uids, the batching of StreamDatum documents.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import beamline_ls
from beamline_ls.runfile.encode import native_attr, to_json, write_attrs
from beamline_ls.runfile.links import SourceResource, relative_to, uri_to_path, write_virtual
from beamline_ls.runfile.nexus import write_nexus

log = logging.getLogger(__name__)

LAYOUT = "beamline-ls run file 1"
RUNNING = "running"
INCOMPLETE = "incomplete"
#: Root attributes that legitimately differ between a live and an exported file.
PROVENANCE_ATTRS = ("file_written_by", "file_written_at")
#: StreamResource parameters kept in ``external/<key>`` (they say where the data is).
LOCATING_PARAMETERS = ("dataset", "join_method", "template")


def numpy_dtype(data_key: dict) -> np.dtype:
    """HDF5-storable dtype of a descriptor data key (strings become UTF-8 vlen)."""
    spec = data_key.get("dtype_numpy")
    if isinstance(spec, str) and spec:
        dt = np.dtype(spec)
    else:
        dt = np.dtype({"number": "<f8", "integer": "<i8", "boolean": "|b1"}.get(
            data_key.get("dtype", ""), "O"))
    if dt.kind in "USO" or dt.fields:
        return h5py.string_dtype()
    return dt


def unit_shape(data_key: dict) -> tuple[int, ...]:
    return tuple(int(n) for n in (data_key.get("shape") or ()))


class RunFile:
    """Create ``path`` from a start document and add documents as they come.

    Every method flushes before returning, so a reader who opens the file between
    documents sees a consistent state. ``overwrite=False`` refuses an existing file.
    """

    def __init__(self, path: str | Path, start: dict, *, overwrite: bool = False,
                 written_by: str = "live"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists (use overwrite to replace it)")
        # Default (oldest) format on purpose: no "open for write" flag in the superblock,
        # so a reader may open the file while the run goes (h5py locking=False).
        self._f = h5py.File(self.path, "w" if overwrite else "x")
        self._start = start
        self._streams: dict[str, str] = {}  # descriptor uid -> stream name
        self._event_keys: dict[str, list[str]] = {}  # stream -> internal data keys
        self._data_keys: dict[str, dict[str, dict]] = {}  # stream -> data key -> spec
        self._resources: dict[str, tuple[str, SourceResource]] = {}  # uid -> (key, res)
        self._linked: dict[tuple[str, str], list[SourceResource]] = {}
        root = self._f
        root.attrs["layout"] = LAYOUT
        root.attrs["file_written_by"] = f"beamline-ls {beamline_ls.__version__} ({written_by})"
        root.attrs["file_written_at"] = time.time()
        for key in ("uid", "scan_id", "plan_name", "sample_name"):
            if key in start and native_attr(start[key]) is not None:
                root.attrs[key] = native_attr(start[key])
        root.attrs["exit_status"] = RUNNING
        root.attrs["reason"] = ""
        group = root.create_group("start")
        write_attrs(group, start)
        group.attrs["document"] = to_json(start)
        root.create_group("streams")
        self._f.flush()

    @property
    def closed(self) -> bool:
        return not self._f.id.valid

    # -- streams --------------------------------------------------------------------
    def descriptor(self, doc: dict) -> None:
        name = doc["name"]
        self._streams[doc["uid"]] = name
        streams = self._f["streams"]
        if name in streams:  # a configuration update of an existing stream
            g = streams[name]
            k = sum(1 for a in g.attrs if a.startswith("document_update_")) + 1
            g.attrs[f"document_update_{k}"] = to_json(doc)
            self._write_configuration(g, doc, suffix=f"_update_{k}")
            self._f.flush()
            return
        g = streams.create_group(name)
        write_attrs(g, {k: v for k, v in doc.items()
                        if k not in ("data_keys", "configuration")}, subgroups=False)
        g.attrs["document"] = to_json(doc)
        data, stamps = g.create_group("data"), g.create_group("timestamps")
        g.create_dataset("seq_num", shape=(0,), maxshape=(None,), chunks=(1024,), dtype="<i8")
        g.create_dataset("time", shape=(0,), maxshape=(None,), chunks=(1024,), dtype="<f8")
        g.create_group("external")
        self._event_keys[name] = []
        self._data_keys[name] = dict(doc["data_keys"])
        for key, spec in doc["data_keys"].items():
            shape, dtype = unit_shape(spec), numpy_dtype(spec)
            if "external" in spec:
                ds = write_virtual(data, key, [], shape, dtype, self.path.parent)
            else:
                per_chunk = max(1, min(1024, 2**20 // max(1, dtype.itemsize * int(
                    np.prod(shape, dtype=np.int64)))))
                ds = data.create_dataset(key, shape=(0, *shape), maxshape=(None, *shape),
                                         chunks=(per_chunk, *shape), dtype=dtype)
                stamps.create_dataset(key, shape=(0,), maxshape=(None,), chunks=(1024,),
                                      dtype="<f8")
                self._event_keys[name].append(key)
            write_attrs(ds, spec, subgroups=False)
        self._write_configuration(g, doc)
        self._f.flush()

    def _write_configuration(self, g: h5py.Group, doc: dict, suffix: str = "") -> None:
        config = g.require_group("config" + suffix)
        for device, conf in doc.get("configuration", {}).items():
            dg = config.create_group(device)
            data, stamps = dg.create_group("data"), dg.create_group("timestamps")
            specs = conf.get("data_keys", {})
            for key, value in conf.get("data", {}).items():
                ds = _value_dataset(data, key, value, specs.get(key, {}))
                write_attrs(ds, specs.get(key, {}), subgroups=False)
                if key in conf.get("timestamps", {}):
                    stamps.create_dataset(key, data=float(conf["timestamps"][key]))

    def event(self, doc: dict) -> None:
        name = self._streams[doc["descriptor"]]
        g = self._f["streams"][name]
        n = g["seq_num"].shape[0]
        for ds, value in ((g["seq_num"], doc["seq_num"]), (g["time"], doc["time"])):
            ds.resize(n + 1, axis=0)
            ds[n] = value
        for key in self._event_keys[name]:
            ds, ts = g["data"][key], g["timestamps"][key]
            ds.resize(n + 1, axis=0)
            ts.resize(n + 1, axis=0)
            if key in doc["data"]:
                _put(ds, n, doc["data"][key], key)
            ts[n] = doc["timestamps"].get(key, np.nan)
        self._f.flush()

    # -- frames by reference ------------------------------------------------------------
    def stream_resource(self, doc: dict) -> None:
        # Keep what locates the data. Other parameters are reader hints (chunk_shape,
        # swmr, locking) that the catalog rewrites, so live and export would differ.
        given = doc.get("parameters", {})
        params = {k: given[k] for k in LOCATING_PARAMETERS if k in given}
        params.setdefault("join_method", "stack")
        res = SourceResource(uri=doc["uri"], mimetype=doc["mimetype"], parameters=params)
        self._resources[doc["uid"]] = (doc["data_key"], res)

    def stream_datum(self, doc: dict) -> None:
        key, res = self._resources[doc["stream_resource"]]
        name = self._streams[doc["descriptor"]]
        linked = self._linked.setdefault((name, key), [])
        if not any(r is res for r in linked):
            linked.append(res)
        res.ranges.append((int(doc["indices"]["start"]), int(doc["indices"]["stop"])))
        g = self._f["streams"][name]
        spec = self._data_keys[name].get(key, {})
        linkable = [r for r in linked if r.linkable]
        if len(linkable) < len(linked):
            log.info("run file %s: %s of stream %s is not an HDF5 dataset (%s); "
                     "only its reference is recorded", self.path.name, key, name,
                     linked[-1].mimetype)
        ds = write_virtual(g["data"], key, linkable, unit_shape(spec), numpy_dtype(spec),
                           self.path.parent)
        write_attrs(ds, spec, subgroups=False)
        ext = g["external"].require_group(key)
        refs = [{"uri": r.uri, "file": _rel(r, self.path.parent), "dataset": r.dataset,
                 "mimetype": r.mimetype, "parameters": r.parameters,
                 "indices": [list(x) for x in r.merged()]} for r in linked]
        write_attrs(ext, {"resources": refs, "file": refs[0]["file"],
                          "dataset": refs[0]["dataset"]}, subgroups=False)
        self._f.flush()

    # -- the end ----------------------------------------------------------------------
    def stop(self, doc: dict) -> None:
        _write_stop(self._f, self._start, doc)
        self.close()

    def close(self) -> None:
        """Close; a file closed without a stop document says ``exit_status=incomplete``."""
        if self.closed:
            return
        if "stop" not in self._f:
            self._f.attrs["exit_status"] = INCOMPLETE
            self._f.attrs["reason"] = "no stop document was received"
            write_nexus(self._f, self._start, None)
        self._f.flush()
        self._f.close()

    def abandon(self, reason: str) -> None:
        """Close after a failed write (its disk filled): the file says ``incomplete``
        and ``reason``; no more is written to it."""
        if self.closed:
            return
        try:
            self._f.attrs["exit_status"] = INCOMPLETE
            self._f.attrs["reason"] = reason
            self._f.flush()
        finally:
            self._f.close()


def _write_stop(f: h5py.File, start: dict, doc: dict) -> None:
    """The stop document into ``/stop`` and the root's exit status and reason."""
    doc = {k: v for k, v in doc.items() if k != "_run_normalizer_notes"}
    group = f.create_group("stop")
    write_attrs(group, doc)
    group.attrs["document"] = to_json(doc)
    f.attrs["exit_status"] = doc.get("exit_status", "")
    f.attrs["reason"] = doc.get("reason", "")
    write_nexus(f, start, doc)


def close_left_open(path: str | Path, stop: dict) -> bool:
    """Write ``stop`` into a run file whose process died while the run went (it says
    ``running`` and has no ``/stop``); True if it did. The catalog's repair gives the
    run a stop document (`beamline_ls.run_repair`); without this, the run file went on
    saying ``running`` for good, and every h5py or MATLAB reader believed it."""
    import json

    with h5py.File(path, "r+") as f:
        status = f.attrs.get("exit_status", "")
        if isinstance(status, bytes):
            status = status.decode()
        if status != RUNNING or "stop" in f:
            return False
        _write_stop(f, json.loads(f["start"].attrs["document"]), stop)
    return True


def _rel(res: SourceResource, run_dir: Path) -> str:
    try:
        return relative_to(uri_to_path(res.uri), run_dir)
    except ValueError:
        return res.uri


def _value_dataset(group: h5py.Group, key: str, value: Any, spec: dict) -> h5py.Dataset:
    """A scalar or array dataset holding one configuration value."""
    native = native_attr(value)
    if native is None:
        ds = group.create_dataset(key, data=to_json(value), dtype=h5py.string_dtype())
        ds.attrs["json"] = True
        return ds
    if isinstance(native, str):
        return group.create_dataset(key, data=native, dtype=h5py.string_dtype())
    return group.create_dataset(key, data=native)


def _put(ds: h5py.Dataset, index: int, value: Any, key: str) -> None:
    try:
        ds[index] = value
    except (TypeError, ValueError) as exc:
        if h5py.check_string_dtype(ds.dtype):
            ds[index] = to_json(value)
            return
        raise ValueError(f"cannot store {key}={value!r} in the run file: {exc}") from exc
