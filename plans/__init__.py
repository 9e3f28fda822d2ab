"""Bluesky plans of the light-sheet microscope."""

from plans.gated import gated_scan, gated_timelapse
from plans.power_series import power_series as power_series
from plans.scans import planar_scan, volumetric_scan

__all__ = ["gated_scan", "gated_timelapse", "planar_scan", "volumetric_scan"]
