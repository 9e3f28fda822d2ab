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

import copy
from pathlib import Path
from typing import Any

from tiled.adapters.hdf5 import HDF5Adapter, HDF5ArrayAdapter
from tiled.structures.core import StructureFamily
from tiled.structures.data_source import Asset
from tiled.utils import ensure_uri, path_from_uri

from beamline_ls.damage import DamagedFrameFile, describe_failure


class FrameFileAdapter(HDF5ArrayAdapter):
    """tiled's HDF5 array adapter whose open and read errors name the file."""

    _files: list[str] = []  # set per instance by from_catalog
    # (acquisition-host directory, this host's directory): a server on another host
    path_map: tuple[tuple[Path, Path], ...] = ()

    @classmethod
    def with_path_map(cls, path_map: dict[Path, Path]) -> type[FrameFileAdapter]:
        """This adapter reading each file at its place on this host (longest match)."""
        pairs = sorted(((Path(a), Path(b)) for a, b in path_map.items()),
                       key=lambda pair: len(pair[0].parts), reverse=True)
        return type(cls.__name__, (cls,), {"path_map": tuple(pairs)})

    @classmethod
    def _here(cls, uri: str | None) -> str | None:
        if not uri or not cls.path_map or not uri.startswith("file:"):
            return uri
        path = Path(path_from_uri(uri))
        for src, dst in cls.path_map:
            if path.is_relative_to(src):
                return ensure_uri(str(dst / path.relative_to(src)))
        return uri

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, **parameters: Any) -> Any:
        if cls.path_map:
            # a copy naming this host's paths (the catalog's own rows stay as written)
            data_source = copy.copy(data_source)
            data_source.assets = [
                Asset(data_uri=cls._here(a.data_uri), is_directory=a.is_directory,
                      parameter=a.parameter, num=a.num, id=a.id)
                for a in data_source.assets]
            if parameters.get("data_uris") is not None:
                parameters["data_uris"] = [cls._here(u) for u in parameters["data_uris"]]
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
