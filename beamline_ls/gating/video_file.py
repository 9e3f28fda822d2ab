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
- a file written frame by frame (tifffile's ``append=True`` or a ``TiffWriter.write``
  loop stores each frame as a series of its own) is read as one stack of its pages;
- an uncompressed stack is memory-mapped read-only, whatever its pixel type and byte
  order, and every conversion below is made one frame at a time as replay reads it, so
  a recording larger than memory replays (a compressed one is read whole);
- RGB(A) samples become luminance (ITU-R BT.601 weights; alpha ignored), in the
  video's own bit depth; big-endian pixels (ImageJ's default) become native;
- other pixel types are mapped linearly from the video's own minimum and maximum onto
  0..65535 (found in one pass over the frames first). The analyzer's thresholds are
  relative to the video's own noise and contrast, so an affine map of the grey levels
  changes nothing it decides.
What cannot be meant as one grey video is refused, saying why: several colour
channels of a fluorescence hyperstack (which one is brightfield?), two axes besides
the image (time and z?), non-finite pixels, a video with one frame or tiny frames.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: more "channels" than this on the only axis besides the image are frames in time
MAX_CHANNELS = 8
#: ITU-R BT.601 luma weights for R, G, B
LUMA = np.array([0.299, 0.587, 0.114])


class VideoError(ValueError):
    """The file cannot be read as one brightfield video (the message says why)."""


def load_video(path: str | Path) -> tuple[np.ndarray | FrameView, list[str]]:
    """``(frames, notes)`` from a TIFF video; see the module docstring. ``frames`` is
    an array of uint8 or uint16 frames, or a `FrameView` converting them one by one."""
    import tifffile

    p = Path(path)
    if p.is_dir():
        raise VideoError(f"{p} is a directory; give the TIFF file of the video")
    if not p.is_file():
        raise VideoError(f"video file not found: {p}")
    notes: list[str] = []
    try:
        with tifffile.TiffFile(p) as tif:
            data, axes = _pages_as_frames(p, tif, notes)
            if data is None:
                series = tif.series[0]
                axes = series.axes.upper()  # single-valued axes already dropped
                grey = axes.replace("S", "")
                if not (grey[-2:] == "YX" and len(grey) == 3):
                    # not one stack: pages of different sizes or types split the file
                    # into series (each page read only now: a long video is not)
                    mixed = _odd_page(tif)
                    if mixed:
                        raise VideoError(f"{p.name}: {mixed}")
                data = _mapped(p, series)
                if data is None:
                    data = series.asarray()
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input
        raise VideoError(f"cannot read TIFF {p}: {exc}") from exc
    if axes.count("C") == 1 and len(axes) == 3 and axes.endswith("YX") \
            and data.shape[0] > MAX_CHANNELS:
        # tifffile's imagej=True labels the one axis of a plain 3-D stack as channels:
        # with no other axis, and more of them than any microscope records, it can
        # only be time (a few channels stay refused below: which one is brightfield?)
        axes = "T" + axes[1:]
        notes.append(f"read the file's only axis besides the image ({data.shape[0]} "
                     "'channels') as time")
    if "C" in axes and data.shape[axes.index("C")] > 1:
        raise VideoError(f"the file holds {data.shape[axes.index('C')]} channels (axes "
                         f"{axes!r}); gating needs the brightfield channel alone")
    grey_axes = axes.replace("S", "") if "S" in axes else axes
    if grey_axes[-2:] != "YX" or len(grey_axes) != 3:
        raise VideoError(f"expected one stack of 2-D frames; {p.name} has axes {axes!r} "
                         f"of sizes {data.shape} (two axes besides the image, or no time "
                         "axis); save the brightfield time series alone")
    frames = _grey_frames(data, axes, notes)
    if frames.shape[0] < 2 or min(frames.shape[1:]) < 8:
        raise VideoError(f"video too small: shape {tuple(frames.shape)}")
    return _pixels(frames, notes), notes


class FrameView:
    """A video's frames converted one at a time from ``source`` (a memory map, or an
    array read whole) as they are read: ``view[k]`` is frame ``k`` as ``dtype``;
    ``len``, ``shape`` and ``dtype`` as for an array. ``np.asarray(view)`` converts
    them all (small videos and tests)."""

    ndim = 3

    def __init__(self, source, convert, dtype, frame_shape: tuple[int, int]) -> None:
        self._source = source
        self._convert = convert
        self.dtype = np.dtype(dtype)
        self.shape = (int(source.shape[0]), *frame_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k):
        if isinstance(k, (int, np.integer)):
            return self._convert(self._source[int(k)])
        return np.stack([self[i] for i in range(len(self))[k]])

    def __array__(self, dtype=None, copy=None):
        out = np.stack([self[i] for i in range(len(self))])
        return out if dtype is None else out.astype(dtype)


