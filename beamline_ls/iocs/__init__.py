"""caproto PVGroups that serve drivers as EPICS PVs (`beamline-ls ioc`)."""
