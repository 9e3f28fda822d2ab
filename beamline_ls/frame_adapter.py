"""The catalog's reader of HDF5 frame files: tiled's own adapter, with errors that
name the file.

Why: a damaged frame file (truncated by a full disk or a copy cut short, or a chunk
whose fletcher32 checksum no longer matches) makes tiled's HDF5 adapter raise h5py's
bare "Can't synchronously read data (filter returned failure ...)", which names
neither the file nor the run. A scientist reading ``run["primary"]["camera_image"]``
needs to know which file to restore (wording: :mod:`beamline_ls.damage`). Reading
itself is unchanged: the array is tiled's lazy dask array over the files; only
failures are reworded.

Registered for ``application/x-hdf5`` by :func:`beamline_ls.catalog.open_embedded_catalog`
(and usable from a tiled server's configuration as
``beamline_ls.frame_adapter:FrameFileAdapter``).
"""

from __future__ import annotations

from typing import Any

from tiled.adapters.hdf5 import HDF5Adapter, HDF5ArrayAdapter
from tiled.structures.core import StructureFamily
from tiled.utils import path_from_uri

from beamline_ls.damage import DamagedFrameFile, describe_failure


class FrameFileAdapter(HDF5ArrayAdapter):
    """tiled's HDF5 array adapter whose open and read errors name the file."""

    _files: list[str] = []  # set per instance by from_catalog

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, **parameters: Any) -> Any:
        if data_source.structure_family != StructureFamily.array:
            return HDF5Adapter.from_catalog(data_source, node, **parameters)
        uris = [a.data_uri for a in data_source.assets if a.parameter == "data_uris"]
        files = [str(path_from_uri(u)) for u in uris or [data_source.assets[0].data_uri]]
        dataset = parameters.pop("dataset", None)
        if dataset is not None and not isinstance(dataset, str):
            dataset = "/".join(dataset)
        try:
            adapter = super().from_catalog(data_source, node, dataset=dataset, **parameters)
        except (OSError, RuntimeError, KeyError) as exc:
            raise DamagedFrameFile(describe_failure(files, exc)) from exc
        adapter._files = files
        return adapter

    def read(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read(*args, **kwargs)
        except (OSError, RuntimeError) as exc:
            raise DamagedFrameFile(describe_failure(self._files, exc)) from exc

    def read_block(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_block(*args, **kwargs)
        except (OSError, RuntimeError) as exc:
            raise DamagedFrameFile(describe_failure(self._files, exc)) from exc
