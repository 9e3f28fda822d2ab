"""Nothing listens beyond loopback: the CA repeater and the IOC's server sockets are
bound to 127.0.0.1 only (read from the kernel's socket tables, as `ss -l` does)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from conftest import private_microscope

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net prints it


def bound_addresses(table: str, port: int) -> set[str]:
    """Local addresses of the sockets on ``port`` in /proc/net/<table>."""
    found = set()
    with open(f"/proc/net/{table}") as f:
        for line in f.readlines()[1:]:
            local = line.split()[1]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port:
                found.add(address)
    return found


def test_the_ca_repeater_and_the_ioc_listen_on_loopback_only(epics, ioc):
    deadline = time.monotonic() + 10
    while not bound_addresses("udp", epics.repeater_port):
        assert time.monotonic() < deadline, "the repeater never bound its port"
        time.sleep(0.05)
    assert bound_addresses("udp", epics.repeater_port) == {LOOPBACK_HEX}
    assert bound_addresses("tcp", epics.server_port) == {LOOPBACK_HEX}
    assert bound_addresses("udp", epics.server_port) <= {LOOPBACK_HEX}


def put_and_read_back(signal, value: str) -> str:
    """Put with completion, as ``caput -c`` does; a refused put leaves the old value."""
    try:
        signal.set(value).wait(10)
    except Exception:  # noqa: BLE001 - refusal shows as a failed put; judged below
        pass
    return signal.get(use_monitor=False)


def test_mirror_path_is_confined_to_the_configured_roots(scope, mirror_root, tmp_path):
    """A client may only point the IOC's copies inside ``mirror_roots``: elsewhere, or
    a symlink inside a root that leads out of it, is refused with the reason, and the
    IOC creates nothing there."""
    hdf = scope.camera.hdf
    outside = tmp_path / "not-a-mirror-root"
    escape = mirror_root / "escape"
    escape.symlink_to(tmp_path, target_is_directory=True)
    try:
        for value in (str(outside), str(escape / "share"), "/etc"):
            assert put_and_read_back(hdf.mirror_path, value) == ""
            message = hdf.mirror_message.get(use_monitor=False)
            assert message.startswith(f"MirrorPath refused: MirrorPath {value}")
            assert "not under a mirror root" in message and str(mirror_root) in message
        assert not outside.exists() and not (tmp_path / "share").exists()
        inside = mirror_root / "inside" / "share"
        assert put_and_read_back(hdf.mirror_path, str(inside)) == str(inside)
    finally:
        hdf.mirror_path.set("").wait(5)
        escape.unlink()


def test_a_symlink_planted_in_the_destination_is_not_followed(scope, session, share,
                                                              tmp_path):
    """The day's directory inside an allowed share is a symlink to somewhere else: the
    copy fails with that reason, nothing is written there, the staging file stays."""
    from plans import planar_scan
    from plans.common import file_name_for

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    day = share / file_name_for("x")[0]
    day.parent.mkdir(parents=True)
    day.symlink_to(elsewhere, target_is_directory=True)
    hdf = scope.camera.hdf
    failed_before = int(hdf.mirror_failed.get(use_monitor=False))
    hdf.mirror_path.set(str(share)).wait(5)
    try:
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        deadline = time.monotonic() + 30
        while int(hdf.mirror_failed.get(use_monitor=False)) == failed_before:
            assert time.monotonic() < deadline, "the copy neither failed nor finished"
            time.sleep(0.1)
    finally:
        hdf.mirror_path.set("").wait(5)
    assert result.exit_status == "success"
    message = hdf.mirror_message.get(use_monitor=False)
    assert "outside the destination root" in message and "not followed" in message
    assert list(elsewhere.iterdir()) == []
    with h5py.File(hdf.full_file_name.get(use_monitor=False), "r") as staged:
        assert staged["/entry/data/data"].shape[0] == 5


@pytest.mark.parametrize("retries, left", [(100, "queued"), (0, "failed")])
def test_copies_left_by_a_stopped_ioc_are_resumed_when_it_starts(epics, tmp_path, retries,
                                                                 left):
    """The share is unusable while the IOC runs, so its copy waits for a retry (or,
    with no retries, fails); the IOC stops. Started again on the same data, it copies
    the file without being asked."""
    from beamline_ls.pipeline.copy_ledger import CopyLedger
    from plans import planar_scan

    roots = tmp_path / "mirrors"
    share = roots / "share"
    roots.mkdir()
    share.write_text("a file where the share's directory should be")
    config = tmp_path / "ioc.toml"
    config.write_text(f"mirror_roots = [{str(roots)!r}]\n")
    data = tmp_path / "data"
    with private_microscope(epics, "RSM:", data, config=config) as (_, scope, session):
        hdf = scope.camera.hdf
        hdf.mirror_retries.set(retries).wait(5)
        hdf.mirror_backoff.set(600.0).wait(5)  # a retry would come in 10 minutes
        hdf.mirror_path.set(str(share)).wait(5)
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        staged = hdf.full_file_name.get(use_monitor=False)
        ledger = CopyLedger.in_directory(data / "frames")
        deadline = time.monotonic() + 30
        while staged not in ledger.latest() or ledger.latest()[staged].state != left:
            assert time.monotonic() < deadline, f"the copy was never {left}"
            time.sleep(0.1)
    assert result.exit_status == "success"

    share.unlink()  # the share is back
    with private_microscope(epics, "RSM:", data, config=config) as (_, scope, _session):
        hdf = scope.camera.hdf
        deadline = time.monotonic() + 30
        while int(hdf.mirror_verified.get(use_monitor=False)) < 1:
            assert time.monotonic() < deadline, hdf.mirror_message.get(use_monitor=False)
            time.sleep(0.1)
    record = ledger.latest()[staged]
    assert record.state == "verified"
    with h5py.File(record.destination, "r") as copy:
        assert copy["/entry/data/data"].shape[0] == 5


def test_write_access_follows_the_tomls_rules(epics, tmp_path):
    """Writes only from the hosts and users the TOML names, per group of PVs; a
    refused write fails at once with Channel Access's access error, reads stay open."""
    import epics as ca
    from caproto.sync.client import write as caproto_write

    config = tmp_path / "ioc.toml"
    config.write_text(
        '[access]\n'
        'write_hosts = ["localhost"]\n'
        '[access.pvs."HDF1:Mirror*"]\n'
        'write_hosts = ["another-host"]\n'
        '[access.pvs."stage:*"]\n'
        'write_users = ["somebody-else"]\n')
    with private_microscope(epics, "ACC:", tmp_path / "data", config=config):
        # pyepics' cached PVs: a PV object collected later on another thread crashes libca
        rate = ca.get_pv("ACC:scan:VolumeRate")
        mirror = ca.get_pv("ACC:HDF1:MirrorPath")
        stage = ca.get_pv("ACC:stage:X.VAL")
        status = ca.get_pv("ACC:HDF1:NumCaptured_RBV")
        for pv in (rate, mirror, stage, status):
            assert pv.wait_for_connection(10)
        time.sleep(0.2)  # access rights arrive right after the connection
        assert rate.write_access and rate.read_access
        for pv in (mirror, stage, status):
            assert pv.read_access and not pv.write_access, pv.pvname
        rate.put(7.5, wait=True, timeout=5)
        assert rate.get(use_monitor=False) == 7.5
        for name, value in (("ACC:HDF1:MirrorPath", "/tmp"), ("ACC:stage:X.VAL", 100.0)):
            t0 = time.monotonic()
            with pytest.raises(Exception, match="(?i)forbidden|cannot write"):
                caproto_write(name, value, notify=True, timeout=5)
            assert time.monotonic() - t0 < 2.0  # refused, not timed out
        assert ca.caget("ACC:HDF1:MirrorPath", as_string=True, use_monitor=False) == ""
        assert stage.get(use_monitor=False) == 0.0


