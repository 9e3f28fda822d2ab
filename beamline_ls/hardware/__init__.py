"""Device drivers: one interface per device kind, simulated and real backends.

IOCs talk only to these interfaces; which backend sits behind one is configuration
(:func:`beamline_ls.hardware.factory.build_drivers`), never an import hack.
"""
