"""The ring buffer keeps order, counts every refused frame, and flushes stale ones."""

import threading

import numpy as np
import pytest
from conftest import wait_for

from beamline_ls.frame import Frame
from beamline_ls.pipeline.ring import FrameRing, populate_pages

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def frame(i, shape=(4, 6)):
    return Frame(np.full(shape, i, np.uint16), i, 10.0 + i, 0.001, float(i))


def test_frames_come_out_in_order_with_their_metadata():
    ring = FrameRing(4, (4, 6))
    for i in range(3):
        assert ring.push(frame(i))
    for i in range(3):
        f = ring.peek(0)
        assert f.frame_id == i and f.image[0, 0] == i and f.z_um == i
        ring.release()
    assert ring.peek(0) is None


def test_overflow_is_counted_with_ids_and_times_never_silent():
    ring = FrameRing(3, (4, 6))
    accepted = [ring.push(frame(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert ring.stats.overflows == 2
    assert ring.stats.overflow_ids == [3, 4]
    assert ring.stats.overflow_times == [13.0, 14.0]


def test_a_slot_is_not_overwritten_before_it_is_released():
    ring = FrameRing(2, (4, 6))
    ring.push(frame(1))
    ring.push(frame(2))
    held = ring.peek(0)
    assert not ring.push(frame(3))  # full: frame 1's slot is still in use
    assert held.image[0, 0] == 1
    ring.release()
    assert ring.push(frame(3))


def test_flush_discards_stale_frames_at_arm_time():
    ring = FrameRing(4, (4, 6))
    for i in range(3):
        ring.push(frame(i))
    assert ring.flush() == 3
    assert len(ring) == 0 and ring.stats.flushed == 3
    ring.push(frame(7))
    assert ring.peek(0).frame_id == 7


def test_producer_and_consumer_threads_lose_nothing_when_it_fits():
    ring = FrameRing(16, (8, 8))
    got = []

    def consume():
        while len(got) < 2000:
            f = ring.peek(1.0)
            got.append((f.frame_id, int(f.image[0, 0])))
            ring.release()

    t = threading.Thread(target=consume)
    t.start()
    i = 0
    while i < 2000:
        if ring.push(frame(i % 60000, (8, 8))):
            i += 1
    t.join(10)
    assert [g[0] for g in got] == list(range(2000))
    assert all(a == b for a, b in got)


def test_capacity_from_a_memory_budget():
    ring = FrameRing.for_memory(64 * 2**20, (2048, 2048))
    assert ring.capacity == 8  # 8 MiB per frame
    with pytest.raises(ValueError):
        FrameRing(1, (4, 4))


def test_reset_discards_stale_frames_and_counts_the_next_acquisition_afresh():
    ring = FrameRing(2, (4, 6))
    for i in range(3):
        ring.push(frame(i))  # the third overflows
    assert ring.stats.overflows == 1
    assert ring.reset() == 2
    assert len(ring) == 0
    assert ring.stats.overflows == 0 and ring.stats.overflow_ids == []
    assert ring.stats.pushed == 0 and ring.stats.flushed == 2
    assert ring.push(frame(9)) and ring.peek(0).frame_id == 9


def test_prefault_keeps_buffered_frames_intact():
    ring = FrameRing(8, (64, 64))
    assert not ring.prefaulted.is_set()
    for i in range(3):
        ring.push(frame(i, (64, 64)))
    ok = ring.prefault()
    assert isinstance(ok, bool) and ring.prefaulted.is_set() and ring.prefault_s >= 0
    for i in range(3):
        f = ring.peek(0)
        assert f.frame_id == i and (f.image == i).all()
        ring.release()


def test_background_prefault_while_frames_are_pushed_loses_nothing():
    ring = FrameRing(64, (256, 256))
    t = ring.prefault_in_background()
    for i in range(64):
        assert ring.push(frame(i, (256, 256)))
    t.join(10)
    assert ring.prefaulted.is_set()
    assert all((ring.images[i] == i).all() for i in range(64))


def test_capacity_for_matches_for_memory():
    assert FrameRing.capacity_for(64 * 2**20, (2048, 2048)) == 8
    assert FrameRing.capacity_for(2 << 30, (1024, 1024)) == 1024
    assert FrameRing.capacity_for(1 << 40, (4, 4)) == 4096


@pytest.mark.skipif(not populate_pages(np.empty(1 << 16, np.uint8)),
                    reason="this kernel cannot populate pages (MADV_POPULATE_WRITE)")
def test_prefault_of_a_new_ring_stops_at_the_frames_a_capture_needs():
    """Faulting in a fresh ring stalls the whole process's allocations; a capture of 3
    frames has the pages of 3 slots put in place, the rest once it asks again."""
    ring = FrameRing(64, (256, 256))  # 128 KiB slots: 16 per populate step
    ring.want_pages(3)
    t = ring.prefault_in_background()
    wait_for(lambda: ring.slots_in_place >= 3, 10, "3 slots in place")
    assert ring.slots_in_place == 3 and t.is_alive()
    ring.want_pages(ring.capacity)
    t.join(10)
    assert ring.prefaulted.is_set() and ring.slots_in_place == 64


def test_closing_a_ring_ends_its_waiting_prefault():
    ring = FrameRing(8, (64, 64))
    ring.want_pages(1)
    t = ring.prefault_in_background()
    ring.close()
    t.join(10)
    assert not t.is_alive() and ring.prefaulted.is_set()
