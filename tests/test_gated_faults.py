"""Gating hardware that does not work, as a gated scan meets it: the scan ends at once
with the device's own words, not after a lock timeout or a camera stall that blames the
heart or the camera (both measured by a new user's probe: 30 s and 146 s)."""

from __future__ import annotations

import time

import pytest
from conftest import private_microscope


def _gated_scan_fails(epics, data, prefix: str, toml: str) -> tuple[str, float, int]:
    """A gated scan on a private microscope with hardware ``toml``: the error it
    failed with (it must fail), the seconds it took to, and the runs it left in the
    catalog."""
    from plans import gated_scan

    config = data / "microscope.toml"
    config.write_text(toml)
    with private_microscope(epics, prefix, data / "data", config) as (_, scope, session):
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as failed:
            session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [40.0]))
        took = time.monotonic() - t0
        scope.gating.enable.set("Off").wait(10)
        session.flush()
        runs = len(session.catalog)
    return str(failed.value), took, runs


def test_a_trigger_box_whose_port_does_not_open_ends_the_scan_naming_it(epics, tmp_path):
    """The box's serial port does not exist. The scan waited for its camera's 60 s
    stall and then said no trigger reached the camera (the port's error only in the
    IOC's log); later it failed at its first trigger, after its run had opened,
    leaving a failed run of no frames. Now gating is not enabled, in the port's words,
    before any run."""
    message, took, runs = _gated_scan_fails(
        epics, tmp_path, "NOBOX:",
        '[hardware.trigger_box]\nbackend = "serial"\nport = "/dev/ttyNOSUCHBOX0"\n')
    assert "gating could not be enabled" in message, message
    assert "cannot open serial port /dev/ttyNOSUCHBOX0" in message, message
    assert took < 20.0, took  # not the 30 s lock timeout, nor the camera's 60 s stall
    assert runs == 0


def test_a_gating_camera_that_does_not_open_ends_the_scan_with_its_words(
        epics, tmp_path, monkeypatch):
    """pylon's emulator runs, but the configured serial number is not a camera there:
    Enable is refused with the camera's words. The plan did not notice, waited out its
    30 s lock timeout and advised to check the heart."""
    monkeypatch.setenv("PYLON_CAMEMU", "1")  # the IOC process finds the emulated camera
    message, took, runs = _gated_scan_fails(
        epics, tmp_path, "NOBF:",
        '[hardware.brightfield]\nbackend = "pylon"\nserial = "12345678"\n')
    assert "gating could not be enabled" in message and "12345678" in message, message
    assert took < 20.0, took  # not the 30 s lock timeout
    assert runs == 0
