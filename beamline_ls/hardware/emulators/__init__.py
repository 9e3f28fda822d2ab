"""Protocol emulators of the serial controllers, each played on a pseudo-terminal.

They let the real drivers send real bytes through a real ``serial.Serial`` without
the hardware (tests, demos, trying a configuration). Each emulator can be slowed,
made to send garbage, silenced, unplugged and plugged back in.
"""

from beamline_ls.hardware.emulators.asi_stage import AsiStageEmulator
from beamline_ls.hardware.emulators.cobolt_laser import CoboltLaserEmulator
from beamline_ls.hardware.emulators.pty_device import PtyDevice
from beamline_ls.hardware.emulators.trigger_box import TriggerBoxEmulator

__all__ = ["AsiStageEmulator", "CoboltLaserEmulator", "PtyDevice", "TriggerBoxEmulator"]
