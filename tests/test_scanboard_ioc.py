"""Scan board IOC: preparing a volumetric scan ahead of its start, and the IOC's
Channel Access replies are not held back by Nagle's algorithm."""

import statistics
import time

import pytest


@pytest.fixture
def board(scope):
    sb = scope.scanboard
    sb.stop_cmd.set(1).wait(5)
    before = sb.mode.get()
    yield sb
    sb.mode.set(before).wait(5)


def test_prepare_completes_when_the_board_is_ready_and_start_follows(board):
    for sig, value in ((board.mode, "Volumetric"), (board.num_planes, 10),
                       (board.volume_rate, 2.0), (board.z_start, 20.0),
                       (board.z_stop, 40.0), (board.skip_start, 4), (board.skip_end, 1),
                       (board.exposure, 0.01), (board.num_volumes, 1)):
        sig.set(value).wait(5)
    board.prepare().wait(10)
    assert board.prepare_state.get(use_monitor=False) == "Ready"
    assert board.message.get(use_monitor=False).startswith("prepared")
    board.kickoff().wait(5)
    try:
        assert "scanning 1 volumes of 10 planes" in board.message.get(use_monitor=False)
        board.complete().wait(10)
    finally:
        board.stop_cmd.set(1).wait(5)


def test_prepare_in_planar_mode_fails_with_the_boards_message(board):
    board.mode.set("Planar").wait(5)
    status = board.prepare()
    with pytest.raises(RuntimeError, match="prepare refused: Prepare is for volumetric"):
        status.wait(10)
    assert board.prepare_state.get(use_monitor=False) == "Failed"


def test_replies_to_puts_in_flight_together_are_not_delayed(scope):
    """With Nagle on, a reply sent while an earlier one was unacknowledged waited for
    the client's delayed ACK (~40 ms): rounds of three parallel puts took 42-50 ms
    instead of ~1-3 ms."""
    cam = scope.camera
    rounds = []
    for _ in range(9):
        t = time.perf_counter()
        statuses = [cam.cam.num_images.set(10), cam.hdf.num_capture.set(10),
                    cam.cam.acquire_period.set(0.0)]
        for st in statuses:
            st.wait(5)
        rounds.append(time.perf_counter() - t)
    # Nagle + delayed ACK costs >= 40 ms a round; a loaded 2-core machine a few ms
    assert statistics.median(rounds) < 0.03, rounds


def test_the_board_keeps_the_focal_plane_within_the_piezos_limits(board, scope,
                                                                 piezo_high_limit):
    """The board moves the piezo itself, not through its motor record: a limit set on
    the piezo to protect the sample must hold for scans too (the board drove the
    piezo to 96 um past a high limit of 50). Any client's Prepare, Start or a planar
    Start is refused with the reason, before the focal plane moves."""
    piezo_high_limit(30.0)
    for sig, value in ((board.mode, "Volumetric"), (board.num_planes, 10),
                       (board.volume_rate, 2.0), (board.z_start, 10.0),
                       (board.z_stop, 40.0), (board.skip_start, 4), (board.skip_end, 1),
                       (board.exposure, 0.01), (board.num_volumes, 1)):
        sig.set(value).wait(5)
    where = scope.piezo.user_readback.get(use_monitor=False)
    with pytest.raises(RuntimeError, match=r", outside the piezo's limits \[0, 30\] um"):
        board.prepare().wait(10)
    with pytest.raises(RuntimeError, match=r"start refused: .*, outside the piezo's limits"):
        board.kickoff().wait(10)
    assert board.running.get(use_monitor=False) == 0
    board.mode.set("Planar").wait(5)
    board.plane_z.set(35.0).wait(5)
    with pytest.raises(RuntimeError, match=r"focal plane at 35\.000 um, outside"):
        board.kickoff().wait(10)
    assert scope.piezo.user_readback.get(use_monitor=False) == pytest.approx(where, abs=0.5)
    # inside the limit the same board scans
    board.mode.set("Volumetric").wait(5)
    board.z_stop.set(25.0).wait(5)
    board.prepare().wait(10)
    board.kickoff().wait(5)
    try:
        board.complete().wait(10)
    finally:
        board.stop_cmd.set(1).wait(5)
