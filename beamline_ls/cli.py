"""``beamline-ls`` command line: demo, ioc, console, queue, serve, replay, export, bench,
check-hardware, copies, verify, screens, concurrence."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from beamline_ls import log as bls_log
from beamline_ls.argtypes import log_level, tcp_port

logger = logging.getLogger("beamline_ls.cli")


def _cmd_ioc(args: argparse.Namespace) -> int:
    from beamline_ls.config import load_settings
    from beamline_ls.iocs.server import serve

    settings = load_settings(args.config, data_dir=args.data_dir, prefix=args.prefix)
    if args.mirror_dir is not None:
        settings.mirror_dir = args.mirror_dir.expanduser().resolve()
    serve(settings)
    return 0


def _cmd_console(args: argparse.Namespace) -> int:
    from beamline_ls.config import load_settings
    from beamline_ls.console.server import serve_console

    settings = load_settings(args.config, data_dir=args.data_dir, prefix=args.prefix)
    serve_console(settings, host=args.host, port=args.port, api_key=args.api_key,
                  catalog_uri=args.catalog, queue_uri=args.queue,
                  queue_api_key=args.queue_api_key)
    return 0


def _cmd_copies(args: argparse.Namespace) -> int:
    from beamline_ls.config import load_settings
    from beamline_ls.relocation import point_catalog_at_copies

    settings = load_settings(data_dir=args.data_dir)
    report = point_catalog_at_copies(settings)
    for staging, destination in report.moved:
        print(f"now read from the copy: {staging} -> {destination}")
    for rec in report.waiting:
        print(f"waiting for its run to stop: {rec.staging}")
    for rec in report.failed_copies:
        print(f"copy FAILED (catalog reads staging): {rec.staging}: {rec.error}")
    for rec in report.missing_copies:
        print(f"copy missing or changed (catalog reads staging): {rec.destination}")
    print(f"{len(report.moved)} file(s) moved, {len(report.waiting)} waiting, "
          f"{len(report.failed_copies) + len(report.missing_copies)} without a good copy")
    return 1 if report.failed_copies or report.missing_copies else 0


def _cmd_screens(args: argparse.Namespace) -> int:
    from beamline_ls.config import load_settings
    from beamline_ls.screens import write_screens

    settings = load_settings(args.config, prefix=args.prefix)
    files = write_screens(args.out_dir, settings)
    print(f"{len(files)} screens in {args.out_dir}; open {files[0]} in Phoebus")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from beamline_ls.runfile.verify import NotARunFile, run_status, verify_run_file

    def show(result) -> None:
        if result.ok:
            where = " (datasets stored in the run file)" if result.file == args.run_file \
                else ""
            print(f"ok       {result.file}{where} ({len(result.datasets)} datasets, "
                  f"{result.frames} rows)")
        else:
            print(f"PROBLEM  {result.problem}")

    if not args.run_file.is_file():
        print(f"error: no file {args.run_file}", file=sys.stderr)
        return 2
    try:
        results = verify_run_file(args.run_file, progress=show)
    except NotARunFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bad = [r for r in results if not r.ok]
    frame_files = [r for r in results if r.file != args.run_file]
    own = " and the run file's own datasets" if len(frame_files) < len(results) else ""
    print(f"{len(frame_files)} frame file(s){own} checked, {len(bad)} missing or damaged")
    status, reason = run_status(args.run_file)
    if status:
        print(f"run status: {status}" + (f" ({reason})" if reason else ""))
    if status == "running":
        print("  the run is still going, or its process ended without closing it; the "
              "next session that opens the catalog closes such a run as failed")
    return 1 if bad else 0


def _cmd_concurrence(args: argparse.Namespace) -> int:
    from beamline_ls.pipeline.concurrence import summarize

    for step, figures in summarize(args.log).items():
        text = "  ".join(f"{key} {value:.4g}" for key, value in figures.items())
        print(f"{step:45s} {text}")
    return 0


def _cmd_queue(args: argparse.Namespace) -> int:
    import os

    from beamline_ls.config import load_settings
    from beamline_ls.queue import QueueConfig, QueueError, QueueServer
    from beamline_ls.signals import stop_on_sigterm

    settings = load_settings(args.config, data_dir=args.data_dir, prefix=args.prefix)
    config = QueueConfig(data_dir=settings.data_dir, prefix=settings.prefix, host=args.host,
                         http_port=args.port, zmq_control_port=args.zmq_control_port,
                         zmq_info_port=args.zmq_info_port, redis_port=args.redis_port,
                         redis_addr=args.redis_addr, config_file=args.config,
                         open_environment=not args.no_open)
    if args.startup_dir is not None:
        config.startup_dir = args.startup_dir.resolve()
    key_given = args.api_key or os.environ.get("BEAMLINE_LS_QUEUE_API_KEY")
    if key_given:
        config.api_key = key_given

    stop_on_sigterm()
    server = QueueServer(config)
    try:
        server.start()
        bls_log.success(logger, "queue server ready: HTTP %s, qserver 0MQ %s, Redis %s; "
                        "logs in %s", config.http_uri, config.zmq_control_addr, config.redis,
                        config.log_dir)
        if not key_given:
            print(f"API key (generated; pass --api-key to choose one): {config.api_key}",
                  flush=True)
        waiting = server.queued()
        if waiting:  # kept from before (an aborted plan goes back to the front)
            logger.warning("the queue holds %d plan(s) from before; they run at the next "
                           "'queue start', front first:\n  %s", len(waiting),
                           "\n  ".join(waiting))
        print("Ctrl-C stops the HTTP server, the RE Manager and Redis.", flush=True)
        server.wait()
    except QueueError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        logger.info("stopping the queue server")
    finally:
        server.stop()
    bls_log.success(logger, "queue server stopped; queue and history are kept in %s",
                    config.data_dir / "queue" if config.redis_addr is None else config.redis)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from beamline_ls.demo import run_demo

    return run_demo(data_dir=args.data_dir, prefix=args.prefix, n_volumes=args.volumes)


# Subcommands with their own argument parser: module whose main(argv) runs it, help.
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "replay": ("beamline_ls.gating.replay",
               "run optical gating on a recorded brightfield TIFF stack"),
    "export": ("beamline_ls.runfile.export",
               "write a stored run as one HDF5 file (RUN --to FILE.h5)"),
    "bench": ("beamline_ls.bench",
              "bench writer (does my disk keep up?) | bench gating (gating on the heart "
              "corpus)"),
    "serve": ("beamline_ls.serve",
              "serve the run catalog over HTTP (tiled, API key) to data users on other "
              "hosts"),
    "proxy": ("beamline_ls.zmq_stream",
              "0MQ document proxy on loopback (bluesky's Proxy): sessions publish, "
              "consumers subscribe"),
    "check-hardware": ("beamline_ls.hardware.check",
                       "ask each configured device whether it answers (--config F)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamline-ls", description=__doc__)
    p.add_argument("--log-level", default=None, type=log_level,
                   help="TRACE, DEBUG, INFO, SUCCESS, WARNING...")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run planar and volumetric scans on the simulator")
    demo.add_argument("--data-dir", type=Path, default=None,
                      help="where frames and the catalog go (default: ./beamline-ls-data)")
    demo.add_argument("--prefix", default="BLSDEMO:", help="EPICS prefix (default BLSDEMO:)")
    demo.add_argument("--volumes", type=int, default=10, help="volumes in the volumetric scan")
    demo.set_defaults(func=_cmd_demo)

    ioc = sub.add_parser("ioc", help="serve the (simulated) hardware as EPICS PVs")
    ioc.add_argument("--prefix", default=None, help="PV prefix (default from config: BLS:)")
    ioc.add_argument("--data-dir", type=Path, default=None, help="data root for frame files")
    ioc.add_argument("--config", type=Path, default=None, help="microscope TOML file")
    ioc.add_argument("--mirror-dir", type=Path, default=None,
                     help="copy every closed frame file here, verified (e.g. a share)")
    ioc.set_defaults(func=_cmd_ioc)

    queue = sub.add_parser("queue", help="the bluesky queue server on loopback: Redis, RE "
                           "Manager with the profile, HTTP server with an API key")
    queue.add_argument("--prefix", default=None, help="PV prefix (default from config)")
    queue.add_argument("--data-dir", type=Path, default=None, help="data directory")
    queue.add_argument("--config", type=Path, default=None, help="microscope TOML file")
    queue.add_argument("--host", default="127.0.0.1",
                       help="address of the HTTP server and 0MQ sockets (default 127.0.0.1)")
    queue.add_argument("--port", type=tcp_port, default=60610, help="HTTP port (default 60610)")
    queue.add_argument("--api-key", default=None,
                       help="HTTP API key (default: $BEAMLINE_LS_QUEUE_API_KEY, else "
                       "generated and printed)")
    queue.add_argument("--zmq-control-port", type=int, default=60615,
                       help="RE Manager control port, qserver's default (60615)")
    queue.add_argument("--zmq-info-port", type=int, default=60625,
                       help="RE Manager console/info port (default 60625)")
    queue.add_argument("--redis-port", type=int, default=6379,
                       help="port of the Redis this command starts (default 6379)")
    queue.add_argument("--redis-addr", default=None,
                       help="HOST:PORT of a running Redis to use instead of starting one")
    queue.add_argument("--startup-dir", type=Path, default=None,
                       help="profile startup directory (default: profile_collection/startup)")
    queue.add_argument("--no-open", action="store_true",
                       help="do not open the RE environment (qserver environment open)")
    queue.set_defaults(func=_cmd_queue)

    console = sub.add_parser("console", help="the operator console: a web page with the "
                             "live image, phase lock, waveforms, devices, calibration, runs")
    console.add_argument("--prefix", default=None, help="PV prefix (default from config)")
    console.add_argument("--config", type=Path, default=None, help="microscope TOML file")
    console.add_argument("--data-dir", type=Path, default=None,
                         help="data directory whose catalog the runs panel lists")
    console.add_argument("--catalog", default=None,
                         help="a tiled server URI to list runs from instead")
    console.add_argument("--host", default="127.0.0.1",
                         help="address to serve on (default 127.0.0.1: this host only)")
    console.add_argument("--port", type=tcp_port, default=8080, help="HTTP port (default 8080)")
    console.add_argument("--api-key", default=None,
                         help="key for writes (default: $BEAMLINE_LS_CONSOLE_API_KEY, else "
                         "generated and printed)")
    console.add_argument("--queue", default=None,
                         help="bluesky-httpserver URI (beamline-ls queue: "
                         "http://127.0.0.1:60610) to show and control the queue")
    console.add_argument("--queue-api-key", default=None,
                         help="its API key (default: $BEAMLINE_LS_QUEUE_API_KEY)")
    console.set_defaults(func=_cmd_console)

    copies = sub.add_parser("copies", help="point the catalog at verified copies of "
                            "frame files (the session does this by itself)")
    copies.add_argument("--data-dir", type=Path, default=None, help="data directory")
    copies.set_defaults(func=_cmd_copies)

    verify = sub.add_parser("verify", help="check a run file's frames: every frame file "
                            "present and every chunk passing its checksum")
    verify.add_argument("run_file", type=Path, help="a run file (<data dir>/runs/...)")
    verify.set_defaults(func=_cmd_verify)

    screens = sub.add_parser("screens", help="write Phoebus screens (.bob) of every device, "
                             "generated from the IOC's PVs")
    screens.add_argument("out_dir", type=Path, help="directory for overview.bob and the "
                         "device screens")
    screens.add_argument("--prefix", default=None, help="PV prefix (default from config)")
    screens.add_argument("--config", type=Path, default=None, help="microscope TOML file")
    screens.set_defaults(func=_cmd_screens)

    conc = sub.add_parser("concurrence", help="where the frame pipeline's time went: "
                          "per-stage latencies of a saved concurrence log")
    conc.add_argument("log", type=Path, help="a *.concurrence.csv file")
    conc.set_defaults(func=_cmd_concurrence)

    for name, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(name, add_help=False, help=help_text).set_defaults(func=None)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        module_name = PASSTHROUGH[argv[0]][0]
        bls_log.configure()
        return int(importlib.import_module(module_name).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    bls_log.configure(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, TimeoutError, RuntimeError,
            ConnectionError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
