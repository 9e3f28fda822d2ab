"""Shared fixtures: one real simulated-hardware IOC on private loopback ports.

The EPICS environment is set at import time, before anything imports ophyd (pyepics
reads it once). Every process started here is stopped here, by PID.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from beamline_ls.epics_env import IocProcess, LoopbackEpics, free_port

# a second port so tests can run an IOC with a different hardware configuration
EPICS = LoopbackEpics(extra_server_ports=(free_port(),))
EPICS.apply()
PREFIX = "TST:"
ROI = 256

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")


@pytest.fixture(scope="session")
def prefix() -> str:
    return PREFIX


@pytest.fixture(scope="session")
def epics() -> LoopbackEpics:
    EPICS.start_repeater()
    yield EPICS
    EPICS.stop()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mirror_root(tmp_path_factory) -> Path:
    """The one tree the session IOC may copy frame files to (its ``mirror_roots``)."""
    return tmp_path_factory.mktemp("mirrors")


@pytest.fixture
def share(mirror_root) -> Path:
    """A fresh destination directory (not yet created) the session IOC may copy to."""
    return Path(tempfile.mkdtemp(dir=mirror_root)) / "share"


@pytest.fixture(scope="session")
def ioc(epics, data_dir, mirror_root):
    config = data_dir / "ioc.toml"
    config.write_text(f"mirror_roots = [{str(mirror_root)!r}]\n")
    proc = IocProcess(epics, PREFIX, data_dir, data_dir / "logs" / "ioc.log",
                      config=config).start()
    yield proc
    proc.stop()


#: the shared microscope, once a test has connected it (`scope`)
_CONNECTED: list = []


@pytest.fixture(scope="session")
def scope(ioc):
    from devices import connect_microscope

    s = connect_microscope(PREFIX)
    s.camera.set_centered_roi(ROI)
    _CONNECTED.append(s)
    yield s
    _CONNECTED.clear()
    s.destroy()


@pytest.fixture(scope="module", autouse=True)
def gating_off_after_each_module():
    """Gated plans leave the gating enabled, as operators expect; the shared IOC's
    bright-field analysis then costs a third of a core for every module after. Each
    module leaves it off for the next."""
    yield
    if _CONNECTED and _CONNECTED[0].gating.enable.get(use_monitor=False,
                                                       as_string=True) == "On":
        _CONNECTED[0].gating.enable.set("Off").wait(10)


@contextlib.contextmanager
def private_microscope(epics: LoopbackEpics, prefix: str, data: Path,
                       config: Path | None = None, roi: int | None = 128):
    """A second simulated microscope: its own IOC on the spare port (``prefix``, data
    under ``data``, optional hardware TOML), devices and session; all of it stopped
    on the way out, whatever happened. Yields ``(ioc, scope, session)``."""
    from beamline_ls.config import load_settings
    from beamline_ls.stack import running_microscope

    with running_microscope(epics.for_server(epics.extra_server_ports[0]),
                            load_settings(data_dir=data, prefix=prefix), data / "ioc.log",
                            config=config, roi=roi, progress_bar=False) as microscope:
        yield microscope


def plain_detector(name: str = "det"):
    """A readable ophyd signal for a plan that needs a detector and no hardware (bluesky's
    ``count``). Not ``ophyd.sim.det``: importing ``ophyd.sim`` makes a temporary
    directory (its image signal's ``mkdtemp``) that nothing removes."""
    from ophyd import Signal

    return Signal(name=name, value=1.0)


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def put_is_refused(pvname: str, value: float) -> bool:
    """True when the IOC answers a put with completion with an error, False when it
    completes it; a put left unanswered fails the test (caproto's synchronous client:
    its asyncio and threading clients ignore the error reply and wait out their
    timeout, and pyepics reports a failed put only on stderr)."""
    from caproto import ErrorResponseReceived
    from caproto.sync.client import write

    try:
        write(pvname, [value], notify=True, timeout=10, repeater=False)
    except ErrorResponseReceived:
        return True
    return False


# a session of its own (another IPython, the queue worker) running a volumetric scan
_SCAN_PROCESS = """
import sys
from beamline_ls.config import load_settings
from beamline_ls.session import make_session
from devices import connect_microscope
from plans import volumetric_scan

data_dir, prefix, tag, volumes = sys.argv[1:5]
scope = connect_microscope(prefix)
scope.camera.set_centered_roi(128)
session = make_session(load_settings(data_dir=data_dir, prefix=prefix), progress_bar=False)
session.RE(volumetric_scan(scope.camera, scope.scanboard, int(volumes), 5, 10.0, 80.0, 5.0,
                           md={"sample_name": tag}))
session.close()
"""


def scan_in_another_process(data_dir: Path, prefix: str, tag: str, volumes: int):
    """Start ``volumes`` volumes of 5 planes of 128 x 128 at 5 volumes/s on the IOC of
    ``prefix`` from another process (its own session on ``data_dir``, the IOC's; run
    tagged ``sample_name = tag``); the caller waits for it or kills it, by its Popen.
    Use it with a `private_microscope`: the process may be killed, and what it shares
    with the tests' sessions (the data directory's SQLite files) stays private."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", _SCAN_PROCESS, str(data_dir), prefix,
                             tag, str(volumes)], env=private_tmpdir(data_dir))


def private_tmpdir(under: Path) -> dict[str, str]:
    """The environment for a process a test may kill: its temporary files (tiled's
    and the libraries' own) go under ``under``, which the test removes, instead of
    staying in /tmp after the kill (found there after CI runs)."""
    tmp = under / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


def tagged_run(catalog, tag: str):
    """The run tagged ``sample_name = tag`` (see `scan_in_another_process`), or None
    while the catalog has none."""
    from bluesky_tiled_plugins.queries import Key

    runs = list(catalog.search(Key("sample_name") == tag).values())
    return runs[0] if runs else None


def end_scan_in_another_process(proc, scope) -> None:
    """Kill the scan process if it still runs, and stop what its scan left running on
    the IOC (which goes on without it) before the IOC itself is stopped."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    cam = scope.camera.cam
    if not (int(scope.scanboard.running.get(use_monitor=False))
            or cam.detector_state.get(as_string=True, use_monitor=False) != "Idle"):
        return
    scope.scanboard.stop_cmd.set(1).wait(10)
    cam.camera_mode.set("Abort").wait(10)
    wait_for(lambda: cam.detector_state.get(as_string=True) == "Idle",
             timeout=30, what="the camera idle again")


@pytest.fixture(scope="session")
def settings(data_dir):
    from beamline_ls.config import load_settings

    return load_settings(data_dir=data_dir, prefix=PREFIX)


@pytest.fixture(scope="session")
def session(settings):
    from beamline_ls.session import make_session

    s = make_session(settings, progress_bar=False)
    yield s
    s.close()


#: fixtures that start or share the session's IOC and servers on fixed ports: a test
#: marked ``compute`` or ``offline`` (run on every core at once by `make test`) must
#: not use them
_SHARED_FIXTURES = {"epics", "ioc", "scope", "session", "settings"}


def pytest_collection_modifyitems(config, items) -> None:
    """Refuse a parallel (``compute``, ``offline``) test that would start the shared
    IOC in each worker."""
    for item in items:
        marker = item.get_closest_marker("compute") or item.get_closest_marker("offline")
        if marker is None:
            continue
        shared = _SHARED_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if shared:
            raise pytest.UsageError(
                f"{item.nodeid} is marked {marker.name} but uses {sorted(shared)}: "
                "these tests run in parallel and may not share the IOC")


def pytest_unconfigure(config) -> None:
    """After the session: name the threads that would hold up exit (not daemons) and
    the child processes the tests left behind, and turn a hang at interpreter exit
    into a bounded failure with every thread's stack (a CI run that hangs after its
    summary says nothing otherwise)."""
    import faulthandler
    import os
    import sys
    import threading

    # dask's shared scheduler pool (tiled's table reads compute through it) is idle
    # and ends at exit with the interpreter's other executors: not one of ours
    dask_threaded = sys.modules.get("dask.threaded")
    pool = getattr(dask_threaded, "default_pool", None)
    dask_pool = set(getattr(pool, "_threads", ()))
    threads = [t for t in threading.enumerate()
               if t is not threading.main_thread() and t.is_alive() and not t.daemon
               and t not in dask_pool]
    children = _child_processes(os.getpid())
    if threads or children:
        lines = [f"  thread {t.name!r}" for t in threads]
        lines += [f"  child pid {pid}: {cmd}" for pid, cmd in children]
        print("\nleft running after the session:\n" + "\n".join(lines), file=sys.stderr)
    faulthandler.dump_traceback_later(120, exit=True)


def _child_processes(pid: int) -> list[tuple[int, str]]:
    """Direct and indirect children of ``pid`` from /proc (Linux), as (pid, command)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry.name)] = cmd
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                found.append((child, commands[child]))
                frontier.append(child)
    return found


@pytest.fixture
def piezo_high_limit(scope):
    """Set the piezo's high limit (its motor record's HLM) for a test, then restore it;
    returns a function that sets it and waits until the scan board has taken it."""
    piezo, board = scope.piezo, scope.scanboard
    before = piezo.high_limit_travel.get(use_monitor=False)

    def set_limit(value: float) -> None:
        piezo.high_limit_travel.set(value).wait(5)
        deadline = time.monotonic() + 10
        while board.z_high_limit.get(use_monitor=False) != pytest.approx(value):
            assert time.monotonic() < deadline, "the board never showed the piezo's limit"
            time.sleep(0.05)

    yield set_limit
    set_limit(before)
