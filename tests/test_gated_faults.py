"""Gating hardware that does not work, as a gated scan meets it: the scan ends at once
with the device's own words, not after a lock timeout or a camera stall that blames the
heart or the camera (both measured by a new user's probe: 30 s and 146 s)."""

from __future__ import annotations

import os
import time

import pytest
from conftest import private_microscope


def test_a_trigger_box_whose_port_does_not_open_ends_the_scan_naming_it(epics, tmp_path):
    """The box's serial port does not exist: every trigger fails. The scan waited for
    its camera's 60 s stall and then said no trigger reached the camera; the port's
    error was only in the IOC's log."""
    from plans import gated_scan

    config = tmp_path / "microscope.toml"
    config.write_text('[hardware.trigger_box]\nbackend = "serial"\n'
                      'port = "/dev/ttyNOSUCHBOX0"\n')
    with private_microscope(epics, "NOBOX:", tmp_path / "data", config) as (_, scope,
                                                                          session):
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as failed:
            session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [40.0]))
        took = time.monotonic() - t0
        scope.gating.enable.set("Off").wait(10)
    message = str(failed.value)
    assert "the trigger output fails: trigger box on /dev/ttyNOSUCHBOX0" in message, message
    assert took < 50.0, took  # well before the camera's 60 s stall


def test_a_gating_camera_that_does_not_open_ends_the_scan_with_its_words(epics, tmp_path):
    """pylon's emulator runs, but the configured serial number is not a camera there:
    Enable is refused with the camera's words. The plan did not notice, waited out its
    30 s lock timeout and advised to check the heart."""
    from plans import gated_scan

    config = tmp_path / "microscope.toml"
    config.write_text('[hardware.brightfield]\nbackend = "pylon"\nserial = "12345678"\n')
    saved = os.environ.get("PYLON_CAMEMU")
    os.environ["PYLON_CAMEMU"] = "1"  # the IOC process finds the emulated camera
    try:
        with private_microscope(epics, "NOBF:", tmp_path / "data", config) as (_, scope,
                                                                             session):
            t0 = time.monotonic()
            with pytest.raises(RuntimeError) as failed:
                session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [40.0]))
            took = time.monotonic() - t0
    finally:
        if saved is None:
            os.environ.pop("PYLON_CAMEMU", None)
        else:
            os.environ["PYLON_CAMEMU"] = saved
    message = str(failed.value)
    assert "gating could not be enabled" in message and "12345678" in message, message
    assert took < 20.0, took  # not the 30 s lock timeout
