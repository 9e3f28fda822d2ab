"""The bluesky queue server as a facility runs it (issue 15, item 1): ``beamline-ls
queue`` starts Debian's Redis, the RE Manager with the IPython profile and
bluesky-httpserver with an API key, all on loopback, against a real simulated IOC;
stock clients only (bluesky-queueserver-api over HTTP, the ``qserver`` CLI over 0MQ)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROI, wait_for

from beamline_ls.epics_env import IocProcess, free_port
from beamline_ls.queue import (
    PLANS_DEVICES_FILE,
    PROFILE_STARTUP,
    QueueConfig,
    QueueError,
    QueueServer,
)

KEY = "testkey0123456789"
PREFIX = "QTST:"

# alone: the RE Manager, its worker, Redis and the HTTP server beside a scan; with the
# second test process beside them the manager answered "busy" once in five runs
pytestmark = [pytest.mark.alone, pytest.mark.skipif(
    subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0,
    reason="needs Debian's redis-server (.ci/run installs it)")]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def queue(epics, tmp_path_factory):
    """An IOC on the spare port and ``beamline-ls queue`` for it, as a child process."""
    data = tmp_path_factory.mktemp("queue")
    ioc_epics = epics.for_server(epics.extra_server_ports[0])
    ioc = IocProcess(ioc_epics, PREFIX, data, data / "ioc.log").start()
    # the IOC starts at full frame (2048 x 2048): the simulator cannot render that at
    # the scan's rate on a 2-core machine, and the queue is what is tested here
    from caproto.sync.client import write

    for axis in ("X", "Y"):
        write(f"{PREFIX}cam1:Size{axis}", ROI, notify=True, timeout=10)
    ports = {"http": free_port(), "control": free_port(), "info": free_port(),
             "redis": free_port()}
    log = data / "queue.out"
    cmd = [sys.executable, "-m", "beamline_ls.cli", "queue", "--prefix", PREFIX,
           "--data-dir", str(data), "--api-key", KEY, "--port", str(ports["http"]),
           "--zmq-control-port", str(ports["control"]),
           "--zmq-info-port", str(ports["info"]), "--redis-port", str(ports["redis"])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **ioc_epics.env()},
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "queue server ready" in log.read_text() or proc.poll() is not None,
                 timeout=240, what="the queue server")
        assert proc.poll() is None, log.read_text()
        yield {"proc": proc, "data": data, "log": log, **ports}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(90)
        ioc.stop()


def http_api(queue, key: str | None = KEY):
    from bluesky_queueserver_api.http import REManagerAPI

    api = REManagerAPI(http_server_uri=f"http://127.0.0.1:{queue['http']}",
                       http_auth_provider=None)
    if key is not None:
        api.set_authorization_key(api_key=key)
    return api


def test_a_volumetric_scan_queued_over_http_with_the_api_key_lands_in_the_catalog(queue):
    from bluesky_queueserver_api import BPlan

    from beamline_ls.catalog import open_catalog

    api = http_api(queue)
    assert api.status()["worker_environment_exists"]
    api.item_add(BPlan("volumetric_scan", "camera", "scanboard", 2, 10, 10.0, 50.0, 2.0,
                       md={"sample_name": "queued fish"}))
    api.queue_start()
    api.wait_for_idle(timeout=180)
    item = api.history_get()["items"][-1]
    assert item["name"] == "volumetric_scan"
    assert item["result"]["exit_status"] == "completed", item["result"]["traceback"]
    (uid,) = item["result"]["run_uids"]

    run = open_catalog(queue["data"])[uid]
    assert run.metadata["start"]["sample_name"] == "queued fish"
    assert run.metadata["stop"]["exit_status"] == "success"
    frames = run["primary"]["camera_image"]
    assert frames.shape[:2] == (2, 10)
    assert frames[1, 9].any()  # the last plane holds an image, not zeros


def test_the_stock_qserver_cli_queues_and_runs_a_plan_over_0mq(queue):
    def qserver(*args: str) -> str:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "qserver"), "-a",
             f"tcp://127.0.0.1:{queue['control']}", *args],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    qserver("queue", "add", "plan",
            '{"name": "planar_scan", "args": ["camera", "scanboard", 5, 30.0, 0.005]}')
    qserver("queue", "start")
    api = http_api(queue)
    api.wait_for_idle(timeout=120)
    item = api.history_get()["items"][-1]
    assert item["name"] == "planar_scan"
    assert item["result"]["exit_status"] == "completed", item["result"]["traceback"]


def test_bad_parameters_are_refused_when_queued_and_say_which(queue):
    from bluesky_queueserver_api import BPlan

    api = http_api(queue)
    with pytest.raises(api.RequestFailedError, match="n_volumes"):
        api.item_add(BPlan("volumetric_scan", "camera", "scanboard", "two", 10, 10.0, 50.0,
                           2.0))
    # out of the plan's range: refused when queued, naming the parameter and the range
    with pytest.raises(api.RequestFailedError, match=r"n_planes.*\[2, 1000\]"):
        api.item_add(BPlan("volumetric_scan", "camera", "scanboard", 2, 1, 10.0, 50.0, 2.0))
    with pytest.raises(api.RequestFailedError, match=r"skip_planes.*\[0, 50\]"):
        api.item_add(BPlan("volumetric_scan", "camera", "scanboard", 2, 10, 10.0, 50.0, 2.0,
                           skip_planes=[2, 60]))
    with pytest.raises(api.RequestFailedError, match="not in the list of allowed plans"):
        api.item_add(BPlan("no_such_plan"))
    # a device that is not there, or of the wrong kind: refused when queued, not
    # taken as a string the plan fails on when it runs
    for wrong in (("camera", "nosuchdevice"), ("scanboard", "camera")):
        with pytest.raises(api.RequestFailedError, match=wrong[1]):
            api.item_add(BPlan("volumetric_scan", *wrong, 2, 10, 10.0, 50.0, 2.0))
    with pytest.raises(api.RequestFailedError, match="laser"):
        api.item_add(BPlan("acquire_background", "camera", 5, "piezo"))
    api.item_add(BPlan("acquire_background", "camera", 5))  # the laser may be left out
    api.item_add(BPlan("acquire_background", "camera", 5, "laser"))
    api.queue_clear()
    assert api.queue_get()["items"] == []


def test_without_the_api_key_the_http_server_refuses(queue):
    api = http_api(queue, key=None)
    with pytest.raises(api.HTTPClientError, match="401"):
        api.status()
    with pytest.raises(api.HTTPClientError, match="401"):
        http_api(queue, key="wrong-key").queue_start()


def test_every_plan_has_documented_parameters_and_the_shipped_list_is_current(queue):
    """The profile's existing_plans_and_devices.yaml is what the worker finds in the
    profile; regenerate with ``qserver-list-plans-devices --startup-dir
    profile_collection/startup --file-dir profile_collection/startup`` (IOC running)."""
    live = http_api(queue).plans_existing()["plans_existing"]
    shipped = yaml.safe_load((PROFILE_STARTUP / PLANS_DEVICES_FILE).read_text())
    assert set(live) == set(shipped["existing_plans"]) == {
        "planar_scan", "volumetric_scan", "gated_scan", "gated_timelapse", "power_series",
        "acquire_background"}
    for name, plan in live.items():
        params = {p["name"]: p for p in plan["parameters"]}
        shipped_params = {p["name"]: p for p in shipped["existing_plans"][name]["parameters"]}
        assert params.keys() == shipped_params.keys(), name
        for pname, p in params.items():
            assert p.get("description"), f"{name}({pname}) has no description"
            for key in ("annotation", "default", "description", "min", "max"):
                assert p.get(key) == shipped_params[pname].get(key), (name, pname, key)
    devices = http_api(queue).devices_existing()["devices_existing"]
    assert {"camera", "scanboard", "gating", "piezo", "laser"} <= set(devices)
    # every signal too: the queue validates items against this file, so a signal
    # missing from it cannot be used in a plan's arguments
    assert devices == shipped["existing_devices"]


def test_the_operator_console_shows_the_queue_and_starts_it(queue):
    """``beamline-ls console --queue URI``: the queue, the running plan and the last
    ones on the page; starting the queue needs the console's own key."""
    from bluesky_queueserver_api import BPlan
    from starlette.testclient import TestClient

    from beamline_ls.console.app import Console, create_app
    from beamline_ls.console.queue_view import QueuePoller

    api = http_api(queue)
    api.item_add(BPlan("planar_scan", "camera", "scanboard", 5, 30.0, 0.005),
                 user="fish lab")
    console = Console(PREFIX, "console-key",
                      queue=QueuePoller(f"http://127.0.0.1:{queue['http']}", KEY))
    with TestClient(create_app(console)) as client:
        def shown() -> dict:
            return client.get("/api/state").json()["queue"]

        wait_for(lambda: [i["name"] for i in shown()["queue"]] == ["planar_scan"], 20,
                 "the queued plan on the page")
        assert shown()["status"]["manager_state"] == "idle"
        assert shown()["queue"][0]["params"].startswith("'camera', 'scanboard', 5")
        assert client.post("/api/queue/start").status_code == 401
        assert api.queue_get()["items"]  # nothing started without the key
        reply = client.post("/api/queue/start", headers={"X-API-Key": "console-key"})
        assert reply.status_code == 200, reply.text
        api.wait_for_idle(timeout=120)
        wait_for(lambda: shown()["history"] and shown()["history"][0]["name"] == "planar_scan"
                 and not shown()["queue"], 20, "the finished plan in the history")
        assert shown()["history"][0]["exit_status"] == "completed"
        reply = client.post("/api/queue/jump", headers={"X-API-Key": "console-key"})
        assert reply.status_code == 400 and "must be one of" in reply.json()["error"]


