"""Phoebus display files (``.bob``) for the microscope, generated from the IOC's own
PV definitions: ``beamline-ls screens OUT_DIR``.

Each screen is built from the PVGroups the IOC serves (:func:`beamline_ls.iocs.server.
build_groups`), so a PV on a screen is a PV of the IOC by construction, and a PV added
to a group shows up on the next generation. Screens address PVs as ``$(P)suffix``; the
prefix is a display macro (default: the configured prefix), so the same files serve any
prefix.

Written: ``overview.bob`` (every device: a few status PVs and a button to its screen)
and one screen per device: the camera's driver, live image and file writer
(``camera-cam1.bob``, ``camera-image1.bob``, ``camera-HDF1.bob``), the scan board, the
piezo, galvos and stage axes (motor-record fields), the laser and the gating trigger.
Each row shows a PV's name (its description as tooltip), its value, and an entry
(text, number, or a menu for an enumeration) when it is writable. ADCore's own screens
also work on the camera (see ``tests/test_areadetector_pvs.py``).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from caproto import ChannelChar, ChannelEnum
from caproto.server import PVGroup

from beamline_ls.config import Settings

log = logging.getLogger(__name__)

ROW_H = 24
LABEL_W = 230
VALUE_W = 220
ENTRY_W = 180
#: motor-record fields a motor screen shows, in this order (those the record has)
MOTOR_FIELDS = ("DESC", "VAL", "RBV", "DMOV", "MOVN", "EGU", "HLM", "LLM", "DHLM", "DLLM",
                "OFF", "DIR", "FOFF", "SET", "TWV", "TWF", "TWR", "JOGF", "JOGR", "HOMF",
                "HOMR", "STOP", "SPMG", "VELO", "MSTA", "HLS", "LLS", "LVIO", "PREC", "MRES")
IMAGES = {"cam1:Preview_RBV": "preview", "image1:ArrayData": "live image"}
#: what the overview shows of a screen (when the screen has them)
OVERVIEW = {
    "camera-cam1.bob": ("cam1:DetectorState_RBV", "cam1:ArrayRate_RBV",
                        "cam1:ArrayCounter_RBV", "cam1:StatusMessage_RBV"),
    "camera-image1.bob": ("image1:ArrayRate_RBV", "image1:UniqueId_RBV",
                          "image1:DroppedArrays_RBV"),
    "camera-HDF1.bob": ("HDF1:Capture_RBV", "HDF1:NumCaptured_RBV", "HDF1:WriteStatus",
                        "HDF1:WriteMessage"),
}


@dataclass(frozen=True)
class Row:
    """One PV on a screen: ``suffix`` after the prefix."""

    suffix: str
    writable: bool
    enum: bool
    text: bool
    doc: str = ""


@dataclass(frozen=True)
class Screen:
    file: str
    title: str
    rows: tuple[Row, ...]
    images: tuple[tuple[str, int, int], ...] = ()  # (suffix, width, height)


def _row(suffix: str, instance) -> Row | None:
    if isinstance(instance, ChannelChar):
        text = True
    elif getattr(instance, "max_length", 1) > 1:
        return None  # arrays: images below, or nothing a row can show
    else:
        text = False
    writable = not getattr(getattr(instance, "pvspec", None), "read_only", False)
    doc = getattr(getattr(instance, "pvspec", None), "doc", None) or ""
    return Row(suffix, bool(writable), isinstance(instance, ChannelEnum), text, doc)


def _group_rows(group: PVGroup, prefix: str) -> tuple[Row, ...]:
    rows = []
    for name, instance in group.pvdb.items():
        row = _row(name[len(prefix):], instance)
        if row is not None:
            rows.append(row)
    return tuple(rows)


def _motor_rows(group: PVGroup, prefix: str) -> tuple[Row, ...]:
    name = group.prefix  # the motor record (beside it: ``_able``, the screens' switch)
    record = group.pvdb[name]
    fields = record.fields
    rows = [Row(f"{name[len(prefix):]}_able", True, True, False)]
    for field in MOTOR_FIELDS:
        instance = fields.get(field)
        if instance is None:
            continue
        read_only = field in {"RBV", "DMOV", "MOVN", "MSTA", "HLS", "LLS", "LVIO", "MRES"}
        rows.append(Row(f"{name[len(prefix):]}.{field}", not read_only,
                        isinstance(instance, ChannelEnum), isinstance(instance, ChannelChar)))
    return tuple(rows)


def device_screens(groups: Iterable[PVGroup], prefix: str,
                   frame_shape: tuple[int, int]) -> list[Screen]:
    """One :class:`Screen` per device of the IOC's ``groups``."""
    from beamline_ls.iocs.camera import CameraGroup
    from beamline_ls.iocs.motor import MotorGroup

    screens = []
    for group in groups:
        if isinstance(group, CameraGroup):
            for plugin, sub in (("cam1", group.cam), ("image1", group.image),
                                ("HDF1", group.hdf)):
                images = []
                for suffix in IMAGES:
                    if suffix.startswith(plugin + ":"):
                        size = ((128, 128) if suffix.endswith("Preview_RBV")
                                else (frame_shape[1], frame_shape[0]))
                        images.append((suffix, *size))
                screens.append(Screen(f"camera-{plugin}.bob", f"Camera {plugin}:",
                                      _group_rows(sub, prefix), tuple(images)))
        elif isinstance(group, MotorGroup):
            suffix = group.prefix[len(prefix):]
            screens.append(Screen(f"{suffix.replace(':', '-')}.bob", f"Motor {suffix}",
                                  _motor_rows(group, prefix)))
        else:
            suffix = group.prefix[len(prefix):].rstrip(":")
            screens.append(Screen(f"{suffix}.bob", suffix.capitalize(),
                                  _group_rows(group, prefix)))
    return screens


