"""What a start document records about the instrument: every device setting."""

from __future__ import annotations

from typing import Any

import numpy as np

import beamline_ls


def device_settings(*devices: Any) -> dict[str, dict[str, Any]]:
    """``{device: {setting: value}}`` from each device's configuration read-back."""
    out: dict[str, dict[str, Any]] = {}
    for dev in devices:
        values = {}
        for key, reading in dev.read_configuration().items():
            value = reading["value"]
            if isinstance(value, np.generic):
                value = value.item()
            elif isinstance(value, np.ndarray):
                value = value.tolist()
            values[key] = value
        out[dev.name] = values
    return out


def software_versions() -> dict[str, str]:
    import bluesky
    import ophyd

    return {"beamline_ls": beamline_ls.__version__, "bluesky": bluesky.__version__,
            "ophyd": ophyd.__version__}