def test_ctrl_c_during_a_plan_aborts_it_stops_the_camera_and_the_next_start_says_it_waits(
        queue):
    """Last in this module: it ends the queue server the others used. Ctrl-C while a
    scan runs used to kill the worker in the middle of it: the run got no stop document
    and the camera, armed for the whole scan, went on acquiring; the plan the queue
    server then kept at the front of the queue ran first at the next start, unannounced.
    Now the plan is aborted first (its run stored as aborted, the camera stopped), all
    three parts stop and free their ports, and the next start names what still waits."""
    from bluesky_queueserver_api import BPlan
    from caproto.sync.client import read

    from beamline_ls.catalog import open_catalog

    api = http_api(queue)
    # the console's test before this one ran a plan: the manager said "RE Manager is
    # busy" to queue_start once on a loaded machine, so this waits until it takes it
    api.wait_for_idle(timeout=180)
    api.item_add(BPlan("volumetric_scan", "camera", "scanboard", 300, 10, 10.0, 50.0, 2.0))
    deadline = time.monotonic() + 60
    while True:
        try:
            api.queue_start()
            break
        except api.RequestFailedError as exc:
            if "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)

    def captured() -> int:
        return int(read(f"{PREFIX}HDF1:NumCaptured_RBV", timeout=5,
                        repeater=False).data[0])

    wait_for(lambda: captured() >= 20, 120, "the queued scan writing frames")
    proc = queue["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0, queue["log"].read_text()
    out = queue["log"].read_text()
    assert "the running plan 'volumetric_scan' was aborted" in out, out[-3000:]
    for part in ("http", "control", "redis"):
        assert not _listening(queue[part]), f"{part} port still open after stop"
    manager_log = (queue["data"] / "logs" / "queue" / "re-manager.log").read_text()
    assert "Run Engine environment was closed successfully" in manager_log
    run = open_catalog(queue["data"])[-1]
    assert run.metadata["start"]["plan_name"] == "volumetric_scan"
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert run.metadata["stop"]["reason"] == "aborted through the queue server (abort)"
    assert read(f"{PREFIX}cam1:Acquire_RBV", timeout=5, repeater=False).data[0] == b"Done"
    stopped_at = captured()
    assert 20 <= stopped_at < 3000

    # the queue is kept on disk, and the aborted plan waits at its front: said at start
    assert (queue["data"] / "queue" / "redis.rdb").is_file()
    log = queue["data"] / "queue-again.out"
    cmd = [sys.executable, "-m", "beamline_ls.cli", "queue", "--prefix", PREFIX,
           "--data-dir", str(queue["data"]), "--api-key", KEY, "--no-open",
           "--port", str(queue["http"]), "--zmq-control-port", str(queue["control"]),
           "--zmq-info-port", str(queue["info"]), "--redis-port", str(queue["redis"])]
    with open(log, "wb") as out_file:
        again = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_file,
                                 stderr=subprocess.STDOUT)
    try:
        # "ready" is said before the queue is read; the Ctrl-C hint comes after it
        wait_for(lambda: "Ctrl-C stops" in log.read_text() or again.poll() is not None,
                 timeout=120, what="the queue server again")
        text = log.read_text()
        assert "the queue holds 1 plan(s) from before" in text, text
        assert "volumetric_scan ['camera', 'scanboard', 300, 10" in text, text
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(90) == 0, log.read_text()
    assert captured() == stopped_at  # nothing ran: the queue is not started by itself


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = QueueServer(QueueConfig(data_dir=tmp_path, prefix="X:", redis_port=port,
                                         http_port=free_port(), zmq_control_port=free_port(),
                                         zmq_info_port=free_port()))
        with pytest.raises(QueueError, match=f"Redis: port 127.0.0.1:{port} is in use.*"
                                             "--redis-addr"):
            server.start()
    assert server.children == []
    assert not (tmp_path / "logs").exists()


