"""How a failed read of a frame file is told to the user: which file, what HDF5 said,
and whether it looks like damage (then the file must be restored from a copy).

HDF5's own messages ("Can't synchronously read data (filter returned failure ...)")
name neither the file nor the remedy; every reader of frame files (the catalog's
adapter, ``beamline-ls verify``) words its failures here, the same way.
"""

from __future__ import annotations

#: What HDF5 says when a chunk's checksum fails or the file ends early.
DAMAGE_SIGNS = ("filter returned failure", "truncated file", "fletcher32", "addr overflow",
                "bad heap", "wrong fractal heap", "bad object header", "bad symbol table",
                "file signature not found")


class DamagedFrameFile(OSError):
    """A frame file could not be read; the message names the file(s) and the cause."""


def looks_damaged(exc: BaseException) -> bool:
    return any(sign in str(exc).lower() for sign in DAMAGE_SIGNS)


def describe_failure(files: list[str], exc: BaseException) -> str:
    """One sentence for a failed read of ``files``."""
    cause = f"{type(exc).__name__}: {exc}"
    named = files[0] if len(files) == 1 else f"one of {len(files)} files ({', '.join(files)})"
    if looks_damaged(exc):
        return (f"frame file {named} is damaged (truncated, or a chunk fails its "
                f"checksum); restore it from a copy. HDF5 said: {cause}")
    return f"cannot read frame file {named}: {cause}"
