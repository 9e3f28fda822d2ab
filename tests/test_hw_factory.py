"""The microscope TOML -> drivers; check-hardware against emulated controllers."""

from __future__ import annotations

import io
import os
import tomllib
from pathlib import Path

import pytest

from beamline_ls.config import load_settings
from beamline_ls.hardware import check
from beamline_ls.hardware.asi_stage import AsiStageAxis
from beamline_ls.hardware.emulators import (
    AsiStageEmulator,
    CoboltLaserEmulator,
    TriggerBoxEmulator,
)
from beamline_ls.hardware.factory import build_drivers
from beamline_ls.hardware.nidaq_positioner import NidaqAxis
from beamline_ls.hardware.nidaq_scanboard import NidaqScanBoard
from beamline_ls.hardware.positioner import SimStageAxis
from beamline_ls.hardware.scanboard import SimScanBoard
from beamline_ls.hardware.serial_laser import SerialLaser
from beamline_ls.hardware.trigger_box import TriggerBox

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "microscope.toml"


def test_no_hardware_table_means_everything_simulated():
    d = build_drivers({})
    assert isinstance(d.scanboard, SimScanBoard)
    assert isinstance(d.stage["x"], SimStageAxis)
    assert d.trigger_box is None
    assert set(d.backends.values()) == {"sim"}


def test_the_example_microscope_builds_real_backends_without_touching_hardware():
    settings = load_settings(EXAMPLE)
    d = build_drivers(settings.hardware)
    assert isinstance(d.scanboard, NidaqScanBoard)
    assert d.scanboard.config.galvo_channels == ("ao1", "ao2")
    assert d.scanboard.config.piezo_um_per_volt == 40.0
    assert isinstance(d.piezo, NidaqAxis) and d.piezo.limits == (0.0, 400.0)
    assert all(isinstance(g, NidaqAxis) for g in d.galvos)
    assert isinstance(d.stage["z"], AsiStageAxis) and d.stage["z"].limits == (-5000.0, 5000.0)
    assert isinstance(d.laser, SerialLaser) and d.laser.max_power_mw == 50.0
    assert isinstance(d.trigger_box, TriggerBox)
    assert not any(link.connected for link in d.links)  # ports open on first use
    assert d.backends == {"camera": "pylablib", "brightfield": "pylon",
                          "scanboard": "nidaqmx", "stage": "asi", "laser": "cobolt",
                          "trigger_box": "serial"}
    assert d.microscope is None  # every device real: no simulator object at all


@pytest.mark.parametrize("hardware, message", [
    ({"lazer": {"backend": "sim"}}, r"hardware.lazer: unknown device"),
    ({"laser": {"backend": "coherent"}}, r"hardware.laser.backend: must be one of"),
    ({"camera": {"backend": "andor"}},
     r"hardware.camera.backend: must be one of \['sim', 'pylablib'\]"),
    ({"laser": {"backend": "cobolt", "port": "/dev/x", "wavelength_nm": 488}},
     r"hardware.laser.max_power_mw: is required"),
    ({"laser": {"backend": "cobolt", "port": "/dev/x", "max_power_mw": -5,
                "wavelength_nm": 488}}, r"hardware.laser.max_power_mw: must be in \(0"),
    ({"laser": {"backend": "cobolt", "port": "/dev/x", "max_power_mw": 5,
                "wavelength_nm": 488, "baud": 9600}}, r"hardware.laser.baud: unknown key"),
    ({"stage": {"backend": "asi"}}, r"hardware.stage.port: is required"),
    ({"stage": {"backend": "asi", "port": "/dev/x", "x": {"limits_um": [5, 1]}}},
     r"hardware.stage.x.limits_um: low must be below high"),
    ({"stage": {"backend": "asi", "port": "/dev/x", "y": {"letter": "X"}}},
     r"axis letters must differ"),
    # an axis table has no backend: the keys it takes, and only those
    ({"stage": {"backend": "asi", "port": "/dev/x", "x": {"lettr": "X"}}},
     r"hardware.stage.x.lettr: unknown key \(allowed: letter, limits_um, velocity_um_s\)"),
    ({"scanboard": {"backend": "nidaqmx", "piezo_um_per_volt": "40"}},
     r"hardware.scanboard.piezo_um_per_volt: must be a number"),
    ({"scanboard": {"backend": "nidaqmx", "galvo_channels": ["ao1"]}},
     r"hardware.scanboard.galvo_channels: must name 2"),
    ({"scanboard": {"backend": "nidaqmx", "galvo_channels": ["ao0", "ao1"]}},
     r"hardware.scanboard.galvo_channels: channels must differ"),
    ({"scanboard": {"backend": "nidaqmx", "camera_output": "pfi"}},
     r"hardware.scanboard.camera_output: must be one of"),
    ({"scanboard": {"backend": "nidaqmx", "sample_rate_hz": 5e5}},
     r"hardware.scanboard.sample_rate_hz: must be in"),
    ({"scanboard": {"backend": "sim", "device": "Dev1"}}, r"hardware.scanboard.device: unknown"),
    ({"trigger_box": {"backend": "serial", "port": "/dev/x", "tick_us": 0}},
     r"hardware.trigger_box.tick_us: must be in \(0"),
])
def test_bad_configuration_names_the_key(hardware, message):
    with pytest.raises(ValueError, match=message):
        build_drivers(hardware)


