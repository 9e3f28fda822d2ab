"""A brightfield video file as the grey frame stack the analyzer takes.

What: `load_video` reads a TIFF (a plain stack, an ImageJ hyperstack, an OME-TIFF) and
returns ``(frames, notes)``: a ``(n, height, width)`` uint8 or uint16 array and the
one-line notes of every conversion made on the way.

Why: videos reach ``replay`` from other tools. Fiji and many camera programs save
brightfield as 8-bit RGB, as a hyperstack with singleton channel or slice axes, or as
32-bit float after processing; refusing them sends the user off to convert by hand,
and a careless conversion (floats in 0..1 cast to integers) leaves a black video that
"finds no heartbeat". What is converted, and how, is printed, never silent:
- the one axis besides height and width (single-valued axes of a hyperstack do not
  count) is time, also when the file calls it channels and has more than
  `MAX_CHANNELS` of them (tifffile's ``imagej=True`` does so for any 3-D stack);
- an uncompressed uint8/uint16 stack in the machine's byte order is memory-mapped
  read-only, so a recording larger than memory replays frame by frame (a big-endian
  one, ImageJ's default, is read whole into native order);
- RGB(A) samples become luminance (ITU-R BT.601 weights; alpha ignored), in the
  video's own bit depth;
- other pixel types are mapped linearly from the video's own minimum and maximum onto
  0..65535. The analyzer's thresholds are relative to the video's own noise and
  contrast, so an affine map of the grey levels changes nothing it decides.
What cannot be meant as one grey video is refused, saying why: several colour
channels of a fluorescence hyperstack (which one is brightfield?), two axes besides
the image (time and z?), non-finite pixels, a video with one frame or tiny frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: more "channels" than this on the only axis besides the image are frames in time
MAX_CHANNELS = 8
#: ITU-R BT.601 luma weights for R, G, B
LUMA = np.array([0.299, 0.587, 0.114])


class VideoError(ValueError):
    """The file cannot be read as one brightfield video (the message says why)."""


def load_video(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """``(frames, notes)`` from a TIFF video; see the module docstring."""
    import tifffile

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"video file not found: {p}")
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            axes = series.axes.upper()  # single-valued axes already dropped
            data = _mapped(p, series)
            if data is None:
                data = series.asarray()
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input
        raise VideoError(f"cannot read TIFF {p}: {exc}") from exc
    notes: list[str] = []
    if axes.count("C") == 1 and len(axes) == 3 and axes.endswith("YX") \
            and data.shape[0] > MAX_CHANNELS:
        # tifffile's imagej=True labels the one axis of a plain 3-D stack as channels:
        # with no other axis, and more of them than any microscope records, it can
        # only be time (a few channels stay refused below: which one is brightfield?)
        axes = "T" + axes[1:]
        notes.append(f"read the file's only axis besides the image ({data.shape[0]} "
                     "'channels') as time")
    data, axes = _grey(data, axes, notes)
    if axes[-2:] != "YX" or data.ndim != 3:
        raise VideoError(f"expected one stack of 2-D frames; {p.name} has axes {axes!r} "
                         f"of sizes {data.shape} (two axes besides the image, or no time "
                         "axis); save the brightfield time series alone")
    if data.shape[0] < 2 or min(data.shape[1:]) < 8:
        raise VideoError(f"video too small: shape {data.shape}")
    return _pixels(data, notes), notes


def _mapped(path: Path, series) -> np.ndarray | None:
    """The series memory-mapped when it is stored uncompressed in one piece as uint8 or
    uint16 (most camera and Fiji stacks): a recording of many gigabytes is then read
    frame by frame as replay goes, not into memory first. None otherwise."""
    if series.dataoffset is None or series.dtype not in (np.uint8, np.uint16):
        return None
    import tifffile

    try:  # read-only, and never a copy in a temporary file
        mapped = tifffile.memmap(path, series=0, mode="r")
    except ValueError:  # not memory-mappable after all
        return None
    # big-endian files (ImageJ's default) map as '>u2': read those into native order
    return mapped if mapped.dtype.isnative else None


def _grey(data: np.ndarray, axes: str, notes: list[str]) -> tuple[np.ndarray, str]:
    """Colour samples ('S') to luminance; several channels ('C') refused."""
    if "C" in axes and data.shape[axes.index("C")] > 1:
        raise VideoError(f"the file holds {data.shape[axes.index('C')]} channels (axes "
                         f"{axes!r}); gating needs the brightfield channel alone")
    if "S" not in axes:
        return data, axes
    i = axes.index("S")
    n = data.shape[i]
    if n == 1:
        return data, axes
    if n not in (3, 4):
        raise VideoError(f"{n} samples per pixel; expected grey, RGB or RGBA")
    rgb = np.moveaxis(data, i, -1)[..., :3].astype(np.float32)
    grey = rgb @ LUMA.astype(np.float32)
    if data.dtype in (np.uint8, np.uint16):
        grey = np.rint(grey).astype(data.dtype)
    notes.append(f"converted {'RGBA' if n == 4 else 'RGB'} to grey (luminance)")
    return grey, axes[:i] + axes[i + 1:]


def _pixels(data: np.ndarray, notes: list[str]) -> np.ndarray:
    """uint8/uint16 as they are; anything else mapped linearly onto 0..65535."""
    if data.dtype in (np.uint8, np.uint16):
        return data
    if data.dtype.kind not in "iuf":
        raise VideoError(f"pixels of type {data.dtype} are not grey levels")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise VideoError("the video has NaN or infinite pixels")
    lo, hi = float(data.min()), float(data.max())
    if not hi > lo:
        return np.zeros(data.shape, np.uint16)  # nothing changes: no heartbeat, said later
    out = np.empty(data.shape, np.uint16)
    scale = 65535.0 / (hi - lo)
    for k in range(data.shape[0]):  # frame by frame: no float copy of the whole video
        out[k] = np.rint((data[k].astype(np.float64) - lo) * scale)
    notes.append(f"mapped {data.dtype} pixels {lo:.6g}..{hi:.6g} linearly onto 0..65535")
    return out
