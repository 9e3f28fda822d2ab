# 10: ophyd devices: camera, scanboard, piezo, galvo1, galvo2, stage, laser.
from beamline_ls import profile as _profile

globals().update(_profile.devices(settings))  # noqa: F821 (defined by 00-base)
