"""``beamline-ls export RUN --to FILE.h5``: the run file of any run in the catalog.

The run's documents are replayed from the catalog (``BlueskyRun.documents()``, which
asks the tiled app for the run as a JSON sequence of documents) through the same
:class:`~beamline_ls.runfile.writer.RunFileWriter` that writes files live, so runs
taken before the live writer existed get the same file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from beamline_ls import log as bls_log
from beamline_ls.catalog import enable_document_replay
from beamline_ls.runfile.writer import RunFileWriter

log = logging.getLogger(__name__)


def find_run(catalog: Any, run: str) -> Any:
    """The run named by ``run``: a scan_id, a negative recency index (-1), or a uid prefix.

    An all-digit string is tried as a scan_id first, then as a uid prefix (about 2 % of
    uids start with eight digits).
    """
    keys: list[int | str] = []
    try:
        keys.append(int(run))
    except ValueError:
        pass
    if not run.startswith("-"):
        keys.append(run)
    why = ""
    for key in keys:
        try:
            return catalog[key]
        except KeyError:
            continue
        except ValueError as exc:  # a uid prefix too short, or one of several runs'
            why = f": {exc}"
    raise LookupError(f"no run {run!r} in the catalog (give a scan_id, -1, or a uid "
                      f"prefix){why}")


def export_run(run: Any, path: str | Path, *, overwrite: bool = False,
               embed: bool = False) -> Path:
    """Write the run file of catalog run ``run`` to ``path``; return the path.

    Refuses an existing ``path`` unless ``overwrite``. ``embed`` copies the frames
    into the file (self-contained, readable without the data folder); a frame file
    that is missing then fails the export and no file is left.
    """
    path = Path(path).expanduser().resolve()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; use --overwrite to replace it")
    if not path.parent.is_dir():  # a mistyped folder is not made (at / if need be)
        raise FileNotFoundError(f"{path.parent} is not a directory: create it first, or "
                                "check the path")
    enable_document_replay()
    writer = RunFileWriter(path_for=lambda start: path, overwrite=overwrite,
                           written_by="export")
    seen_stop = False
    try:
        for name, doc in run.documents():
            doc = json.loads(json.dumps(doc))  # plain dicts, whatever the client returns
            if name == "stop":
                if not doc:  # a run that never stopped: the file says "incomplete"
                    continue
                seen_stop = True
            writer(name, doc)
    finally:
        writer.close()
    if not seen_stop:
        log.info("run %s has no stop document; %s says exit_status=incomplete",
                 run.metadata["start"]["uid"], path)
    if embed:
        from tqdm import tqdm

        from beamline_ls.runfile.embed import embed_frames

        bars: dict[str, Any] = {}

        def show(name: str, done: int, total: int) -> None:
            bar = bars.get(name) or bars.setdefault(
                name, tqdm(total=total, desc=name.rsplit("/", 1)[-1], unit="rows",
                           leave=False, disable=None))
            bar.update(done - bar.n)

        try:
            size = embed_frames(path, progress=show)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            for bar in bars.values():
                bar.close()
        log.info("%s: %.1f MB of frames and metadata embedded", path, size / 1e6)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="beamline-ls export", description=__doc__.split("\n")[0])
    p.add_argument("run", help="scan_id, uid (or prefix), or -1 for the latest run")
    p.add_argument("--catalog", default=None,
                   help="data directory of the deployment (default from configuration) "
                        "or a tiled server URI (http://...)")
    p.add_argument("--to", required=True, type=Path, dest="to", help="output file (.h5)")
    p.add_argument("--api-key", default=None,
                   help="the catalog server's API key (with an http:// --catalog; default: "
                        "the TILED_API_KEY environment variable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--embed", action="store_true",
                   help="copy the frames into the file (self-contained; larger)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from beamline_ls.catalog import open_catalog

    try:
        if args.catalog and args.catalog.startswith(("http://", "https://")):
            try:
                catalog = open_catalog(uri=args.catalog, api_key=args.api_key)
            except RuntimeError as exc:  # tiled: the server wants a key it did not get
                given = args.api_key or os.environ.get("TILED_API_KEY")
                raise ValueError(
                    f"{args.catalog}: the server did not accept the API key given"
                    if given else f"{args.catalog}: {exc} (give --api-key, or set "
                    "TILED_API_KEY)") from None
            except httpx.HTTPStatusError as exc:  # refused: a wrong key, or no catalog
                code = exc.response.status_code
                hint = " (is --api-key the server's key?)" if code in (401, 403) else ""
                raise ValueError(f"{args.catalog} refused the catalog: HTTP {code} "
                                 f"{exc.response.reason_phrase}{hint}") from None
        else:
            catalog = open_catalog(args.catalog)
        run = find_run(catalog, args.run)
        path = export_run(run, args.to, overwrite=args.overwrite, embed=args.embed)
    except (FileExistsError, FileNotFoundError, LookupError, ValueError, OSError) as exc:
        log.error("export of run %s failed: %s", args.run, exc)
        return 2
    except httpx.TransportError as exc:  # after tiled's own retries
        log.error("export of run %s failed: cannot reach the catalog at %s (%s: %s; "
                  "tiled retried for up to $TILED_RETRY_TIMEOUT s, default 45)",
                  args.run, args.catalog, type(exc).__name__, exc)
        return 2
    if not args.embed:  # the file reads its frames from the frame files: are they there?
        from beamline_ls.runfile.verify import sources_present

        problems = [c.problem for c in sources_present(path) if not c.ok]
        if problems:
            for problem in problems:
                log.error("%s", problem)
            log.error("run %s exported to %s, but %d frame file(s) it reads are missing "
                      "or unreadable (above); its frames there read as fill values",
                      args.run, path, len(problems))
            return 1
    bls_log.success(log, "run %s exported to %s%s", args.run, path,
                    "" if args.embed else " (frame files present; `beamline-ls verify "
                    f"{path}` reads every frame and checks its checksum)")
    return 0


if __name__ == "__main__":
    bls_log.configure()
    sys.exit(main())
