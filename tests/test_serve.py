"""``beamline-ls serve`` (issue 15, item 2): the catalog over HTTP, read by a stock tiled
client in another process with the API key; frames read through a path map on a host
that mounts the data elsewhere."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
from pg_cluster import PostgresCluster, postgres_bin

from beamline_ls.epics_env import free_port

KEY = "servekey42"


class Server:
    """``beamline-ls serve`` as a child process, stopped by its PID."""

    def __init__(self, data_dir: Path, *extra: str, key: str = KEY,
                 tiled_config: Path | None = None):
        """``tiled_config``: tiled's own ``tiled serve config`` with that file instead."""
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"serve-{self.port}.log"
        if tiled_config is None:
            command = [sys.executable, "-m", "beamline_ls.cli", "serve", "--data-dir",
                       str(data_dir), *extra]
        else:
            command = [str(Path(sys.executable).with_name("tiled")), "serve", "config",
                       str(tiled_config), "--host", "127.0.0.1"]
        self.ours = tiled_config is None
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port), "--api-key", key],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                httpx.get(f"{self.uri}/api/v1/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError(f"server did not answer: {self.log.read_text()}")

    def stop(self) -> None:
        """Ctrl-C, as a user stops ``beamline-ls serve`` (SIGTERM for tiled's own): it
        must end cleanly, without a traceback (it printed uvicorn's re-raised
        KeyboardInterrupt)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if self.ours else signal.SIGTERM)
            self.proc.wait(30)
            if self.ours:
                text = self.log.read_text()
                assert self.proc.returncode == 0 and "Traceback" not in text, text
                assert "stopped serving the catalog" in text, text


def run_one_scan(session, scope) -> str:
    from plans import volumetric_scan

    (uid,) = session.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 5, 10.0, 50.0, 2.0,
                                        md={"sample_name": "served fish"})).run_start_uids
    session.flush()
    return uid


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, data_dir, scope, session, settings):
    """A run in the catalog and a server for it: the SQLite catalog in the data
    directory, or the facility's PostgreSQL (Debian's server, started here)."""
    if request.param == "sqlite":
        uid = run_one_scan(session, scope)
        server = Server(data_dir)
        yield {"server": server, "uid": uid, "embedded": session.catalog, "args": [],
               "settings": settings}
        server.stop()
        return
    if postgres_bin() is None:
        pytest.skip("needs Debian's postgresql (.ci/run installs it)")
    from beamline_ls.session import make_session

    cluster = PostgresCluster().start()
    pg_session = server = None
    try:
        pg_settings = dataclasses.replace(settings, catalog_database=cluster.uri)
        pg_session = make_session(pg_settings, progress_bar=False)
        uid = run_one_scan(pg_session, scope)
        args = ["--database", cluster.uri]
        server = Server(data_dir, *args)
        yield {"server": server, "uid": uid, "embedded": pg_session.catalog, "args": args,
               "settings": pg_settings}
    finally:
        if server is not None:
            server.stop()
        if pg_session is not None:
            pg_session.close()
        cluster.stop()


def remote(server, key=KEY):
    from beamline_ls.catalog import open_catalog

    return open_catalog(uri=server.uri, api_key=key)


def test_a_data_user_gets_the_bluesky_run_api_over_http(served):
    from bluesky_tiled_plugins.queries import ScanID, TimeRange
    from tiled.queries import Key

    served_run = served["uid"]
    cat = remote(served["server"])
    assert type(cat).__name__ == "CatalogOfBlueskyRuns"
    run = cat[served_run]
    assert cat[-1].start["uid"] == served_run  # the newest run, by position
    assert run.start["sample_name"] == "served fish"
    assert served_run in cat.search(Key("sample_name") == "served fish")
    assert served_run in cat.search(Key("plan_name") == "volumetric_scan")
    assert list(cat.search(ScanID(run.start["scan_id"]))) == [served_run]
    assert served_run in cat.search(TimeRange(since=run.start["time"] - 60))
    assert served_run not in cat.search(TimeRange(until=run.start["time"] - 60))

    frames = run["primary"]["camera_image"]
    assert frames.shape[:2] == (2, 5)
    embedded = served["embedded"][served_run]["primary"]["camera_image"]
    assert np.array_equal(frames[1, 4], embedded[1, 4])  # one plane, sliced server-side
    frame_ids = run["primary"]["camera_frame_id"].read()
    assert frame_ids.shape == (2, 5) and sorted(frame_ids.ravel()) == list(frame_ids.ravel())

    names = [name for name, _ in run.documents()]
    assert names[0] == "start" and names[-1] == "stop"

    legacy = cat.v1  # databroker's v1 API, for scripts written against it
    assert legacy[served_run].start["sample_name"] == "served fish"
    assert served_run in [h.start["uid"] for h in legacy(sample_name="served fish")]
    # ... and using it leaves this and every later catalog on the current API
    assert "camera_image" in cat[served_run]["primary"]
    assert "camera_image" in remote(served["server"])[served_run]["primary"]


def test_tileds_own_server_serves_the_catalog_from_a_written_config(served, data_dir,
                                                                    tmp_path):
    """A facility that runs tiled itself (its own log-in, proxy, access policy) serves
    the catalog with ``tiled serve config``, from the configuration ``beamline-ls
    serve --write-tiled-config`` writes; a stock tiled client gets the bluesky runs."""
    from tiled.client import from_uri
    from tiled.queries import Key

    config = tmp_path / "tiled.yml"
    written = subprocess.run(
        [sys.executable, "-m", "beamline_ls.cli", "serve", "--data-dir", str(data_dir),
         *served["args"], "--write-tiled-config", str(config)],
        capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr[-2000:]
    server = Server(data_dir, tiled_config=config)
    try:
        cat = from_uri(server.uri, api_key=KEY)
        uid = served["uid"]
        assert type(cat).__name__ == "CatalogOfBlueskyRuns"
        assert uid in cat.search(Key("sample_name") == "served fish")
        run = cat[uid]
        embedded = served["embedded"][uid]["primary"]["camera_image"]
        assert np.array_equal(run["primary"]["camera_image"][1, 4], embedded[1, 4])
        names = [name for name, _ in run.documents()]
        assert names[0] == "start" and names[-1] == "stop"
    finally:
        server.stop()


def test_lazy_catalogs_give_dask_arrays_equal_to_the_eager_read(served):
    import dask.array

    from beamline_ls.catalog import open_catalog

    uid = served["uid"]
    eager = served["embedded"][uid]["primary"]["camera_image"][1]
    for cat in (open_catalog(settings=served["settings"], lazy=True),
                open_catalog(uri=served["server"].uri, api_key=KEY, lazy=True)):
        stream = cat[uid]["primary"].read()  # an xarray Dataset, nothing loaded yet
        volumes = stream["camera_image"].data
        assert isinstance(volumes, dask.array.Array)
        assert volumes.shape[:2] == (2, 5)
        assert np.array_equal(volumes[1].compute(), eager)


def test_without_the_api_key_nothing_is_served(served):
    server = served["server"]
    for headers in ({}, {"Authorization": "Apikey wrongkey"}):
        r = httpx.get(f"{server.uri}/api/v1/search/", headers=headers, timeout=10)
        assert r.status_code == 401, r.text
    r = httpx.get(f"{server.uri}/api/v1/search/", headers={"Authorization": f"Apikey {KEY}"},
                  timeout=10)
    assert r.status_code == 200


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_a_servers_address_given_where_a_data_directory_goes_opens_the_server(served):
    """``open_catalog("http://host:port", api_key=...)``, the form a data user writes
    first, was read as a directory named "http:" (FileNotFoundError after 4.6 s, the key
    silently dropped). A key for an embedded catalog, which checks none, is refused."""
    from beamline_ls.catalog import open_catalog

    cat = open_catalog(served["server"].uri, api_key=KEY)
    assert cat[-1].start["uid"] == served["uid"]
    with pytest.raises(ValueError, match="api_key is for a server"):
        open_catalog(served["settings"].data_dir, api_key=KEY)
    with pytest.raises(ValueError, match="not both"):
        open_catalog(served["settings"].data_dir, uri=served["server"].uri)


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_a_frame_file_the_server_cannot_read_is_named_to_the_remote_user(served, scope,
                                                                         session):
    """A missing or damaged frame file reached the remote user as a bare "500 Internal
    Server Error" with a correlation ID, after tiled's client had retried it for 28 s;
    the embedded catalog names the file. Over HTTP now too, and not retried."""
    from tiled.client.utils import ClientError

    from plans import planar_scan

    (uid,) = session.RE(planar_scan(scope.camera, scope.scanboard, 6, 40.0,
                                    0.002)).run_start_uids
    session.flush()
    path = Path(scope.camera.hdf.full_file_name.get(use_monitor=False))
    image = remote(served["server"])[uid]["primary"]["camera_image"]
    kept = path.with_name(path.name + ".kept")
    shutil.copy2(path, kept)
    try:
        path.unlink()
        with pytest.raises(ClientError) as missing:
            image[2]
        with open(kept, "rb") as whole, open(path, "wb") as cut:
            cut.write(whole.read()[:os.path.getsize(kept) * 2 // 3])
        with pytest.raises(ClientError) as damaged:
            image.read()
    finally:
        shutil.move(kept, path)
    assert missing.value.response.status_code == 404
    assert f"cannot read frame file {path}" in str(missing.value)
    assert damaged.value.response.status_code == 422
    assert f"frame file {path} is damaged" in str(damaged.value)
    assert image[5].any()  # restored, it reads again


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_export_from_a_server_takes_its_api_key(served, tmp_path):
    """``beamline-ls export --catalog http://...`` needs the server's key: without it,
    one line saying how to give it; with ``--api-key``, the run file."""
    def export(*extra):
        return subprocess.run(
            [sys.executable, "-m", "beamline_ls.cli", "export", served["uid"][:8],
             "--catalog", served["server"].uri, "--to", str(tmp_path / "run.h5"), *extra],
            capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if k != "TILED_API_KEY"})

    refused = export()
    assert refused.returncode == 2
    assert "give --api-key, or set TILED_API_KEY" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    wrong = export("--api-key", "not-the-key")
    assert wrong.returncode == 2
    assert "the server did not accept the API key given" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    done = export("--api-key", KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "run.h5").is_file()


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_a_server_that_mounts_the_data_elsewhere_reads_through_the_path_map(
        data_dir, served, tmp_path):
    """The catalog names the files where the acquisition host wrote them; a server that
    sees them under another directory reads them there, and only there. (The mapping
    is in the frame adapter, the same for either database: checked once.)"""
    moved = tmp_path / "mnt" / "lightsheet"
    shutil.copytree(data_dir / "catalog", moved / "catalog")
    served_run = served["uid"]
    run = served["embedded"][served_run]
    (resource,) = [doc for name, doc in run.documents() if name == "stream_resource"
                   and doc["data_key"] == "camera_image"]
    written = Path(resource["uri"].removeprefix("file://localhost"))
    relative = written.relative_to(data_dir)
    copy = moved / relative
    copy.parent.mkdir(parents=True)
    shutil.copy2(written, copy)
    with h5py.File(copy, "r+") as f:  # mark the copy so the test sees which file is read
        f[resource["parameters"]["dataset"]][0, :4, :4] = 4321

    s = Server(moved, *served["args"], "--map-path", f"{data_dir}={moved}")
    try:
        frames = remote(s)[served_run]["primary"]["camera_image"]
        assert (frames[0, 0][:4, :4] == 4321).all()
    finally:
        s.stop()


def test_serve_refuses_a_directory_without_a_catalog_and_a_bad_map(tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "beamline_ls.cli", "serve", *args],
                              capture_output=True, text=True, timeout=120)

    done = serve("--data-dir", str(tmp_path), "--port", str(free_port()))
    assert done.returncode == 2 and "no catalog under" in done.stderr + done.stdout
    done = serve("--data-dir", str(tmp_path), "--map-path", "relative=/x")
    assert done.returncode == 2 and "absolute" in done.stderr + done.stdout


def test_a_catalog_database_that_cannot_be_reached_is_one_line_before_serving(
        tmp_path, caplog):
    """Not a SUCCESS line and then uvicorn's traceback: the database named, exit 2."""
    from beamline_ls.serve import main as serve_main

    database = f"postgresql://lightsheet:secret@127.0.0.1:{free_port()}/catalog"
    code = serve_main(["--data-dir", str(tmp_path / "data"), "--database", database,
                       "--port", str(free_port())])
    assert code == 2
    assert "cannot reach the catalog database postgresql+asyncpg://lightsheet:***@" \
           "127.0.0.1" in caplog.text
    assert "secret" not in caplog.text and "serving the catalog" not in caplog.text


def test_an_empty_catalog_database_is_one_line_before_serving(tmp_path, caplog):
    """A facility's new, empty PostgreSQL database: serve announced SUCCESS, then
    printed tiled's 60-line UninitializedDatabase traceback and exited 3. Now one line
    saying what creates the catalog, exit 2, nothing announced."""
    if postgres_bin() is None:
        pytest.skip("needs Debian's postgresql (.ci/run installs it)")
    from beamline_ls.serve import main as serve_main

    cluster = PostgresCluster().start()
    try:
        code = serve_main(["--data-dir", str(tmp_path / "data"), "--database", cluster.uri,
                           "--port", str(free_port())])
    finally:
        cluster.stop()
    assert code == 2
    assert "no catalog in the database postgresql+asyncpg://" in caplog.text
    assert "a session with this configuration creates it" in caplog.text
    assert "serving the catalog" not in caplog.text
    assert "Traceback" not in caplog.text