# -- XML -------------------------------------------------------------------------------
def _widget(parent: ET.Element, kind: str, name: str, x: int, y: int, w: int, h: int,
            version: str = "2.0.0", **props: str) -> ET.Element:
    el = ET.SubElement(parent, "widget", type=kind, version=version)
    for key, value in (("name", name), ("x", x), ("y", y), ("width", w), ("height", h)):
        ET.SubElement(el, key).text = str(value)
    for key, value in props.items():
        ET.SubElement(el, key).text = value
    return el


def _display(title: str, prefix: str, width: int, height: int) -> ET.Element:
    root = ET.Element("display", version="2.0.0")
    ET.SubElement(root, "name").text = title
    macros = ET.SubElement(root, "macros")
    ET.SubElement(macros, "P").text = prefix
    ET.SubElement(root, "width").text = str(width)
    ET.SubElement(root, "height").text = str(height)
    heading = _widget(root, "label", "title", 10, 6, width - 20, 28, text=title)
    font = ET.SubElement(heading, "font")
    ET.SubElement(font, "font", family="Liberation Sans", style="BOLD", size="18.0")
    return root


def _write(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def _screen_xml(screen: Screen, prefix: str) -> ET.Element:
    width = 10 + LABEL_W + VALUE_W + ENTRY_W + 30
    image_h = sum(min(h, 512) + 30 for _, _, h in screen.images)
    height = 50 + ROW_H * len(screen.rows) + image_h + 20
    root = _display(screen.title, prefix, max(width, 520), height)
    y = 44
    for i, row in enumerate(screen.rows):
        pv = f"$(P){row.suffix}"
        label = _widget(root, "label", f"label {i}", 10, y, LABEL_W, ROW_H - 4,
                        text=row.suffix)
        if row.doc:
            ET.SubElement(label, "tooltip").text = row.doc
        _widget(root, "textupdate", f"value {i}", 10 + LABEL_W, y, VALUE_W, ROW_H - 4,
                pv_name=pv)
        if row.writable:
            kind, version = ("combo", "2.0.0") if row.enum else ("textentry", "3.0.0")
            _widget(root, kind, f"entry {i}", 20 + LABEL_W + VALUE_W, y, ENTRY_W, ROW_H - 4,
                    version=version, pv_name=pv)
        y += ROW_H
    for suffix, w, h in screen.images:
        y += 10
        _widget(root, "label", f"{suffix} title", 10, y, 400, 20,
                text=IMAGES.get(suffix, suffix))
        scale = min(1.0, 512 / max(w, h))
        _widget(root, "image", suffix, 10, y + 22, int(w * scale), int(h * scale),
                pv_name=f"$(P){suffix}", data_width=str(w), data_height=str(h))
        y += int(h * scale) + 30
    return root


def _overview_xml(screens: list[Screen], prefix: str) -> ET.Element:
    per = 4  # status PVs shown per device
    box_h = 30 + ROW_H * per
    root = _display("Light-sheet microscope", prefix, 760, 50 + len(screens) * (box_h + 10))
    y = 44
    for screen in screens:
        wanted = OVERVIEW.get(screen.file)
        status = ([r for r in screen.rows if r.suffix in wanted] if wanted else
                  [r for r in screen.rows if not r.writable and not r.text][:per])
        button = _widget(root, "action_button", f"open {screen.file}", 10, y, 220, 26,
                         version="3.0.0", text=screen.title)
        actions = ET.SubElement(button, "actions")
        action = ET.SubElement(actions, "action", type="open_display")
        ET.SubElement(action, "file").text = screen.file
        ET.SubElement(action, "target").text = "tab"
        ET.SubElement(action, "description").text = screen.title
        for j, row in enumerate(status):
            _widget(root, "label", f"{screen.file} label {j}", 240, y + j * ROW_H, 260,
                    ROW_H - 4, text=row.suffix)
            _widget(root, "textupdate", f"{screen.file} value {j}", 500, y + j * ROW_H, 240,
                    ROW_H - 4, pv_name=f"$(P){row.suffix}")
        y += max(box_h, 30) + 10
    return root


def write_screens(out_dir: str | Path, settings: Settings) -> list[Path]:
    """Write the overview and every device screen into ``out_dir``; returns the files.

    The PVs come from the simulated IOC of ``settings`` (its prefix); a deployment's
    real hardware serves the same PV names."""
    from beamline_ls.hardware.factory import build_drivers
    from beamline_ls.iocs.server import build_groups

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drivers = build_drivers()
    try:
        groups = build_groups(settings, drivers)
        shape = drivers.camera.sensor_shape
        screens = device_screens(groups, settings.prefix, shape)
    finally:
        close = getattr(drivers, "close", None)
        if close is not None:
            close()
    files = []
    for screen in screens:
        path = out / screen.file
        _write(_screen_xml(screen, settings.prefix), path)
        files.append(path)
    overview = out / "overview.bob"
    _write(_overview_xml(screens, settings.prefix), overview)
    log.info("wrote %d screens to %s (open overview.bob in Phoebus)", len(files) + 1, out)
    return [overview, *files]
