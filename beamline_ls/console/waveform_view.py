"""The scan waveforms as the page plots them, from the scan board's own parameters.

The console reads the parameters the scan board holds (``scan:*`` PVs) and builds
the same :class:`VolumeScan` the board plays, so the traces are what the board
outputs: piezo command, both galvos, and each camera exposure as a span.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from beamline_ls.waveforms import GalvoCalibration, VolumeScan

#: points per trace sent to the browser (one period)
MAX_POINTS = 1500


def volume_scan(values: Mapping[str, object]) -> VolumeScan:
    """The scan the board would play with the ``scan:*`` values in ``values``; a
    ValueError naming what is missing or refused."""
    missing = [k for k in ("scan:VolumeRate", "scan:NumPlanes", "scan:ZStart", "scan:ZStop",
                           "scan:ExposureTime", "scan:SkipStart", "scan:SkipEnd",
                           "scan:SampleRate", "scan:PiezoLag", "scan:Galvo1Offset",
                           "scan:Galvo1Slope", "scan:Galvo2Offset", "scan:Galvo2Slope")
               if values.get(k) is None]
    if missing:
        raise ValueError(f"scan board not connected ({', '.join(missing[:3])} unknown)")

    def f(key: str) -> float:
        return float(values[key])  # type: ignore[arg-type]

    return VolumeScan(
        volume_rate_hz=f("scan:VolumeRate"), n_planes=int(f("scan:NumPlanes")),
        z_start_um=f("scan:ZStart"), z_stop_um=f("scan:ZStop"),
        exposure_s=f("scan:ExposureTime"), skip_start=int(f("scan:SkipStart")),
        skip_end=int(f("scan:SkipEnd")), sample_rate_hz=f("scan:SampleRate"),
        piezo_lag_s=f("scan:PiezoLag"),
        galvos=(GalvoCalibration(f("scan:Galvo1Offset"), f("scan:Galvo1Slope")),
                GalvoCalibration(f("scan:Galvo2Offset"), f("scan:Galvo2Slope"))))


def waveform_view(values: Mapping[str, object]) -> dict:
    """One period of the traces (decimated), the exposure spans and the plane depths;
    ``{"error": why}`` when the parameters give no scan."""
    try:
        scan = volume_scan(values)
        wf = scan.waveforms()
    except ValueError as exc:
        return {"error": str(exc)}
    step = max(1, wf.n_samples // MAX_POINTS)
    t = np.arange(0, wf.n_samples, step) / wf.sample_rate_hz
    starts = scan.pulse_times_s()
    return {
        "period": scan.period_s,
        "plane_interval": scan.plane_interval_s,
        "t": np.round(t, 6).tolist(),
        "piezo": np.round(wf.piezo_um[::step], 4).tolist(),
        "galvo1": np.round(wf.galvo_v[0, ::step], 5).tolist(),
        "galvo2": np.round(wf.galvo_v[1, ::step], 5).tolist(),
        "exposures": [[round(float(s), 6), round(float(s + scan.exposure_s), 6)]
                      for s in starts],
        "planes_um": np.round(scan.plane_z_um, 3).tolist(),
        "expected_frame_rate": scan.n_planes / scan.period_s,
    }
