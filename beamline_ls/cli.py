"""``beamline-ls`` command line: demo, ioc, replay, export, bench, check-hardware."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from beamline_ls import log as bls_log

logger = logging.getLogger("beamline_ls.cli")


def _cmd_ioc(args: argparse.Namespace) -> int:
    from beamline_ls.config import load_settings
    from beamline_ls.iocs.server import serve

    settings = load_settings(args.config, data_dir=args.data_dir, prefix=args.prefix)
    settings.ensure_dirs()
    serve(settings.prefix, settings.frames_dir, settings.hardware)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from beamline_ls.demo import run_demo

    return run_demo(data_dir=args.data_dir, prefix=args.prefix, n_volumes=args.volumes)


# Subcommands with their own argument parser: (module with main(argv), one-line help).
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "replay": ("beamline_ls.gating.replay",
               "run optical gating on a recorded brightfield TIFF stack"),
    "export": ("beamline_ls.runfile.export",
               "write a stored run as one HDF5 file (RUN --to FILE.h5)"),
    "bench": ("beamline_ls.pipeline.bench",
              "does my disk keep up? bench writer --shape 2048x2048 --rate 100"),
    "check-hardware": ("beamline_ls.hardware.check",
                       "ask each configured device whether it answers (--config F)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamline-ls", description=__doc__)
    p.add_argument("--log-level", default=None, help="TRACE, DEBUG, INFO, SUCCESS, WARNING...")
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
    ioc.set_defaults(func=_cmd_ioc)

    for name, (_, text) in PASSTHROUGH.items():  # listed in --help, parsed by their own
        sub.add_parser(name, add_help=False, help=text).set_defaults(func=None)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        module = importlib.import_module(PASSTHROUGH[argv[0]][0])
        bls_log.configure()
        return int(module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    bls_log.configure(args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, TimeoutError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
