# 50: plans: planar_scan, volumetric_scan, plus bluesky's bp and bps.
from beamline_ls import profile as _profile

globals().update(_profile.plans(globals()))
