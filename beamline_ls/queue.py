"""``beamline-ls queue``: the bluesky queue server for this microscope, on loopback.

Three stock processes, started in order and stopped in reverse, each by the PID this
module got when it started it:

1. Redis (Debian's ``redis-server``), where the RE Manager keeps queue and history.
   Its snapshot lives under ``<data dir>/queue`` so a restart keeps the queue. Skipped
   when ``redis_addr`` names a Redis that already runs (a facility's).
2. The RE Manager (``start-re-manager``) with the IPython profile's startup directory:
   the worker runs the same startup files as an IPython session, so plans, devices,
   the RunEngine's metadata and the catalog are the ones staff use interactively.
   The lists of plans and devices and the user-group permissions are read from the
   profile (``existing_plans_and_devices.yaml``, ``user_group_permissions.yaml``);
   nothing is written into the profile.
3. bluesky-httpserver, which needs an API key (single-user mode): remote clients use
   ``REManagerAPI(http_server_uri=..., http_auth_provider=None)`` with
   ``Authorization: ApiKey <key>``, or ``qserver`` over 0MQ on this host.

Every address defaults to 127.0.0.1; nothing listens on another address unless
``host`` says so. Logs of all three go to ``<data dir>/logs/queue/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger("beamline_ls.queue")

PROFILE_STARTUP = Path(__file__).resolve().parent.parent / "profile_collection" / "startup"
PLANS_DEVICES_FILE = "existing_plans_and_devices.yaml"
PERMISSIONS_FILE = "user_group_permissions.yaml"
LOOPBACK = "127.0.0.1"


class QueueError(RuntimeError):
    """A queue-server process could not be started; the message says which and why."""


@dataclass
class QueueConfig:
    """Where the queue server's parts listen and what they run."""

    data_dir: Path
    prefix: str
    host: str = LOOPBACK  # HTTP server and RE Manager 0MQ sockets
    http_port: int = 60610  # bluesky-httpserver's default
    zmq_control_port: int = 60615  # the default ``qserver`` talks to
    zmq_info_port: int = 60625  # console output and status stream
    redis_port: int = 6379
    redis_addr: str | None = None  # "host:port" of a running Redis: use it, start none
    api_key: str = field(default_factory=lambda: secrets.token_hex(16))
    startup_dir: Path = PROFILE_STARTUP
    config_file: Path | None = None  # microscope TOML for the worker (BEAMLINE_LS_CONFIG)
    open_environment: bool = True
    environment_timeout: float = 300.0
    abort_timeout: float = 60.0  # a running plan's pause and abort, at stop

    @property
    def zmq_control_addr(self) -> str:
        return f"tcp://{self.host}:{self.zmq_control_port}"

    @property
    def zmq_info_addr(self) -> str:
        return f"tcp://{self.host}:{self.zmq_info_port}"

    @property
    def http_uri(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def redis(self) -> str:
        return self.redis_addr or f"{LOOPBACK}:{self.redis_port}"

    @property
    def log_dir(self) -> Path:
        return Path(self.data_dir) / "logs" / "queue"


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _executable(name: str) -> str:
    """A console script of this environment first (the venv's), then PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise QueueError(f"{name} not found")
    return found


class _Child:
    """One started process, its log and how to stop it."""

    def __init__(self, name: str, cmd: list[str], log_file: Path, env: dict[str, str]):
        self.name = name
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")
        try:
            # Its own session: a Ctrl-C in the terminal reaches this command only, which
            # then stops the parts in order instead of all at once.
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        logger.debug("started %s (pid %d): %s", name, self.proc.pid, " ".join(cmd))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def died(self) -> QueueError:
        return QueueError(f"{self.name} exited with code {self.proc.returncode}; the end of "
                          f"{self.log_file}:\n{_tail(self.log_file)}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.died()
            if ready():
                return
            time.sleep(0.2)
        raise QueueError(f"{self.name}: {what} not reached in {timeout:.0f} s; the end of "
                         f"{self.log_file}:\n{_tail(self.log_file)}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, up to ``timeout`` s to exit, then SIGKILL; what it started and left
        behind in its process group (a worker whose manager died) goes too."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not stop in %.0f s; killed", self.name,
                               self.pid, timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the part's process group (its own session: what it started, such
        as the RE Manager's worker, goes with it), then reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class QueueServer:
    """Redis, RE Manager and HTTP server for one microscope; a context manager."""

    def __init__(self, config: QueueConfig):
        self.config = config
        self.children: list[_Child] = []
        self._manager_api = None
        self._claim: IO[str] | None = None  # the data directory's queue lock, held

    # -- start -------------------------------------------------------------------------
    def start(self) -> QueueServer:
        cfg = self.config
        if not cfg.api_key.isalnum():
            raise QueueError("the API key must be letters and digits only (bluesky-httpserver "
                             "refuses others); e.g. python -c 'import secrets; "
                             "print(secrets.token_hex(32))'")
        self._check_profile()
        from beamline_ls.iocs.claim import ClaimError, claim_data_dir

        try:
            self._claim = claim_data_dir(Path(cfg.data_dir) / "state", cfg.prefix,
                                         "queue server")
        except ClaimError as exc:
            raise QueueError(str(exc)) from None
        try:
            self._start_checked()
        except BaseException:
            self._release_claim()
            raise
        return self

    def _start_checked(self) -> None:
        cfg = self.config
        ports = [(cfg.host, cfg.http_port, "HTTP server"),
                 (cfg.host, cfg.zmq_control_port, "RE Manager control"),
                 (cfg.host, cfg.zmq_info_port, "RE Manager info")]
        if cfg.redis_addr is None:
            ports.append((LOOPBACK, cfg.redis_port, "Redis"))
        for host, port, what in ports:
            if _port_in_use(host, port):
                hint = (" (a Redis already running? pass --redis-addr HOST:PORT to use it)"
                        if what == "Redis" else "")
                raise QueueError(f"{what}: port {host}:{port} is in use{hint}; choose "
                                 "another port")
        if cfg.open_environment:
            self._check_ioc()
        try:
            if cfg.redis_addr is None:
                self._start_redis()
            self._start_manager()
            if cfg.open_environment:
                self.open_environment()
            self._start_http()
        except BaseException:
            self.stop()
            raise

    def _release_claim(self) -> None:
        if self._claim is not None:
            self._claim.close()  # the kernel drops the lock with the file
            self._claim = None

    def _check_ioc(self, timeout: float = 5.0) -> None:
        """Refuse at once when no IOC answers for the prefix: the worker would start,
        wait for every device's connection and fail only after that."""
        from beamline_ls.epics_env import loopback_client_env

        loopback_client_env()  # the worker's profile defaults to the same
        from caproto import CaprotoTimeoutError
        from caproto.sync.client import read

        cfg = self.config
        probe = f"{cfg.prefix}scan:Running_RBV"
        try:
            read(probe, timeout=timeout, repeater=False)
        except CaprotoTimeoutError:
            raise QueueError(
                f"no IOC answers for prefix {cfg.prefix!r} ({probe} not found in "
                f"{timeout:.0f} s on {os.environ['EPICS_CA_ADDR_LIST']}): "
                f"{self._start_ioc_hint()}") from None

    def _start_ioc_hint(self) -> str:
        cfg = self.config
        return ("is the IOC running? If not, start it first (beamline-ls ioc --prefix "
                f"{cfg.prefix} --data-dir {cfg.data_dir}), then the queue.")

    def _check_profile(self) -> None:
        startup = self.config.startup_dir
        for name in (PLANS_DEVICES_FILE, PERMISSIONS_FILE):
            if not (startup / name).is_file():
                raise QueueError(f"{startup / name} is missing: the queue server needs the "
                                 "profile's list of plans and devices and its permissions")

    def _env(self) -> dict[str, str]:
        env = {**os.environ,
               "BEAMLINE_LS_DATA_DIR": str(self.config.data_dir),
               "BEAMLINE_LS_PREFIX": self.config.prefix,
               "PYTHONUNBUFFERED": "1"}
        if self.config.config_file is not None:
            env["BEAMLINE_LS_CONFIG"] = str(self.config.config_file)
        return env

    def _start_redis(self) -> None:
        cfg = self.config
        try:
            redis_server = _executable("redis-server")
        except QueueError:
            raise QueueError("redis-server not found: install Debian's redis-server "
                             "(apt-get install redis-server), or pass --redis-addr HOST:PORT "
                             "of a Redis that runs") from None
        state = Path(cfg.data_dir) / "queue"
        state.mkdir(parents=True, exist_ok=True)
        cmd = [redis_server, "--bind", LOOPBACK, "--port", str(cfg.redis_port),
               "--protected-mode", "yes", "--daemonize", "no",
               "--dir", str(state), "--dbfilename", "redis.rdb",
               "--save", "60 1", "--appendonly", "no"]
        child = _Child("redis-server", cmd, cfg.log_dir / "redis.log", self._env())
        self.children.append(child)

        def pong() -> bool:
            import redis

            try:
                return bool(redis.Redis(host=LOOPBACK, port=cfg.redis_port,
                                        socket_timeout=1).ping())
            except redis.RedisError:
                return False

        child.wait_until(pong, 20.0, "an answer to PING")
        logger.info("Redis on %s:%d (pid %d)", LOOPBACK, cfg.redis_port, child.pid)

    def _start_manager(self) -> None:
        cfg = self.config
        startup = cfg.startup_dir
        cmd = [_executable("start-re-manager"),
               "--startup-dir", str(startup),
               "--existing-plans-devices", str(startup / PLANS_DEVICES_FILE),
               "--update-existing-plans-devices", "NEVER",
               "--user-group-permissions", str(startup / PERMISSIONS_FILE),
               "--redis-addr", cfg.redis,
               "--zmq-control-addr", cfg.zmq_control_addr,
               "--zmq-info-addr", cfg.zmq_info_addr,
               "--zmq-publish-console", "ON"]
        child = _Child("RE Manager", cmd, cfg.log_dir / "re-manager.log", self._env())
        self.children.append(child)
        api = self.manager_api()

        def answers() -> bool:
            try:
                return api.status().get("manager_state") == "idle"
            except Exception:
                return False

        child.wait_until(answers, 60.0, "an idle manager")
        logger.info("RE Manager on %s (pid %d)", cfg.zmq_control_addr, child.pid)

    def manager_api(self):
        """bluesky-queueserver-api's 0MQ client of this RE Manager."""
        if self._manager_api is None:
            from bluesky_queueserver_api.zmq import REManagerAPI

            self._manager_api = REManagerAPI(zmq_control_addr=self.config.zmq_control_addr,
                                             zmq_info_addr=self.config.zmq_info_addr)
        return self._manager_api

    def open_environment(self) -> None:
        """Run the profile in the worker (connects the devices, opens the catalog)."""
        api = self.manager_api()
        if api.status()["worker_environment_exists"]:
            return
        logger.info("opening the RE environment (runs the profile's startup files)")
        api.environment_open()
        manager = self.children[-1]
        deadline = time.monotonic() + self.config.environment_timeout
        while time.monotonic() < deadline:
            if not manager.alive():
                raise manager.died()
            status = api.status()
            if status["manager_state"] == "idle":
                if status["worker_environment_exists"]:
                    logger.info("RE environment open: %d plans, %d devices allowed",
                                len(api.plans_allowed()["plans_allowed"]),
                                len(api.devices_allowed()["devices_allowed"]))
                    return
                tail = _tail(manager.log_file, 30)
                hint = ""
                if "Failed to connect to all signals" in tail:
                    hint = (f"\nPVs of prefix {self.config.prefix!r} did not answer: "
                            f"{self._start_ioc_hint()}")
                raise QueueError("the profile failed to load in the RE worker; the end of "
                                 f"{manager.log_file}:\n{tail}{hint}")
            time.sleep(0.5)
        raise QueueError(f"the RE environment did not open in "
                         f"{self.config.environment_timeout:.0f} s; see {manager.log_file}")

    def _start_http(self) -> None:
        cfg = self.config
        env = {**self._env(),
               "QSERVER_ZMQ_CONTROL_ADDRESS": cfg.zmq_control_addr,
               "QSERVER_ZMQ_INFO_ADDRESS": cfg.zmq_info_addr,
               "QSERVER_HTTP_SERVER_SINGLE_USER_API_KEY": cfg.api_key}
        cmd = [_executable("start-bluesky-httpserver"), "--host", cfg.host,
               "--port", str(cfg.http_port)]
        child = _Child("bluesky-httpserver", cmd, cfg.log_dir / "httpserver.log", env)
        self.children.append(child)

        def answers() -> bool:
            import httpx

            try:
                r = httpx.get(f"{cfg.http_uri}/api/status", timeout=2,
                              headers={"Authorization": f"ApiKey {cfg.api_key}"})
            except httpx.HTTPError:
                return False
            return r.status_code == 200

        child.wait_until(answers, 60.0, "an answer to /api/status")
        logger.info("HTTP server on %s (pid %d)", cfg.http_uri, child.pid)

    # -- run and stop --------------------------------------------------------------------
    def wait(self) -> None:
        """Block until a part exits by itself (then raise why) or Ctrl-C/SIGTERM."""
        while True:
            for child in self.children:
                if not child.alive():
                    raise child.died()
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop in reverse order: HTTP server, RE Manager (worker first), Redis. A plan
        still running is aborted first (`abort_running_plan`)."""
        hurry = False  # after a further Ctrl-C (or SIGTERM): no waiting on requests
        manager = next((c for c in self.children if c.name == "RE Manager"), None)
        if manager is not None and manager.alive():
            try:
                self.abort_running_plan()
            except KeyboardInterrupt:  # a second Ctrl-C: stop without waiting for it
                hurry = True
                logger.warning("not waiting for the running plan to end: its worker is "
                               "stopped with it, the plan is not put back in the queue, "
                               "and its run is marked failed when a session next opens "
                               "the catalog")
                with contextlib.suppress(KeyboardInterrupt):
                    for line in stop_hardware(self.config.prefix):
                        logger.warning("%s", line)
        for child in reversed(self.children):
            hurry = self._stop_child(child, hurry)
        self.children.clear()
        if self._manager_api is not None:
            with contextlib.suppress(Exception):
                self._manager_api.close()
            self._manager_api = None
        self._release_claim()

    def queued(self) -> list[str]:
        """One line per plan waiting in the queue (name and arguments), front first."""
        items = self.manager_api().queue_get()["items"]
        return [f"{item.get('name')} {item.get('args', [])} {item.get('kwargs', {})}"
                for item in items]

    def abort_running_plan(self, timeout: float | None = None) -> str | None:
        """Abort the plan the worker is running, if any; what happened, in a sentence.

        Why: stopping the manager with a plan running kills the worker in the middle
        of it. The run then gets no stop document and the camera, armed for the whole
        scan, goes on acquiring by itself. Paused at once and aborted instead, the plan
        runs its cleanup (the camera is stopped, the run is closed as aborted). The
        queue server puts an aborted plan back at the front of the queue, and it would
        run first at the next ``queue start``; the message says so.
        """
        api = self.manager_api()
        status = api.status()
        if status.get("manager_state") not in ("executing_queue", "paused"):
            return None
        timeout = self.config.abort_timeout if timeout is None else timeout
        name = "the running plan"
        with contextlib.suppress(Exception):
            name = f"the running plan {api.queue_get()['running_item']['name']!r}"
        logger.warning("%s is aborted before the queue server stops (up to %.0f s; "
                       "Ctrl-C again not to wait)", name, timeout)
        try:
            if status.get("manager_state") == "executing_queue":
                api.re_pause(option="immediate")
                api.wait_for_idle_or_paused(timeout=timeout)
            if api.status().get("manager_state") == "paused":
                api.re_abort()
            api.wait_for_idle(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the stop goes on
            message = (f"{name} could not be aborted ({exc}); the worker is stopped "
                       "with it: its run is marked failed when a session next opens the "
                       "catalog")
            logger.error("%s", message)
            return message
        history = api.history_get()["items"]
        last = history[-1] if history else {}
        runs = ", ".join(last.get("result", {}).get("run_uids", [])) or "none"
        message = (f"{name} was aborted (run {runs}, stored with exit status 'abort'); "
                   "the queue server keeps it at the front of the queue, where it runs "
                   "first at the next 'queue start' (remove it with 'qserver queue item "
                   "remove front' or REManagerAPI.item_remove(pos=\"front\"))")
        logger.warning("%s", message)
        return message

    def _stop_child(self, child: _Child, hurry: bool) -> bool:
        """Stop one part, however often Ctrl-C (or SIGTERM) comes meanwhile; whether
        the stop is now hurried.

        Why: three quick Ctrl-C (or a service manager's repeated SIGTERM) used to end
        this command in the middle of its stop, leaving Redis, the RE Manager with its
        worker and the HTTP server running without it, their ports taken. Now a further
        interrupt hurries the stop instead: no request to the manager, 5 s per part
        after SIGTERM; one more kills the part (its whole process group: the manager's
        worker with it)."""
        while child.alive():
            try:
                if not hurry and child.name == "RE Manager":
                    self._stop_manager(child)
                child.stop(5.0 if hurry else 20.0)
            except KeyboardInterrupt:
                if hurry:
                    logger.warning("killing %s (pid %d)", child.name, child.pid)
                    child.kill()
                else:
                    logger.warning("not waiting for %s (pid %d) to stop by itself",
                                   child.name, child.pid)
                hurry = True
        return hurry

    def _stop_manager(self, child: _Child) -> None:
        """Ask the manager to close the worker and exit (a SIGTERM alone would leave the
        worker's devices and catalog unclosed); fall back to SIGTERM if it does not."""
        api = self.manager_api()
        with contextlib.suppress(Exception):
            api.send_request(method="manager_stop", params={"option": "safe_off"})
        try:
            child.proc.wait(30)
        except subprocess.TimeoutExpired:
            logger.warning("the RE Manager did not stop on request; sending SIGTERM")

    def __enter__(self) -> QueueServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



def stop_hardware(prefix: str, timeout: float = 3.0) -> list[str]:
    """Stop the camera (capture with it) and the scan board a plan was using when the
    stop could not wait for its cleanup; what happened, a line each.

    Why: a worker stopped in the middle of a plan leaves both running (the camera
    armed for the whole scan wrote on, its capture open, and every later scan was
    refused as "another scan is using the hardware"). The same puts the refusal names.
    Each is bounded by ``timeout``; one that fails is said, not raised."""
    from caproto.sync.client import write

    said = []
    for pv, value, what in ((f"{prefix}cam1:CameraMode", "Abort", "the camera and its capture"),
                            (f"{prefix}scan:Stop", 1, "the scan board")):
        try:
            write(pv, value, notify=True, timeout=timeout, repeater=False)
            said.append(f"{what} stopped ({pv} = {value})")
        except Exception as exc:  # noqa: BLE001 - the stop goes on; said with the fix
            said.append(f"{what} not stopped ({pv} = {value} failed: {exc}); put it by hand")
    return said
