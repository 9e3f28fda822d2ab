"""Check a run file's frames: every file its virtual datasets read from is there and
whole, every chunk passes its checksum.

Why: HDF5 reads a virtual dataset whose source file is missing as fill values (no
error), and a damaged source raises HDF5's own message, which names neither the file
nor the run. ``beamline-ls verify RUN.h5`` reads every source chunk once and names each
missing or damaged file, so a scientist knows what to restore before analysing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
from h5py import h5s

from beamline_ls.damage import describe_failure


@dataclass(frozen=True)
class SourceCheck:
    """The outcome for one frame file the run file's virtual datasets read from."""

    file: Path
    datasets: tuple[str, ...]  # read from this file
    used_by: tuple[str, ...]  # the run file's virtual datasets
    frames: int = 0
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def _each_mapping(run_file: Path, use: Callable[[str, h5py.Dataset, Any, Path], None]
                  ) -> None:
    """Call ``use(name, dataset, mapping, source path)`` for every mapping of every
    virtual dataset of ``run_file``; source paths resolved as HDF5 does (relative to
    the run file's directory)."""
    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and obj.is_virtual:
            for vs in obj.virtual_sources():
                src = Path(vs.file_name)
                if not src.is_absolute():
                    src = run_file.parent / src
                use(name, obj, vs, src.resolve())

    with h5py.File(run_file, "r") as f:
        f.visititems(visit)


def virtual_sources(run_file: str | Path) -> dict[Path, list[tuple[str, str]]]:
    """Every source file the run file's virtual datasets read, with ``(virtual
    dataset, source dataset)`` pairs."""
    found: dict[Path, list[tuple[str, str]]] = {}

    def note(name: str, dataset: h5py.Dataset, vs: Any, src: Path) -> None:
        pairs = found.setdefault(src, [])
        if (name, vs.dset_name) not in pairs:
            pairs.append((name, vs.dset_name))

    _each_mapping(Path(run_file), note)
    return found


def mapped_rows(run_file: str | Path) -> dict[tuple[Path, str], int]:
    """For each (source file, source dataset) the run file's virtual datasets read,
    how many leading rows they map from it (HDF5 reads rows the source lacks as fill
    values, with no error)."""
    rows: dict[tuple[Path, str], int] = {}

    def note(name: str, dataset: h5py.Dataset, vs: Any, src: Path) -> None:
        try:
            if vs.src_space.get_select_type() == h5s.SEL_ALL:
                # the whole source, as many rows as it fills in the dataset
                if vs.vspace.get_select_type() == h5s.SEL_ALL:
                    n = int(dataset.shape[0])
                else:
                    first, last = vs.vspace.get_select_bounds()
                    n = int(last[0]) - int(first[0]) + 1
            else:
                n = int(vs.src_space.get_select_bounds()[1][0]) + 1
        except (ValueError, RuntimeError, IndexError):  # unlimited, empty
            return
        key = (src, vs.dset_name)
        rows[key] = max(rows.get(key, 0), n)

    _each_mapping(Path(run_file), note)
    return rows


def check_source(src: Path, pairs: list[tuple[str, str]],
                 read_chunks: bool = True,
                 rows_mapped: dict[tuple[Path, str], int] | None = None) -> SourceCheck:
    """Read every chunk of every dataset used from ``src`` (HDF5 checks each chunk's
    checksum on read); with ``read_chunks`` False only that the file exists, opens and
    holds those datasets (the quick check ``export`` makes). ``rows_mapped`` (from
    `mapped_rows`): a dataset that holds fewer rows than the run file maps from it is
    a problem (a writer that died before it flushed them)."""
    used_by = tuple(dict.fromkeys(u for u, _ in pairs))
    datasets = tuple(dict.fromkeys(d for _, d in pairs))
    if not src.exists():
        return SourceCheck(src, datasets, used_by, problem=(
            f"frame file {src} is missing: {', '.join(used_by)} read fill values there"))
    frames = 0
    short: list[str] = []
    try:
        with h5py.File(src, "r") as f:
            for name in datasets:
                data = f[name]
                if read_chunks and data.chunks is None:
                    data[...]
                elif read_chunks:
                    for chunk in data.iter_chunks():
                        data[chunk]
                frames = max(frames, int(data.shape[0]) if data.shape else 1)
                need = (rows_mapped or {}).get((src.resolve(), name), 0)
                if data.shape and need > data.shape[0]:
                    short.append(f"{name} holds {data.shape[0]} rows, the run maps {need}")
    except (OSError, KeyError, RuntimeError) as exc:
        return SourceCheck(src, datasets, used_by, problem=describe_failure([str(src)], exc))
    if short:
        return SourceCheck(src, datasets, used_by, frames=frames, problem=(
            f"frame file {src} is short: {'; '.join(short)} (the rows it lacks read as "
            f"fill values in {', '.join(used_by)})"))
    return SourceCheck(src, datasets, used_by, frames=frames)


