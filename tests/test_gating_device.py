"""The gating device's bookkeeping of interrupted triggers, without an IOC.

An immediate pause can land while a gated trigger is in flight; the RunEngine replays
that trigger at resume, and the device makes the replay take no second frame when the
first one had fired (`GatingTrigger.pause`/`resume`/`trigger`). The IOC-backed test
(`test_faults_interrupt.py`) covers one pause; the order of completions in two pauses
within one trigger cannot be forced through a live IOC, so here the Arm puts' statuses
are held by the test and completed in the order that broke it.
"""

from __future__ import annotations

import pytest
from ophyd.sim import FakeEpicsSignalRO, fake_device_cache, make_fake_device
from ophyd.status import Status

from devices.gating import GatingTrigger
from devices.text import TextSignalRO

pytestmark = pytest.mark.offline


@pytest.fixture
def gating(monkeypatch):
    monkeypatch.setitem(fake_device_cache, TextSignalRO, FakeEpicsSignalRO)
    dev = make_fake_device(GatingTrigger)("FAKE:gating:", name="gating")
    dev.message.sim_put("disarmed")
    dev.fired.sim_put(5)
    arms: list[Status] = []

    def arm_set(value, **kwargs):  # each Arm put completes when the test says so
        st = Status()
        arms.append(st)
        return st

    monkeypatch.setattr(dev.arm, "set", arm_set)
    return dev, arms


def test_a_second_immediate_pause_in_a_replayed_trigger_takes_no_plane_twice(gating):
    dev, arms = gating
    first = dev.trigger()  # waits for its heart phase
    dev.pause()  # immediate pause: disarmed before it fired
    dev.resume()
    replay = dev.trigger()  # the RunEngine replays it
    assert len(arms) == 2
    arms[0].set_finished()  # the first Arm put ends only now: no trigger came of it
    with pytest.raises(RuntimeError, match="no trigger fired: disarmed"):
        first.wait(10)
    dev.fired.sim_put(6)  # the replay fires; its exposure runs
    dev.pause()  # a second immediate pause, before the replay is done
    dev.resume()
    again = dev.trigger()  # the RunEngine replays the replay
    assert len(arms) == 2, "the plane the replay took was armed for a second time"
    again.wait(10)
    assert again.success
    assert not replay.done  # the replay itself completes with its Arm put
    arms[1].set_finished()
    replay.wait(10)
    assert replay.success


def test_a_trigger_paused_before_it_fired_is_taken_at_resume(gating):
    dev, arms = gating
    first = dev.trigger()
    dev.pause()
    arms[0].set_finished()
    with pytest.raises(RuntimeError, match="no trigger fired"):
        first.wait(10)
    dev.resume()
    replay = dev.trigger()
    assert len(arms) == 2, "a trigger that never fired must be armed again"
    dev.fired.sim_put(6)
    arms[1].set_finished()
    replay.wait(10)
    assert replay.success
