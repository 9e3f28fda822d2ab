"""Names of the files of a capture that rolled over (``NAME.h5``, ``NAME_001.h5``, ...).

Kept apart from the writer so clients (the ophyd devices in the RunEngine process) can
name the files without importing HDF5 writing and its compiled checksum kernel.
"""

from __future__ import annotations

from pathlib import Path


def part_path(first: str | Path, index: int) -> Path:
    """The name of file ``index`` (0, 1, ...) of a capture whose first file is ``first``."""
    first = Path(first)
    return first if index == 0 else first.with_name(f"{first.stem}_{index:03d}{first.suffix}")