def sources_present(run_file: str | Path) -> list[SourceCheck]:
    """The quick check of every frame file ``run_file`` reads (no chunk is read, so
    checksums are not checked: that is :func:`verify_run_file`). For ``export``, which
    must not call a run whose frames are gone exported and fine."""
    rows = mapped_rows(run_file)
    return [check_source(src, pairs, read_chunks=False, rows_mapped=rows)
            for src, pairs in virtual_sources(run_file).items()]


class NotARunFile(ValueError):
    """The file is readable HDF5 but not a run file (a frame file, another program's)."""


def embedded_datasets(f: h5py.File) -> list[str]:
    """The run file's own chunked datasets (frames copied in by ``export --embed``,
    and any other array stored in chunks): HDF5 checks their checksums on read."""
    names: list[str] = []

    def visit(name: str, obj) -> None:
        if (isinstance(obj, h5py.Dataset) and not obj.is_virtual
                and obj.chunks is not None and obj.size > 0):
            names.append(name)

    f.visititems(visit)
    return names


def _check_embedded(run_file: Path, names: list[str]) -> SourceCheck:
    """Read every chunk of the run file's own chunked datasets."""
    rows = 0
    try:
        with h5py.File(run_file, "r") as f:
            for name in names:
                data = f[name]
                for chunk in data.iter_chunks():
                    data[chunk]
                rows = max(rows, int(data.shape[0]) if data.shape else 1)
    except (OSError, KeyError, RuntimeError) as exc:
        return SourceCheck(run_file, tuple(names), tuple(names), problem=describe_failure(
            [str(run_file)], exc).replace(f"frame file {run_file}",
                                          f"run file {run_file} (a dataset stored in it)", 1))
    return SourceCheck(run_file, tuple(names), tuple(names), frames=rows)


def run_status(run_file: str | Path) -> tuple[str, str]:
    """The run's exit status and reason as its run file says them ("" if unreadable)."""
    try:
        with h5py.File(run_file, "r") as f:
            values = [f.attrs.get(key, "") for key in ("exit_status", "reason")]
    except OSError:
        return "", ""
    status, reason = (v.decode() if isinstance(v, bytes) else str(v) for v in values)
    return status, reason


def verify_run_file(run_file: str | Path,
                    progress: Callable[[SourceCheck], None] | None = None
                    ) -> list[SourceCheck]:
    """Check every frame file of ``run_file`` and the frames stored in it (``export
    --embed``); ``progress`` sees each outcome.

    A run file that HDF5 cannot open (truncated, overwritten) is one damaged file in
    the result; a readable HDF5 file that is not a run file raises `NotARunFile`, so
    a frame file or someone else's file is never reported as checked and fine.
    """
    from beamline_ls.runfile.runfile import LAYOUT

    run_file = Path(run_file)
    try:
        with h5py.File(run_file, "r") as f:
            layout = f.attrs.get("layout")
            own = embedded_datasets(f)
    except OSError as exc:
        problem = describe_failure([str(run_file)], exc).replace("frame file", "run file", 1)
        if not h5py.is_hdf5(run_file):
            problem = (f"{run_file} is not an HDF5 file (no HDF5 signature at its start): "
                       "not a run file, or one overwritten from the start")
        result = SourceCheck(run_file, (), (), problem=problem)
        if progress is not None:
            progress(result)
        return [result]
    if isinstance(layout, bytes):
        layout = layout.decode()
    if layout != LAYOUT:
        raise NotARunFile(f"{run_file} is not a beamline-ls run file (its layout attribute "
                          f"is {layout!r}, not {LAYOUT!r}); verify checks the files under "
                          "<data dir>/runs and those `beamline-ls export` writes")
    rows = mapped_rows(run_file)
    checks = [lambda s=src, p=pairs: check_source(s, p, rows_mapped=rows)
              for src, pairs in virtual_sources(run_file).items()]
    if own:
        checks.append(lambda: _check_embedded(run_file, own))
    results = []
    for check in checks:
        result = check()
        results.append(result)
        if progress is not None:
            progress(result)
    return results
