"""Frame pipeline inside the camera IOC: bounded buffer -> writer (HDF5)."""
