"""Where a catalog's data directory was made, so a copied or moved one still reads.

Why: the catalog names every frame file by its absolute path on the acquisition host
(tiled's data sources are URIs). A scientist who copies the data folder to an
analysis disk, or an administrator who moves it, got "Refusing to serve
file://localhost/<old path> ... outside the readable storage area" for every frame,
while the run files beside it (relative links) kept working. The catalog therefore
records the data directory it was made in (``catalog/origin.json``, written with a new
database); opened from anywhere else, its files are read through a path map from that
directory to the one it is in now, the same map ``[path_map]`` gives a server on
another host.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

ORIGIN_FILE = "origin.json"


def record_origin(catalog_dir: Path, data_dir: Path) -> None:
    """Note ``data_dir`` as the directory the catalog in ``catalog_dir`` was made in
    (once: an existing record is kept)."""
    path = catalog_dir / ORIGIN_FILE
    if not path.exists():
        path.write_text(json.dumps({"data_dir": str(data_dir.resolve())}) + "\n")


def moved_from(catalog_dir: Path, data_dir: Path) -> Path | None:
    """The directory the catalog was made in, when it is not ``data_dir`` (copied or
    moved since); None when it is, or when no record exists (catalogs made before)."""
    try:
        origin = Path(json.loads((catalog_dir / ORIGIN_FILE).read_text())["data_dir"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s unreadable (%s): frames are read where the catalog names them",
                    catalog_dir / ORIGIN_FILE, exc)
        return None
    here = data_dir.resolve()
    if origin == here or origin in here.parents or here in origin.parents:
        return None
    return origin


def with_origin_map(path_map: dict[Path, Path], catalog_dir: Path, data_dir: Path
                    ) -> dict[Path, Path]:
    """``path_map`` plus, for a copied or moved catalog, its old data directory read
    as the one it is in now (a map the configuration gives for it wins)."""
    origin = moved_from(catalog_dir, data_dir)
    if origin is None or origin in path_map:
        return path_map
    log.info("the catalog was made in %s: its frame files are read under %s", origin,
             data_dir)
    return {**path_map, origin: data_dir.resolve()}
