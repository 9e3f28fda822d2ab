"""The catalog's reader of HDF5 frame files: tiled's own adapter, with errors that
name the file.

Why: a damaged frame file (truncated by a full disk or a copy cut short, or a chunk
whose fletcher32 checksum no longer matches) makes tiled's HDF5 adapter raise h5py's
bare "Can't synchronously read data (filter returned failure ...)", which names
neither the file nor the run. A scientist reading ``run["primary"]["camera_image"]``
needs to know which file to restore (wording: :mod:`beamline_ls.damage`).

Reading: where the files hold the frames as the catalog's structure says (every run
this system writes), the frames asked for are read straight from the files
(:class:`beamline_ls.frame_stack.FrameStack`) instead of through the dask graph tiled
builds per request, which cost more than the rest of a one-plane request on a
10,000-frame run. Anything else (a slice or squeeze parameter, shapes that differ)
goes through tiled's own reading, unchanged.

Registered for ``application/x-hdf5`` by :func:`beamline_ls.catalog.open_embedded_catalog`
(and usable from a tiled server's configuration as
``beamline_ls.frame_adapter:FrameFileAdapter``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tiled.adapters.hdf5 import SWMR_DEFAULT, HDF5Adapter, HDF5ArrayAdapter, get_hdf5_attrs
from tiled.ndslice import NDBlock, NDSlice
from tiled.structures.core import StructureFamily
from tiled.structures.data_source import Asset
from tiled.utils import ensure_uri, path_from_uri

from beamline_ls.damage import DamagedFrameFile, describe_failure
from beamline_ls.frame_stack import FrameStack

#: data-source parameters the direct reader understands (the ones our writers set)
DIRECT_PARAMETERS = {"swmr", "locking", "libver"}


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
            adapter = cls._direct(data_source, node, files, dataset, parameters) or \
                super().from_catalog(data_source, node, dataset=dataset, **parameters)
        except (OSError, RuntimeError, KeyError) as exc:
            raise DamagedFrameFile(describe_failure(files, exc)) from exc
        adapter._files = files
        return adapter

    @classmethod
    def _direct(cls, data_source: Any, node: Any, files: list[str], dataset: str | None,
                parameters: dict[str, Any]) -> FrameFileAdapter | None:
        """This adapter over a :class:`FrameStack`, or None where tiled's reader is needed."""
        if set(parameters) - DIRECT_PARAMETERS:
            return None
        options = {"swmr": parameters.get("swmr", SWMR_DEFAULT),
                   "libver": parameters.get("libver", "latest"),
                   "locking": parameters.get("locking")}
        structure = data_source.structure
        stack = FrameStack(files, dataset, structure.shape, **options)
        if not stack.fits() or stack.dtype != structure.data_type.to_numpy_dtype():
            return None
        metadata = copy.deepcopy(node.metadata_)
        metadata.update(get_hdf5_attrs(ensure_uri(files[0]), dataset, **options))
        return cls(stack, structure, metadata=metadata, specs=node.specs)

    def read(self, slice: NDSlice = NDSlice(...)) -> Any:  # tiled calls it so
        try:
            if isinstance(self._array, FrameStack):
                return self._array.read(slice)
            return super().read(slice)
        except (OSError, RuntimeError) as exc:
            raise DamagedFrameFile(describe_failure(self._files, exc)) from exc

    def read_block(self, block: NDBlock, slice: NDSlice = NDSlice(...)) -> Any:
        try:
            if isinstance(self._array, FrameStack):
                whole = self._array.read(block.slice_from_chunks(self._structure.chunks))
                return whole[tuple(slice)] if slice else whole
            return super().read_block(block, slice)
        except (OSError, RuntimeError) as exc:
            raise DamagedFrameFile(describe_failure(self._files, exc)) from exc
