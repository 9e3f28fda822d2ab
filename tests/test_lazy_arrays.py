"""Lazy catalogs give dask arrays chunked by whole volumes (or blocks of frames) on the
server's chunk boundaries, so computing one plane fetches one chunk, not the run."""

from __future__ import annotations

import numpy as np
import pytest
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.client import from_context
from tiled.client.context import Context
from tiled.server.app import build_app

from beamline_ls import lazy_arrays
from beamline_ls.catalog import catalog_clients

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

VOLUMES = np.arange(6 * 4 * 64 * 64, dtype=np.uint16).reshape(6, 4, 64, 64)  # 8 KiB planes


@pytest.fixture(scope="module")
def served():
    adapter = ArrayAdapter.from_array(VOLUMES, chunks=(1, 1, 64, 64))  # a chunk per plane
    context = Context.from_app(build_app(MapAdapter({"volumes": adapter})))
    yield from_context(context, structure_clients=catalog_clients(lazy=True))["volumes"]
    context.close()


@pytest.mark.parametrize(("bound", "chunks"), [
    (1 << 20, ((6,), (4,))),  # the whole run fits one chunk
    (80 << 10, ((2, 2, 2), (4,))),  # whole volumes (32 KiB each), two to a chunk
    (16 << 10, ((1,) * 6, (2, 2))),  # a volume is over the bound: two planes a chunk
])
def test_chunks_follow_the_bound_and_the_servers_chunks(served, monkeypatch, bound, chunks):
    monkeypatch.setattr(lazy_arrays, "CHUNK_BYTES", bound)
    lazy = served.read()
    assert lazy.chunks[:2] == chunks
    assert lazy.chunks[2:] == ((64,), (64,))
    assert np.array_equal(lazy.compute(), VOLUMES)
    assert np.array_equal(lazy[4, 1].compute(), VOLUMES[4, 1])
    assert np.array_equal(served.read(slice=(3, slice(1, 3))).compute(), VOLUMES[3, 1:3])


def test_declared_chunks_over_the_response_limit_read_right(served, monkeypatch):
    # tiled splits such a chunk itself; its pieces cannot be combined with others, so
    # the whole array is left to tiled's own read (values must still be the run's)
    monkeypatch.setattr(lazy_arrays, "CHUNK_BYTES", 1)
    monkeypatch.setattr(lazy_arrays.ChunkedDaskArrayClient, "RESPONSE_BYTESIZE_LIMIT", 8192)
    lazy = served.read()
    assert np.array_equal(lazy.compute(), VOLUMES)
    assert np.array_equal(lazy[5, 3].compute(), VOLUMES[5, 3])