def test_a_second_queue_server_on_a_data_directory_is_refused_naming_the_first(tmp_path):
    """Two queue servers on one data directory shared its Redis dump and wrote the
    same logs, with no word said. The first holds the directory (as a running
    ``beamline-ls queue`` does) until it stops."""
    from beamline_ls.iocs.claim import claim_data_dir

    def config() -> QueueConfig:
        return QueueConfig(data_dir=tmp_path, prefix="X:", http_port=free_port(),
                           zmq_control_port=free_port(), zmq_info_port=free_port(),
                           redis_port=free_port(), open_environment=False)

    first = claim_data_dir(tmp_path / "state", "X:", "queue server")
    second = QueueServer(config())
    with pytest.raises(QueueError, match=rf"another queue server \(PID {os.getpid()}, "
                                         rf"prefix X:\) serves the data directory "
                                         rf"{tmp_path}; stop it first"):
        second.start()
    assert second.children == []
    first.close()  # the first one stopped: the directory is free again
    with QueueServer(config()) as third:
        assert third.children
    claim_data_dir(tmp_path / "state", "X:", "queue server").close()  # and released


def test_an_api_key_the_http_server_would_refuse_is_refused_first(tmp_path):
    server = QueueServer(QueueConfig(data_dir=tmp_path, prefix="X:", api_key="not-alnum"))
    with pytest.raises(QueueError, match="letters and digits only"):
        server.start()
    assert server.children == []


