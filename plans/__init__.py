"""Bluesky plans of the light-sheet microscope."""

from plans.scans import planar_scan, volumetric_scan

__all__ = ["planar_scan", "volumetric_scan"]