def _odd_page(tif) -> str:
    """Why the file's pages are not one video's frames: the first page whose size or
    type differs from the first page's (a frame of another camera setting, a thumbnail
    or a mask saved into the stack), or "" when every page is alike."""
    pages = tif.pages
    if len(pages) < 2:
        return ""
    first = pages.first
    for k in range(1, len(pages)):
        page = pages[k]
        if page.shape != first.shape or page.dtype != first.dtype:
            return (f"page {k} is {'x'.join(map(str, page.shape))} {page.dtype}, the "
                    f"pages before it {'x'.join(map(str, first.shape))} {first.dtype}: "
                    "every frame of a video has the first frame's size and type")
    return ""


def _pages_as_frames(path: Path, tif, notes: list[str]) -> tuple[np.ndarray | None, str]:
    """A file written frame by frame holds one single-page series per frame, all
    alike: its pages are the frames (memory-mapped when stored uncompressed at equal
    steps). ``(None, "")`` for any other file."""
    series = tif.series
    first = series[0]
    if len(series) < 2 or any(len(s.pages) != 1 or s.shape != first.shape
                              or s.dtype != first.dtype for s in series):
        return None, ""
    axes = "T" + first.axes.upper()
    notes.append(f"read the file's {len(series)} single-page series (one per frame, as "
                 "a frame-by-frame writer stores them) as the frames")
    pages = [s.pages[0] for s in series]
    offsets = [pg.dataoffsets[0] if len(pg.dataoffsets) == 1 else -1 for pg in pages]
    steps = np.diff(offsets)
    nbytes = int(np.prod(first.shape)) * first.dtype.itemsize
    if (all(pg.compression == 1 and pg.is_contiguous for pg in pages) and min(offsets) >= 0
            and steps.size and (steps == steps[0]).all() and steps[0] >= nbytes):
        dtype = first.dtype.newbyteorder(tif.byteorder)
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        inner = tuple(int(x) for x in np.cumprod((1, *first.shape[::-1]))[-2::-1]
                      * dtype.itemsize)
        return np.ndarray((len(pages), *first.shape), dtype, mm, offsets[0],
                          (int(steps[0]), *inner)), axes
    return tif.asarray(key=slice(None)), axes


def _mapped(path: Path, series) -> np.ndarray | None:
    """The series memory-mapped when it is stored uncompressed in one piece (most
    camera and Fiji stacks): a recording of many gigabytes is then read frame by frame
    as replay goes, not into memory first. None otherwise."""
    if series.dataoffset is None:
        return None
    import tifffile

    try:  # read-only, and never a copy in a temporary file
        return tifffile.memmap(path, series=0, mode="r")
    except ValueError:  # not memory-mappable after all
        return None


def _grey_frames(data: np.ndarray, axes: str, notes: list[str]) -> np.ndarray | FrameView:
    """Frames of one grey level per pixel in native byte order: colour samples ('S')
    to luminance, big-endian to native, frame by frame."""
    native = data.dtype.newbyteorder("=")
    if "S" not in axes or data.shape[axes.index("S")] == 1:
        frames = data.reshape(data.shape[0], *data.shape[-2:]) if "S" in axes else data
        if data.dtype.isnative:
            return frames
        return FrameView(frames, lambda f: f.astype(native), native, frames.shape[1:])
    i = axes.index("S")
    n = data.shape[i]
    if n not in (3, 4):
        raise VideoError(f"{n} samples per pixel; expected grey, RGB or RGBA")
    notes.append(f"converted {'RGBA' if n == 4 else 'RGB'} to grey (luminance)")
    luma = LUMA.astype(np.float32)
    integer = native in (np.uint8, np.uint16)

    def grey(frame: np.ndarray) -> np.ndarray:
        g = np.moveaxis(frame, i - 1, -1)[..., :3].astype(np.float32) @ luma
        return np.rint(g).astype(native) if integer else g

    shape = tuple(s for k, s in enumerate(data.shape) if k not in (0, i))
    return FrameView(data, grey, native if integer else np.float32, shape)


def _pixels(frames, notes: list[str]):
    """uint8/uint16 as they are; anything else mapped linearly onto 0..65535, frame
    by frame, from the video's own range (one pass first)."""
    if frames.dtype in (np.uint8, np.uint16):
        return frames
    if frames.dtype.kind not in "iuf":
        raise VideoError(f"pixels of type {frames.dtype} are not grey levels")
    lo, hi = math.inf, -math.inf
    for k in range(frames.shape[0]):  # no float copy of the whole video
        f = frames[k]
        if f.dtype.kind == "f" and not np.isfinite(f).all():
            raise VideoError("the video has NaN or infinite pixels")
        lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
    shape = tuple(frames.shape[1:])
    if not hi > lo:  # nothing changes: no heartbeat, said later
        return FrameView(frames, lambda f: np.zeros(shape, np.uint16), np.uint16, shape)
    scale = 65535.0 / (hi - lo)
    notes.append(f"mapped {frames.dtype} pixels {lo:.6g}..{hi:.6g} linearly onto 0..65535")
    return FrameView(frames, lambda f: np.rint((f.astype(np.float64) - lo) * scale)
                     .astype(np.uint16), np.uint16, shape)
