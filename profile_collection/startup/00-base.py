# 00: settings, EPICS environment, RunEngine, catalog (cat), live callbacks, progress bars.
from beamline_ls import profile as _profile

globals().update(_profile.base())