@pytest.mark.parametrize("text, message", [
    ('dat_dir = "/tmp/elsewhere"\n', r"unknown setting\(s\) dat_dir \(allowed at the top level: "
                                     r"data_dir, prefix"),
    ('[camera]\nbackend = "pylablib"\n', r"unknown setting\(s\) camera"),
    ("data_dir = 42\n", r"data_dir must be a string, got 42"),
    ('hardware = "sim"\n', r"hardware must be a table \(\[hardware\]\)"),
    ('data_dir = "/tmp/x\n', r"not valid TOML: .*line 1"),
    (b'data_dir = "/tmp/\xff\xfe"\n', r"not valid TOML: not UTF-8 text \(byte 17"),
])
def test_a_configuration_file_with_a_misspelt_or_mistyped_setting_is_refused(
        tmp_path, text, message):
    """A typo must not send the data to the default directory unnoticed."""
    from beamline_ls.config import load_settings

    path = tmp_path / "microscope.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=str(path) + ": " + message):
        load_settings(path)


def test_command_line_values_out_of_range_are_usage_errors(capsys):
    from beamline_ls.cli import main as cli

    for argv, message in ((["console", "--port", "99999"], "port 99999 is outside 1-65535"),
                          (["--log-level", "LOUD", "verify", "x.h5"], "'LOUD' is not a level")):
        with pytest.raises(SystemExit) as exit_:
            cli(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_example_toml_is_commented_and_covers_every_device():
    text = EXAMPLE.read_text()
    doc = tomllib.loads(text)
    assert set(doc["hardware"]) == {"camera", "brightfield", "scanboard", "stage", "laser",
                                    "trigger_box"}
    assert text.count("#") > 40


# ------------------------------------------------------------------------ check-hardware
@pytest.fixture
def emulated(tmp_path):
    emus = {
        "stage": AsiStageEmulator(tmp_path / "asi").start(),
        "laser": CoboltLaserEmulator(tmp_path / "laser").start(),
        "trigger_box": TriggerBoxEmulator(tmp_path / "box").start(),
    }
    yield emus
    for e in emus.values():
        e.stop()


def write_config(tmp_path, emus, scanboard: str = "nidaqmx") -> Path:
    cfg = tmp_path / "microscope.toml"
    cfg.write_text(f"""
prefix = "CHK:"
[hardware.scanboard]
backend = "{scanboard}"
[hardware.stage]
backend = "asi"
port = "{emus['stage'].port}"
timeout_s = 0.3
[hardware.laser]
backend = "cobolt"
port = "{emus['laser'].port}"
timeout_s = 0.3
max_power_mw = 50
wavelength_nm = 488
[hardware.trigger_box]
backend = "serial"
port = "{emus['trigger_box'].port}"
timeout_s = 0.3
""")
    return cfg


def run_check(cfg: Path) -> tuple[int, str]:
    out = io.StringIO()
    rc = check.main(["--config", str(cfg)], out=out)
    return rc, out.getvalue()


def test_check_hardware_reports_who_answered_and_changes_nothing(tmp_path, emulated):
    rc, text = run_check(write_config(tmp_path, emulated))
    assert rc == 1, text  # no NI driver on this machine
    lines = {line.split("]")[1].split(":")[0].strip(): line for line in text.splitlines()
             if line.startswith("  [")}
    assert lines["stage"].startswith("  [ok]") and "X=0.0, Y=0.0, Z=0.0 um, idle" in \
        lines["stage"]
    assert lines["laser"].startswith("  [ok]") and "emission off" in lines["laser"]
    assert lines["trigger_box"].startswith("  [ok]") and "2.56 us ticks" in \
        lines["trigger_box"]
    assert lines["scanboard"].startswith("  [NO]") and "NI-DAQmx driver is not installed" \
        in lines["scanboard"]
    assert lines["camera"].startswith("  [ok]") and "simulated" in lines["camera"]
    assert "did not answer: scanboard" in text
    # only questions were asked: no move, no power or emission change, no trigger
    asked = [c.split()[0].upper() for e in emulated.values() for c in e.commands]
    assert set(asked) <= {"WHERE", "/", "SN?", "L?", "PA?", "SYNC", "TIME?", "PENDING?"}


def test_check_hardware_all_answering_is_status_0(tmp_path, emulated):
    rc, text = run_check(write_config(tmp_path, emulated, scanboard="sim"))
    assert rc == 0, text
    assert "everything configured answered" in text


def test_check_hardware_names_a_silent_or_missing_device(tmp_path, emulated):
    emulated["laser"].mute = True
    emulated["stage"].unplug()
    rc, text = run_check(write_config(tmp_path, emulated, scanboard="sim"))
    assert rc == 1
    assert "[NO] laser: did not answer: laser on" in text and "no reply within 0.3 s" in text
    assert "[NO] stage: did not answer: stage: cannot open serial port" in text


def test_check_hardware_with_a_bad_file_is_status_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[hardware.laser]\nbackend = "cobolt"\nport = "/dev/x"\n')
    rc, text = run_check(cfg)
    assert rc == 2 and "hardware.laser.max_power_mw: is required" in text
    rc, text = run_check(tmp_path / "missing.toml")
    assert rc == 2 and "not found" in text


def test_check_hardware_nidaq_probe_with_an_injected_system():
    class Chans:
        def __init__(self, names):
            self.channel_names = names

    class Dev:
        product_type = "PCIe-6738"
        serial_num = 0x1A2B
        ao_physical_chans = Chans(["Dev1/ao0", "Dev1/ao1", "Dev1/ao2"])
        ai_physical_chans = Chans(["Dev1/ai0"])
        co_physical_chans = Chans(["Dev1/ctr1"])
        do_lines = Chans([])

    class Devices(dict):
        device_names = ["Dev1"]

    class System:
        devices = Devices(Dev1=Dev())

    f = check.probe_nidaq({"backend": "nidaqmx", "piezo_ai_channel": "ai0"}, lambda: System())
    assert not f.ok and "PCIe-6738" in f.text and "Dev1/ctr0 (counter output)" in f.text
    f = check.probe_nidaq({"backend": "nidaqmx", "camera_counter": "ctr1"}, lambda: System())
    assert f.ok and "Dev1/ao2" in f.text
    f = check.probe_nidaq({"backend": "nidaqmx", "device": "Dev7"}, lambda: System())
    assert not f.ok and "'Dev7' not found (devices present: Dev1)" in f.text
    # the gating trigger on the same board: its counter is there, its DO line is not
    f = check.probe_nidaq_trigger({"backend": "nidaq", "counter": "ctr1"}, lambda: System())
    assert f.ok and f.text == ("NI Dev1 (PCIe-6738 serial 1A2B) answered; channels "
                               "Dev1/ctr1 present")
    f = check.probe_nidaq_trigger({"backend": "nidaq", "output": "do"}, lambda: System())
    assert not f.ok and "lacks Dev1/port0/line1 (digital output)" in f.text


@pytest.mark.hardware
@pytest.mark.skipif(not os.environ.get("BEAMLINE_LS_HW_CONFIG"),
                    reason="set BEAMLINE_LS_HW_CONFIG to a microscope TOML to test real hardware")
def test_real_hardware_answers():
    rc, text = run_check(Path(os.environ["BEAMLINE_LS_HW_CONFIG"]))
    assert rc == 0, text
