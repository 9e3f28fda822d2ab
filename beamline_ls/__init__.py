"""beamline-ls: light-sheet microscope acquisition built like a facility beamline.

Data users need only :func:`open_catalog`::

    from beamline_ls import open_catalog
    cat = open_catalog("/path/to/data")
    run = cat[-1]
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beamline-ls")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def open_catalog(data_dir=None, **kwargs):
    """Open the run catalog under ``data_dir`` (see :func:`beamline_ls.catalog.open_catalog`)."""
    from beamline_ls.catalog import open_catalog as _open

    return _open(data_dir, **kwargs)


__all__ = ["__version__", "open_catalog"]
