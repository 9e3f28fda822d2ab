"""What a start document records about the instrument: every device setting."""

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import bluesky.plan_stubs as bps
import numpy as np


def device_settings(*devices: Any):
    """``{device: {setting: value}}``: each device's configuration signals, read with
    ``bps.rd`` (plan stub; simulators, which answer no reads, give None)."""
    out: dict[str, dict[str, Any]] = {}
    for dev in devices:
        values = {}
        for signal in _configuration_signals(dev):
            value = yield from bps.rd(signal, default_value=None)
            if isinstance(value, np.generic):
                value = value.item()
            elif isinstance(value, np.ndarray):
                value = value.tolist()
            values[signal.name] = value
        out[dev.name] = values
    return out


def _configuration_signals(device: Any) -> list:
    """The signals behind ``device.read_configuration()`` (nested devices expanded)."""
    signals = []
    for attr in device.configuration_attrs:
        component = functools.reduce(getattr, attr.split("."), device)
        if not hasattr(component, "configuration_attrs"):  # a signal, not a device
            signals.append(component)
    return signals


def software_versions() -> dict[str, str]:
    import bluesky
    import ophyd

    try:
        ours = version("beamline-ls")
    except PackageNotFoundError:  # a source tree that is not installed
        ours = "0.0.0+unknown"
    return {"beamline_ls": ours, "bluesky": bluesky.__version__, "ophyd": ophyd.__version__}
