"""A put with completion, then a read of the monitored value: the new value, as EPICS
base's own servers answer (the completion follows the monitor updates of the put)."""

import pytest


def test_a_value_read_after_a_put_with_completion_is_the_new_one(ioc, prefix):
    """pyepics' ``caget`` reads its monitor; before the fix it returned the old value
    after about half of the puts."""
    import epics

    names = {f"{prefix}cam1:AcquirePeriod": (0.05, 0.06),
             f"{prefix}HDF1:FileNumber": (101, 102),
             f"{prefix}scan:PiezoLag": (0.007, 0.008)}
    before = {name: epics.caget(name, use_monitor=False) for name in names}
    stale = []
    try:
        for name, values in names.items():
            epics.caget(name)  # a monitored channel, as a script keeps one
            for i in range(20):
                value = values[i % 2]
                assert epics.caput(name, value, wait=True, timeout=10) == 1
                got = epics.caget(name)
                if got != pytest.approx(value):
                    stale.append((name, value, got))
    finally:
        for name, value in before.items():
            epics.caput(name, value, wait=True, timeout=10)
    assert not stale, f"{len(stale)} of 60 reads returned the value before the put: {stale[:5]}"
