"""RE.md shared by every RunEngine on one data directory: an IPython session and the
queue server's worker (or two scripts) never hand out the same scan_id and see each
other's metadata."""

from __future__ import annotations

import subprocess
import sys

import pytest
from bluesky import RunEngine
from bluesky.plans import count

from beamline_ls.run_metadata import SharedRunMetadata

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def run_engine(path) -> RunEngine:
    md = SharedRunMetadata(path)
    RE = RunEngine({}, call_returns_result=True, scan_id_source=md.next_scan_id)
    RE.md = md
    return RE


def scan_id_of(RE: RunEngine) -> int:
    starts = []
    RE(count([]), lambda name, doc: starts.append(doc) if name == "start" else None)
    return starts[0]["scan_id"]


def test_two_run_engines_on_one_data_directory_count_scan_ids_together(tmp_path):
    path = tmp_path / "state" / "md.sqlite"
    a, b = run_engine(path), run_engine(path)
    ids = [scan_id_of(a), scan_id_of(b), scan_id_of(a), scan_id_of(b)]
    assert ids == [1, 2, 3, 4]
    a.md["sample_name"] = "fish 7"
    assert b.md["sample_name"] == "fish 7"
    del b.md["sample_name"]
    assert "sample_name" not in a.md
    # and a new process (a restart) goes on from there
    assert scan_id_of(run_engine(path)) == 5


def test_scan_ids_stay_unique_when_two_processes_take_them_at_once(tmp_path):
    path = tmp_path / "md.sqlite"
    code = ("import sys; from beamline_ls.run_metadata import SharedRunMetadata as S; "
            "m = S(sys.argv[1]); print(' '.join(str(m.next_scan_id()) for _ in range(200)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    ids = [int(x) for p in procs for x in p.communicate(timeout=120)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(ids) == list(range(1, 601))


def test_metadata_from_the_old_persistentdict_carries_over(tmp_path):
    from bluesky.utils import PersistentDict

    old = PersistentDict(str(tmp_path / "runengine-md"))
    old["scan_id"] = 41
    old["proposal"] = "P-12"
    old.flush()
    md = SharedRunMetadata(tmp_path / "md.sqlite", legacy_dir=tmp_path / "runengine-md")
    assert dict(md) == {"scan_id": 41, "proposal": "P-12"}
    assert md.next_scan_id() == 42
    # imported once: a later open does not bring the old scan_id back
    md.close()
    again = SharedRunMetadata(tmp_path / "md.sqlite", legacy_dir=tmp_path / "runengine-md")
    assert again["scan_id"] == 42


def test_values_that_cannot_go_into_a_start_document_are_refused(tmp_path):
    import numpy as np
    import pytest

    md = SharedRunMetadata(tmp_path / "md.sqlite")
    md["roi"] = np.array([1, 2])
    md["gain"] = np.float32(1.5)
    assert md["roi"] == [1, 2] and md["gain"] == 1.5
    with pytest.raises(TypeError, match="JSON-like"):
        md["device"] = object()
    assert "device" not in md