def test_without_an_ioc_the_queue_says_to_start_it_and_leaves_nothing_running(
        epics, tmp_path):
    ports = {"http": free_port(), "control": free_port(), "info": free_port(),
             "redis": free_port()}
    cmd = [sys.executable, "-m", "beamline_ls.cli", "queue", "--prefix", "NOIOC:",
           "--data-dir", str(tmp_path), "--api-key", KEY, "--port", str(ports["http"]),
           "--zmq-control-port", str(ports["control"]),
           "--zmq-info-port", str(ports["info"]), "--redis-port", str(ports["redis"])]
    done = subprocess.run(cmd, env={**os.environ, **epics.env()}, capture_output=True,
                          text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert f"start it first (beamline-ls ioc --prefix NOIOC: --data-dir {tmp_path})" in out
    for part in ("http", "control", "info", "redis"):
        assert not _listening(ports[part]), f"{part} port still open after the failure"


def test_ctrl_c_pressed_again_and_again_still_stops_every_part(tmp_path):
    """Three quick SIGTERMs (an impatient Ctrl-C, a service manager insisting): the
    command used to end in the middle of its stop, leaving Redis, the RE Manager with
    its worker and the HTTP server running without it, their ports taken. Now each
    further one hurries the stop, and nothing it started is left."""
    from conftest import _child_processes

    ports = {"http": free_port(), "control": free_port(), "info": free_port(),
             "redis": free_port()}
    log = tmp_path / "queue.out"
    cmd = [sys.executable, "-m", "beamline_ls.cli", "queue", "--no-open",
           "--prefix", "NOIOC:", "--data-dir", str(tmp_path), "--api-key", KEY,
           "--port", str(ports["http"]), "--zmq-control-port", str(ports["control"]),
           "--zmq-info-port", str(ports["info"]), "--redis-port", str(ports["redis"])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    started: list = []
    try:
        wait_for(lambda: "Ctrl-C stops" in log.read_text() or proc.poll() is not None,
                 timeout=240, what="the queue server")
        assert proc.poll() is None, log.read_text()
        started = _child_processes(proc.pid)
        assert len(started) >= 4  # Redis, RE Manager, its worker, HTTP server
        for _ in range(3):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    left = [(pid, command) for pid, command in started if _running(pid, command)]
    for pid, _ in left:  # the test's own leftovers, ended before it fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left running: {left}"
    for part in ("http", "control", "info", "redis"):
        assert not _listening(ports[part]), f"{part} port still open after the stop"


def _running(pid: int, command: str) -> bool:
    """Whether ``pid`` still runs ``command`` (not a zombie, not a reused PID)."""
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        now = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return False
    return state != "Z" and now == command
