"""Workarounds for tiled, in one place.

1. Keep ``cat.v1`` / ``run.v2`` from changing every catalog (below).
2. :func:`replace_data_source`: tiled's client has no call that replaces a node's data
   source (its structure), though the server's API has the route
   (``PUT /api/v1/data_source/{path}``, used by bluesky-tiled-plugins' own writer to
   extend a stream's arrays). Guarded by the tiled versions pinned (0.2.x).
3. :func:`alias_storage`: tiled finds the storage of a table (the summary stream's
   Events, in ``catalog/storage.sqlite``) by the URI its asset recorded, which names
   the directory the catalog was made in; a copied or moved data directory has it
   elsewhere, and tiled has no public way to say so (its registry keys storages by
   their own URI). Guarded by the registry tiled 0.2.x has.


bluesky-tiled-plugins switches a run's API (``CatalogOfBlueskyRuns.v2``/``v3``,
``BlueskyRunV3.v2``, used by databroker's ``.v1``) by ``copy.copy`` of the client's
``structure_clients`` map and ``set`` on the copy. tiled's ``OneShotCachedMap`` copies
shallowly: the copy shares its dictionary, so the ``set`` rewrites the process-wide
default. After one ``cat.v1[...]`` every catalog of the process showed runs in the v2
layout (``run["primary"]`` with ``data``/``timestamps``/``config`` instead of
``camera_image``...). Measured with tiled 0.2.20 and bluesky-tiled-plugins 2.0.12.

:func:`structure_clients` hands each catalog its own map whose copies are independent
(built through the public Mapping API). The guard tests the behaviour itself: where a
copied map no longer writes through, tiled's own map is used unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

from tiled.utils import OneShotCachedMap


def _shallow_copy_writes_through() -> bool:
    original = OneShotCachedMap(probe=lambda: "original")
    copied = copy.copy(original)
    copied.set("probe", lambda: "copy")
    return original["probe"] == "copy"


COPY_WRITES_THROUGH = _shallow_copy_writes_through()


class IndependentMap(OneShotCachedMap):
    """A ``OneShotCachedMap`` whose ``copy.copy`` is a map of its own."""

    __slots__ = ()

    def __copy__(self) -> IndependentMap:
        return _lazy_copy(self)


def _lazy_copy(source: OneShotCachedMap) -> IndependentMap:
    """A map of its own with ``source``'s entries, not evaluating any of them.

    Through the pickle protocol (``__getstate__`` gives the key -> factory-or-value
    dictionary): evaluating every entry, as a copy through ``items()`` does, imports
    the array, table and awkward clients (dask, pandas, awkward: ~0.3 s) that a
    catalog of runs may never need."""
    copied = IndependentMap.__new__(IndependentMap)
    copied.__setstate__(dict(source.__getstate__()))
    return copied


def structure_clients(kind: str = "numpy") -> Any:
    """What to pass as ``structure_clients`` for a catalog client (``numpy``/``dask``)."""
    if not COPY_WRITES_THROUGH:
        return kind
    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH, Container

    # the spec clients (CatalogOfBlueskyRuns, BlueskyRun...) join the default map on
    # discovery, which tiled otherwise does at the first client it makes
    Container.discover_clients_from_entrypoints()
    return _lazy_copy(DEFAULT_STRUCTURE_CLIENT_DISPATCH[kind])


def replace_data_source(node: Any, data_source: Any) -> None:
    """Replace ``node``'s data source (same id) with ``data_source``: its structure,
    parameters and assets, through the server's data-source route."""
    import tiled
    from packaging.version import Version
    from tiled.client.utils import handle_error
    from tiled.utils import safe_json_dump

    if not Version("0.2") <= Version(tiled.__version__) < Version("0.3"):
        raise RuntimeError(f"replace_data_source is written for tiled 0.2.x, this is "
                           f"{tiled.__version__}: check tiled's client for a public call")
    handle_error(node.context.http_client.put(
        node.uri.replace("/metadata/", "/data_source/", 1),
        content=safe_json_dump({"data_source": data_source})))


def alias_storage(recorded_uri: str, uri: str) -> bool:
    """Let assets recorded under ``recorded_uri`` (where the catalog was made) be read
    from the storage registered at ``uri`` (where it is now). False, with nothing
    changed, where tiled's registry is not the one this was written for."""
    import tiled.storage as storage

    registry = getattr(storage, "_STORAGE", None)
    key = getattr(storage, "storage_registry_key", None)
    if not isinstance(registry, dict) or key is None:
        return False
    target = storage.parse_storage(uri)  # the instance tiled itself uses for it
    storage.register_storage(target)
    registry[key(storage.parse_storage(recorded_uri).uri)] = target
    return True
