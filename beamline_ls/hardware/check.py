"""``beamline-ls check-hardware --config microscope.toml``: who answers, in plain words.

Connects to every device the configuration names with a real backend, asks each a
harmless question (identity, position, state) and reports what answered and what did
not. Nothing moves, no power changes and no NI task is started (the NI board is
only looked up: product, serial number, channels); cameras are opened as the IOC
opens them, so their configured settings (pixel format, ROI, exposure, trigger mode)
are applied, and nothing is acquired. Simulated devices are
listed as such. Exit status: 0 all configured hardware answered, 1 something did
not, 2 the configuration itself is wrong.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from beamline_ls.hardware import factory
from beamline_ls.hardware.serial_link import SerialDeviceError, SerialFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    device: str
    ok: bool
    text: str

    def line(self) -> str:
        return f"  [{'ok' if self.ok else 'NO'}] {self.device}: {self.text}"


SystemFactory = Callable[[], Any]


def _nidaq_system() -> Any:
    from nidaqmx.system import System

    return System.local()


def probe_nidaq(cfg: dict[str, Any], system_factory: SystemFactory | None = None) -> Finding:
    """Look up the NI device and every configured channel; start nothing."""
    c = factory.nidaq_config(cfg)

    def wanted(dev: Any) -> dict[str, tuple[list[str], Any]]:
        chans = {
            "analog output": ([c.phys(ch) for ch in c.ao_channels], dev.ao_physical_chans),
            "analog input": ([c.phys(c.piezo_ai_channel)] if c.piezo_ai_channel else [],
                             dev.ai_physical_chans),
        }
        if c.camera_output == "counter":
            chans["counter output"] = ([c.phys(c.camera_counter)], dev.co_physical_chans)
        else:
            chans["digital output"] = ([c.phys(c.camera_do_line)], dev.do_lines)
        return chans

    return _probe_ni_channels("scanboard", c.device, wanted, system_factory,
                              "; check 'device' in the TOML")


def _probe_ni_channels(finding: str, device: str,
                       wanted: Callable[[Any], dict[str, tuple[list[str], Any]]],
                       system_factory: SystemFactory | None, hint: str = "") -> Finding:
    """Find NI ``device`` and check that it has the channels ``wanted(device)`` names
    (kind -> (channel names, the device's collection of that kind)); start nothing."""
    import nidaqmx.errors

    try:
        system = (system_factory or _nidaq_system)()
        names = list(system.devices.device_names)
        if device not in names:
            return Finding(finding, False,
                           f"NI device {device!r} not found (devices present: "
                           f"{', '.join(names) or 'none'}){hint}")
        dev = system.devices[device]
        chans = wanted(dev)
        missing = []
        for kind, (names_of_kind, coll) in chans.items():
            have = set(coll.channel_names)
            missing += [f"{ch} ({kind})" for ch in names_of_kind if ch not in have]
        product = f"{dev.product_type} serial {dev.serial_num:X}" \
            if isinstance(dev.serial_num, int) else str(dev.product_type)
        if missing:
            return Finding(finding, False, f"NI {device} ({product}) answered but "
                                           f"lacks {', '.join(missing)}")
        every = [ch for names_of_kind, _ in chans.values() for ch in names_of_kind]
        return Finding(finding, True, f"NI {device} ({product}) answered; channels "
                                      f"{', '.join(every)} present")
    except nidaqmx.errors.DaqNotFoundError:
        return Finding(finding, False, "NI-DAQmx driver is not installed on this "
                                       "computer, so the NI board cannot be reached")
    except nidaqmx.errors.Error as exc:
        return Finding(finding, False, f"NI {device} did not answer: "
                                       f"{str(exc).splitlines()[0]}")


def probe_stage(cfg: dict[str, Any], serial_factory: SerialFactory | None = None) -> Finding:
    stage, link = factory.build_stage(cfg, serial_factory)
    try:
        pos = stage.where()
        state = "moving" if stage.busy() else "idle"
        where = ", ".join(f"{a.upper()}={v:.1f}" for a, v in pos.items())
        return Finding("stage", True, f"ASI controller on {link.port} answered: {where} um, "
                                      f"{state}")
    except SerialDeviceError as exc:
        return Finding("stage", False, f"did not answer: {exc}")
    finally:
        link.close()


def probe_laser(cfg: dict[str, Any], serial_factory: SerialFactory | None = None) -> Finding:
    laser, link = factory.build_laser(cfg, serial_factory)
    try:
        sn = laser.identify()
        on = laser.enabled()
        p = laser.power()
        return Finding("laser", True, f"laser head {sn} on {link.port} answered: emission "
                                      f"{'on' if on else 'off'}, output {p:.2f} mW "
                                      f"(limit {laser.max_power_mw:g} mW)")
    except SerialDeviceError as exc:
        return Finding("laser", False, f"did not answer: {exc}")
    finally:
        link.close()


def probe_trigger_box(cfg: dict[str, Any],
                      serial_factory: SerialFactory | None = None) -> Finding:
    box, link = factory.build_trigger_box(cfg, serial_factory)
    try:
        m = box.sync()
        n = box.pending()
        return Finding("trigger_box", True,
                       f"trigger box on {link.port} answered: clock at tick {m.ticks} "
                       f"({m.tick_s * 1e6:g} us ticks, round trip {m.rtt_s * 1e3:.2f} ms), "
                       f"{n} trigger(s) pending")
    except SerialDeviceError as exc:
        return Finding("trigger_box", False, f"did not answer: {exc}")
    finally:
        link.close()


def probe_brightfield(cfg: dict[str, Any], _unused: Any = None) -> Finding:
    """Open the gating camera (or read the recording) and report it; acquire nothing."""
    from beamline_ls.clock import RealTimeClock

    try:
        source = factory.build_brightfield(cfg, RealTimeClock())
    except ValueError:  # the configuration is wrong: check() reports it as such
        raise
    except Exception as exc:  # noqa: BLE001 - a missing SDK, in its own words
        return Finding("brightfield", False, f"{type(exc).__name__}: {exc}")
    try:
        h, w = source.frame_shape
        return Finding("brightfield", True, f"{source.name} answered: {w}x{h} "
                                            f"{source.dtype}")
    except Exception as exc:  # noqa: BLE001 - camera absent or refusing a setting
        return Finding("brightfield", False, str(exc))
    finally:
        source.close()


def probe_camera(cfg: dict[str, Any], _unused: Any = None) -> Finding:
    """Open the sCMOS through pylablib and report it; acquire nothing."""
    camera = factory.build_camera(cfg)
    try:
        camera.open()
        h, w = camera.sensor_shape
        t = camera.temperature_c()
        temp = f", sensor at {t:.1f} °C" if t == t else ""
        return Finding("camera", True, f"{camera.name} answered: sensor {w}x{h}{temp}")
    except Exception as exc:  # noqa: BLE001 - no SDK library, no camera: its own words
        return Finding("camera", False, f"{camera.name}: {type(exc).__name__}: {exc}")
    finally:
        try:
            camera.close()
        except Exception:  # noqa: BLE001 - never opened
            pass


def probe_nidaq_trigger(cfg: dict[str, Any],
                        system_factory: SystemFactory | None = None) -> Finding:
    """Look up the NI device and the gating trigger's counter or line; start nothing."""
    c = factory.nidaq_trigger_config(cfg)
    chan = f"{c.device}/{c.counter if c.output == 'counter' else c.do_line}"

    def wanted(dev: Any) -> dict[str, tuple[list[str], Any]]:
        if c.output == "counter":
            return {"counter output": ([chan], dev.co_physical_chans)}
        return {"digital output": ([chan], dev.do_lines)}

    return _probe_ni_channels("trigger_box", c.device, wanted, system_factory)


PROBES = {
    ("scanboard", "nidaqmx"): probe_nidaq,
    ("stage", "asi"): probe_stage,
    ("laser", "cobolt"): probe_laser,
    ("trigger_box", "serial"): probe_trigger_box,
    ("trigger_box", "nidaq"): probe_nidaq_trigger,
    ("camera", "pylablib"): probe_camera,
    ("brightfield", "pylon"): probe_brightfield,
    ("brightfield", "tiff"): probe_brightfield,
}
NI_PROBES = {probe_nidaq, probe_nidaq_trigger}


def check(hardware: dict[str, Any], *, serial_factory: SerialFactory | None = None,
          system_factory: SystemFactory | None = None) -> list[Finding]:
    """One finding per device (ValueError for a bad configuration)."""
    backends = factory.check_devices(hardware)
    found = []
    for device, backend in backends.items():
        if backend == "sim":
            found.append(Finding(device, True, "simulated (nothing to connect to)"))
            continue
        probe = PROBES[(device, backend)]
        if probe in NI_PROBES:
            found.append(probe(hardware[device], system_factory))
        else:
            found.append(probe(hardware[device], serial_factory))
    return found


def main(argv: list[str] | None = None, *, out: TextIO | None = None,
         serial_factory: SerialFactory | None = None,
         system_factory: SystemFactory | None = None) -> int:
    """``check-hardware --config FILE``; returns the exit status."""
    out = out or sys.stdout
    p = argparse.ArgumentParser(prog="beamline-ls check-hardware", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="microscope TOML file")
    args = p.parse_args(argv)
    from beamline_ls.config import load_settings

    try:
        settings = load_settings(args.config)
        findings = check(settings.hardware, serial_factory=serial_factory,
                         system_factory=system_factory)
    except (ValueError, FileNotFoundError) as exc:
        said = str(exc)  # the settings' own errors begin with the file already
        where = "" if said.startswith(str(args.config)) else f" in {args.config}"
        print(f"configuration problem{where}: {said}", file=out)
        return 2
    except Exception as exc:  # a TOML syntax error names line and column
        print(f"cannot read {args.config}: {exc}", file=out)
        return 2
    print(f"hardware described by {args.config}:", file=out)
    for f in findings:
        print(f.line(), file=out)
    bad = [f.device for f in findings if not f.ok]
    if bad:
        print(f"did not answer: {', '.join(bad)}", file=out)
        return 1
    print("everything configured answered", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
