"""TriggerScheduler: absolute-time firing, accepted/late reports, non-blocking."""

import time

from beamline_ls.gating.scheduler import (
    RealTimeClock,
    RecordingSink,
    TriggerScheduler,
    VirtualClock,
)


def test_virtual_clock_accepted_late_and_order():
    clock = VirtualClock(10.0)
    sink = RecordingSink(clock)
    reports = []
    s = TriggerScheduler(sink, clock, min_lead_s=0.001, on_report=reports.append)
    assert s.schedule(10.5, "b").status == "accepted"
    assert s.schedule(10.2, "a").status == "accepted"
    assert s.schedule(10.0005, "x").status == "late"  # inside the minimum lead
    assert s.schedule(9.0, "y").status == "late"
    assert [r.status for r in reports] == ["accepted", "accepted", "late", "late"]
    clock.advance_to(10.1)
    assert sink.fired == []
    clock.advance_to(10.3)
    assert [(t, tag) for t, _, tag in sink.fired] == [(10.2, "a")]
    assert sink.fired[0][1] == 10.3  # the virtual clock time at firing
    clock.advance_to(11.0)
    assert [tag for _, _, tag in sink.fired] == ["a", "b"]
    assert s.pending == 0


def test_fire_late_option_fires_late_requests():
    clock = VirtualClock(0.0)
    sink = RecordingSink(clock)
    s = TriggerScheduler(sink, clock, fire_late=True)
    assert s.schedule(-1.0, 1).status == "late"
    clock.advance_to(0.0)
    assert [tag for *_, tag in sink.fired] == [1]


def test_virtual_clock_never_goes_backwards():
    c = VirtualClock(5.0)
    c.advance_to(4.0)
    assert c.now() == 5.0


def test_real_time_scheduler_fires_without_blocking_caller():
    clock = RealTimeClock()
    sink = RecordingSink(clock)
    s = TriggerScheduler(sink, clock)
    s.start()
    try:
        now = clock.now()
        c0 = time.perf_counter()
        reps = [s.schedule(now + 0.05 + 0.01 * i, i) for i in range(3)]
        call_time = time.perf_counter() - c0
        assert all(r.status == "accepted" for r in reps)
        deadline = time.time() + 3.0
        while len(sink.fired) < 3 and time.time() < deadline:
            time.sleep(0.01)
        assert [tag for *_, tag in sink.fired] == [0, 1, 2]
        for t_sched, t_actual, _ in sink.fired:
            assert t_actual >= t_sched  # never early
        assert call_time < 1.0  # scheduling returned long before the fire times passed
    finally:
        s.stop()


class _Wall:
    """A wall clock that runs with the monotonic one until someone steps it."""

    def __init__(self) -> None:
        self.step = 0.0

    def __call__(self) -> float:
        return time.time() + self.step


def test_real_time_clock_follows_a_wall_clock_step(caplog):
    wall = _Wall()
    clock = RealTimeClock(wall=wall)
    before = clock.now()
    wall.step = 18.4  # what NTP's first sync did on a CI machine after the IOC started
    after = clock.now()
    assert abs(after - wall()) < 0.05  # frames stamped now agree with time.time() again
    assert after - before > 18.0
    assert "stepped by +18.4" in caplog.text


def test_real_time_clock_slews_a_small_correction_without_going_backwards():
    wall = _Wall()
    clock = RealTimeClock(wall=wall)
    wall.step = -0.1  # under the step threshold: NTP-sized
    first_error = clock.now() - wall()
    assert first_error > 0.09  # not jumped: the correction is slewed in
    values = []
    for _ in range(200):
        values.append(clock.now())
        time.sleep(0.001)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # never backwards
    assert 0 < clock.now() - wall() < first_error - 1e-4  # and it is being taken up
