"""Mirror: staged files are copied, verified by checksum, retried, never overwritten."""

import logging
import os
import threading
import time

import pytest

from beamline_ls.pipeline.mirror import (
    FAILED,
    PENDING,
    VERIFIED,
    Mirror,
    copy_and_fsync,
    sha256_file,
)

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


@pytest.fixture
def roots(tmp_path):
    staging, dest = tmp_path / "staging", tmp_path / "share"
    staging.mkdir()
    return staging, dest


def staged(staging, rel="run1/scan_000.h5", data=b"frame data " * 1000):
    path = staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class FlakyCopy:
    """Copy that raises OSError for the first ``failures`` calls, then copies."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def __call__(self, src, dst):
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(5, "Input/output error (injected)")
        copy_and_fsync(src, dst)


def test_retries_after_injected_failures_and_ends_verified(roots, caplog):
    staging, dest = roots
    src = staged(staging)
    seen = []
    copy = FlakyCopy(failures=2)
    m = Mirror(staging, dest, retries=3, backoff_s=0.001, copy_func=copy,
               on_verified=lambda s, d: seen.append((s, d)))
    with caplog.at_level(logging.INFO, logger="beamline_ls.pipeline.mirror"):
        m.submit(src)
        assert m.wait(10)
    st = m.file_status(src)
    assert st.state == VERIFIED and st.attempts == 3 and st.last_error == ""
    out = dest / "run1/scan_000.h5"
    assert out.read_bytes() == src.read_bytes()
    assert st.sha256 == sha256_file(out)
    assert seen == [(src.resolve(), out)]
    assert src.exists()  # staging kept by default
    assert [r.levelname for r in caplog.records].count("WARNING") == 2
    assert any(r.levelname == "SUCCESS" for r in caplog.records)
    assert not list(dest.rglob("*.part"))  # no temporary left behind
    assert m.status()[VERIFIED] == 1
    m.close(5)


def test_checksum_mismatch_is_detected_and_retried(roots):
    staging, dest = roots
    src = staged(staging)
    calls = []

    def corrupt_once(s, d):
        calls.append(d)
        copy_and_fsync(s, d)
        if len(calls) == 1:
            with open(d, "r+b") as f:
                f.seek(100)
                f.write(b"X")

    m = Mirror(staging, dest, retries=2, backoff_s=0.001, copy_func=corrupt_once)
    m.submit(src)
    assert m.wait(10)
    st = m.file_status(src)
    assert st.state == VERIFIED and st.attempts == 2
    assert (dest / "run1/scan_000.h5").read_bytes() == src.read_bytes()
    m.close(5)


def test_permanent_failure_ends_failed_with_error_and_keeps_staging(roots, caplog):
    staging, dest = roots
    src = staged(staging)
    m = Mirror(staging, dest, retries=2, backoff_s=0.001, copy_func=FlakyCopy(10**9),
               delete_staging_after_verify=True)
    with caplog.at_level(logging.WARNING, logger="beamline_ls.pipeline.mirror"):
        m.submit(src)
        assert m.wait(10)
    st = m.file_status(src)
    assert st.state == FAILED and st.attempts == 3
    assert "OSError" in st.last_error and "injected" in st.last_error
    assert m.status()["failures"] == {str(src.resolve()): st.last_error}
    assert src.exists() and not (dest / "run1/scan_000.h5").exists()
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "ERROR"]
    m.close(5)


def test_submit_never_blocks_while_the_destination_hangs(roots):
    staging, dest = roots
    release = threading.Event()
    entered = threading.Event()

    def hanging_copy(s, d):
        entered.set()
        release.wait(30)
        raise OSError("share went away (injected)")

    m = Mirror(staging, dest, retries=0, copy_func=hanging_copy)
    try:
        paths = [staged(staging, f"f{i}.h5") for i in range(50)]
        m.submit(paths[0])
        assert entered.wait(10)  # the mirror thread is now stuck inside the copy
        for p in paths[1:]:  # each submit returns although the thread is stuck
            assert m.submit(p).state == PENDING
        assert m.status()[PENDING] == 49
        assert m.in_flight == 50  # 49 pending + 1 copying
        assert m.wait(0.05) is False
    finally:
        release.set()
    assert m.wait(20)
    assert m.status()[FAILED] == 50 and m.in_flight == 0
    m.close(5)


def test_bounded_queue_refuses_instead_of_growing(roots):
    staging, dest = roots
    release = threading.Event()
    m = Mirror(staging, dest, retries=0, max_pending=2,
               copy_func=lambda s, d: (release.wait(30), copy_and_fsync(s, d)))
    try:
        st = [m.submit(staged(staging, f"f{i}.h5")) for i in range(3)]
        assert st[2].state == FAILED and "queue full" in st[2].last_error
    finally:
        release.set()
    assert m.wait(20)
    # the refused file goes once the queue has room again: the copies went through
    assert m.status()[VERIFIED] == 3 and m.status()[FAILED] == 0
    m.close(5)


def test_existing_different_destination_is_never_overwritten(roots):
    staging, dest = roots
    src = staged(staging)
    out = dest / "run1/scan_000.h5"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"somebody else's data")
    copy = FlakyCopy(0)
    m = Mirror(staging, dest, retries=5, backoff_s=0.001, copy_func=copy)
    m.submit(src)
    assert m.wait(10)
    st = m.file_status(src)
    assert st.state == FAILED and st.attempts == 1  # refused, not retried
    assert "not overwritten" in st.last_error
    assert out.read_bytes() == b"somebody else's data"
    assert copy.calls == 0 and src.exists()
    m.close(5)


def test_identical_destination_counts_as_verified(roots):
    staging, dest = roots
    src = staged(staging)
    out = dest / "run1/scan_000.h5"
    out.parent.mkdir(parents=True)
    out.write_bytes(src.read_bytes())
    m = Mirror(staging, dest, copy_func=FlakyCopy(0))
    m.submit(src)
    assert m.wait(10)
    assert m.file_status(src).state == VERIFIED
    m.close(5)


def test_staging_deleted_only_when_asked_and_verified(roots):
    staging, dest = roots
    src = staged(staging)
    m = Mirror(staging, dest, delete_staging_after_verify=True)
    m.submit(src)
    assert m.wait(10)
    assert m.file_status(src).state == VERIFIED
    assert not src.exists() and (dest / "run1/scan_000.h5").exists()
    m.close(5)


def test_rejects_paths_outside_staging_and_after_close(roots, tmp_path):
    staging, dest = roots
    other = tmp_path / "elsewhere.h5"
    other.write_bytes(b"x")
    m = Mirror(staging, dest)
    with pytest.raises(ValueError, match="not under the staging root"):
        m.submit(other)
    with pytest.raises(ValueError, match="not a regular file"):
        m.submit(staging / "missing.h5")
    assert m.close(5)
    with pytest.raises(RuntimeError):
        m.submit(staged(staging))


def test_retry_of_one_file_does_not_hold_back_the_others(roots):
    staging, dest = roots
    bad, good = staged(staging, "bad.h5"), staged(staging, "good.h5")

    def copy(s, d):
        if s.name == "bad.h5":
            raise PermissionError(13, "Permission denied (injected)")
        copy_and_fsync(s, d)

    m = Mirror(staging, dest, retries=1, backoff_s=30, copy_func=copy)
    m.submit(bad)
    m.submit(good)
    deadline = time.monotonic() + 10
    while m.file_status(good).state != VERIFIED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert m.file_status(good).state == VERIFIED
    assert m.file_status(bad).state == PENDING  # waiting 30 s for its retry
    assert m.close(0.01) is False
    assert os.path.exists(bad)


@pytest.mark.parametrize("planted", ["run1", "run1/scan_000.h5"])
def test_a_symlink_inside_the_destination_is_never_followed(roots, tmp_path, planted):
    """A directory or the file's own name, planted as a symlink to elsewhere: the copy
    fails at once (no retry) naming the symlink, and elsewhere stays untouched."""
    staging, dest = roots
    src = staged(staging)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = dest / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere if planted == "run1" else elsewhere / "victim.h5")
    m = Mirror(staging, dest, retries=5, backoff_s=0.001)
    m.submit(src)
    assert m.wait(10)
    st = m.file_status(src)
    assert st.state == FAILED and st.attempts == 1
    assert "OutsideDestination" in st.last_error and "not followed" in st.last_error
    assert list(elsewhere.iterdir()) == []
    m.close(5)


def test_finished_files_leave_the_working_set(roots):
    """Months of captures must not grow the copier: totals keep counting, only the
    last ``keep_finished`` files stay listed."""
    staging, dest = roots
    m = Mirror(staging, dest, keep_finished=3)
    paths = [staged(staging, f"run/{k}.h5", data=bytes([k]) * 100) for k in range(10)]
    for p in paths:
        m.submit(p)
    assert m.wait(30)
    status = m.status()
    assert status[VERIFIED] == 10 and status["bytes_verified"] == 1000
    assert m.file_status(paths[-1]).state == VERIFIED
    assert m.file_status(paths[0]) is None
    assert len(m._files) == 0 and len(m._finished) == 3
    m.close(5)


def test_the_copy_ledger_is_never_written_through_a_symlink(tmp_path):
    from beamline_ls.pipeline.copy_ledger import CopyLedger, CopyRecord

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    frames = tmp_path / "frames"
    frames.mkdir()
    ledger = CopyLedger.in_directory(frames)
    ledger.path.symlink_to(victim)
    with pytest.raises(OSError):
        ledger.append(CopyRecord(staging="a", destination="b", destination_root="c",
                                 state="queued"))
    assert victim.read_text() == "precious"


class ShareDown:
    """A share that fails every copy (an I/O error) while ``down`` is set."""

    def __init__(self):
        self.down = True

    def __call__(self, src, dst):
        if self.down:
            raise OSError(112, "Host is down (injected)")
        copy_and_fsync(src, dst)


def test_a_copy_that_failed_goes_again_once_the_destination_answers(roots, caplog):
    """The share is down longer than the retries last: the file fails, is reported,
    and is copied after all as soon as a copy to the share succeeds. A file refused for
    a cause that cannot pass (a different file at its destination) stays failed."""
    staging, dest = roots
    a, b, c = staged(staging, "a.h5"), staged(staging, "b.h5"), staged(staging, "c.h5")
    (dest / "c.h5").parent.mkdir(parents=True, exist_ok=True)
    (dest / "c.h5").write_bytes(b"another file")
    share = ShareDown()
    finished = []
    m = Mirror(staging, dest, retries=1, backoff_s=0.001, copy_func=share,
               on_finished=lambda st: finished.append((os.path.basename(st.staging),
                                                       st.state)))
    with caplog.at_level(logging.ERROR, logger="beamline_ls.pipeline.mirror"):
        m.submit(a)
        assert m.wait(10)
    assert m.file_status(a).state == FAILED and m.status()[FAILED] == 1
    assert "tried again once a copy to" in caplog.records[-1].getMessage()
    share.down = False
    m.submit(c)  # refused: never overwritten, never tried again
    assert m.wait(10)
    m.submit(b)
    assert m.wait(10)
    assert m.file_status(a).state == VERIFIED
    assert (dest / "a.h5").read_bytes() == a.read_bytes()
    assert m.file_status(c).state == FAILED and m.status()[FAILED] == 1
    assert finished == [("a.h5", FAILED), ("c.h5", FAILED), ("b.h5", VERIFIED),
                        ("a.h5", VERIFIED)]
    m.close(5)


def test_a_failed_copy_is_tried_again_alone_while_nothing_else_is_copied(roots):
    """No other file comes: a failed file is tried again every ``probe_every_s``; tries
    that fail again are not reported again, the one that succeeds is."""
    staging, dest = roots
    a = staged(staging, "a.h5")
    share = ShareDown()
    finished = []
    m = Mirror(staging, dest, retries=0, copy_func=share, probe_every_s=0.2,
               on_finished=lambda st: finished.append(st.state))
    m.submit(a)
    assert m.wait(10)
    time.sleep(1.0)  # a few tries while the share is still down
    assert finished == [FAILED]
    share.down = False
    deadline = time.monotonic() + 10
    while m.file_status(a).state != VERIFIED:
        assert time.monotonic() < deadline, m.file_status(a)
        time.sleep(0.02)
    assert m.wait(10) and m.waiting_to_retry == 0
    assert finished == [FAILED, VERIFIED] and m.file_status(a).rounds >= 2
    assert m.status()[FAILED] == 0
    m.close(5)


def test_a_file_that_fails_while_the_share_works_is_not_copied_after_every_success(roots):
    """One file fails for its own reasons (too large for the space left) while small
    files go through: it is tried again once after a success, then only by the probe,
    not once per small file."""
    staging, dest = roots
    big = staged(staging, "big.h5")
    tries = []

    def copy(s, d):
        if s.name == "big.h5":
            tries.append(s.name)
            raise OSError(28, "No space left on device (injected)")
        copy_and_fsync(s, d)

    m = Mirror(staging, dest, retries=0, copy_func=copy, probe_every_s=3600)
    m.submit(big)
    assert m.wait(10)
    for i in range(10):
        m.submit(staged(staging, f"small{i}.h5"))
        assert m.wait(10)
    assert len(tries) == 2  # its first try, and once after the first small copy
    assert m.status()[VERIFIED] == 10 and m.waiting_to_retry == 1
    m.close(5)


def test_a_failed_file_sent_again_by_hand_is_copied_once(roots):
    """A caller submits a file again that failed and waits to be tried again: it goes
    once, and the copier keeps working after it."""
    staging, dest = roots
    a, b = staged(staging, "a.h5"), staged(staging, "b.h5")
    share = ShareDown()
    m = Mirror(staging, dest, retries=0, copy_func=share, probe_every_s=3600)
    m.submit(a)
    assert m.wait(10)
    m.submit(a)  # by hand, while the share is still down
    share.down = False
    m.submit(b)
    assert m.wait(10)
    assert m.file_status(a).state == VERIFIED and m.file_status(b).state == VERIFIED
    assert m.status()[FAILED] == 0 and m.in_flight == 0 and m.waiting_to_retry == 0
    c = staged(staging, "c.h5")
    m.submit(c)
    assert m.wait(10) and m.file_status(c).state == VERIFIED  # the thread still runs
    m.close(5)
