"""Bluesky plans of the light-sheet microscope."""

from plans.background import acquire_background
from plans.gated import gated_scan, gated_timelapse
from plans.power_series import power_series
from plans.scans import planar_scan, volumetric_scan

__all__ = ["acquire_background", "gated_scan", "gated_timelapse", "planar_scan",
           "power_series", "volumetric_scan"]