def test_a_bad_access_table_is_refused_with_its_key():
    from beamline_ls.iocs.access import AccessPolicy

    with pytest.raises(ValueError, match="unknown keys \\['write_host'\\]"):
        AccessPolicy.from_config({"write_host": ["x"]})
    with pytest.raises(ValueError, match="access.write_hosts must be a list"):
        AccessPolicy.from_config({"write_hosts": "localhost"})
    policy = AccessPolicy.from_config({"pvs": {"laser:*": {"write_hosts": []}}})
    assert not policy.rule_for("laser:Power").allows("localhost", "root")
    assert policy.rule_for("scan:Start").allows("localhost", "root")


def test_an_ioc_refusing_its_configuration_creates_nothing(tmp_path):
    """A mistyped access table stops the IOC with the key named, before it creates the
    data directories (a refused start leaves no tree behind to clean up)."""
    config = tmp_path / "ioc.toml"
    config.write_text('[access]\nwrite_host = ["localhost"]\n')
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "beamline_ls.cli", "ioc", "--prefix", "REFUSED:",
         "--config", str(config), "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "unknown keys ['write_host']" in done.stderr
    assert not data.exists()


def test_a_second_ioc_on_the_same_prefix_or_data_directory_is_refused(epics, tmp_path):
    """Started twice (a second terminal, a service started again), the second IOC
    served the same PVs beside the first and clients read either at random; it now
    refuses to start, naming what is already there, and the first goes on serving."""
    import epics as ca

    first = tmp_path / "first"

    def second(prefix: str, data: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, **epics.for_server(epics.extra_server_ports[0]).env()}
        return subprocess.run(
            [sys.executable, "-m", "beamline_ls.cli", "ioc", "--prefix", prefix,
             "--data-dir", str(data)], env=env, capture_output=True, text=True, timeout=120)

    with private_microscope(epics, "CLM:", first):
        same_prefix = second("CLM:", tmp_path / "other")
        assert same_prefix.returncode == 2, same_prefix.stderr[-2000:]
        assert "CLM:cam1:Acquire is already served by 127.0.0.1:" in same_prefix.stderr
        same_dir = second("CLM2:", first)
        assert same_dir.returncode == 2, same_dir.stderr[-2000:]
        assert f"serves the data directory {first}" in same_dir.stderr
        assert "prefix CLM:" in same_dir.stderr  # which IOC holds it
        assert ca.caget("CLM:cam1:ArrayCounter_RBV", timeout=10) is not None
