"""The two things a newcomer runs: the demo, and the staff IPython profile."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _children_named(marker: str) -> list[str]:
    """Command lines of live processes mentioning ``marker`` (our unique data dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            found.append(cmd)
    return found


@pytest.mark.slow
def test_demo_runs_end_to_end_and_leaves_nothing_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    out = subprocess.run(
        [sys.executable, "-m", "beamline_ls.cli", "demo", "--data-dir", str(tmp_path),
         "--volumes", "3", "--prefix", "DEMOTEST:"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "volumetric scan_id 2" in out.stdout
    assert "(3, 20, 512, 512)" in out.stdout
    assert "from beamline_ls import open_catalog" in out.stdout
    assert f"open_catalog({str(tmp_path)!r})" in out.stdout
    assert not _children_named(str(tmp_path))
    assert list((tmp_path / "frames").rglob("volumetric_*.h5"))


STARTUP_RUNNER = textwrap.dedent("""
    import runpy, sys
    from pathlib import Path
    ns = {}
    for f in sorted(Path(sys.argv[1]).glob("*.py")):
        ns = runpy.run_path(str(f), init_globals=ns)
    RE, cat, scope = ns["RE"], ns["cat"], ns["scope"]
    camera, scanboard = ns["camera"], ns["scanboard"]
    sizes = (camera.cam.size_x, camera.cam.size_y)
    before = [sig.get(use_monitor=False) for sig in sizes]  # the IOC is shared: restored
    for sig in sizes:
        sig.set(128).wait(5)
    import time; time.sleep(0.1)
    result = RE(ns["planar_scan"](camera, scanboard, 3, 30.0, 0.004))
    ns["session"].flush()
    print("PROFILE_OK", RE.md["scan_id"], result.exit_status, len(cat),
          sorted(k for k in ("RE", "cat", "bec", "piezo", "stage", "laser", "volumetric_scan",
                             "bp", "bps") if k in ns))
    ns["session"].close()
    for sig, v in zip(sizes, before):
        sig.set(v).wait(5)
    scope.destroy()
""")


def test_profile_startup_works_without_ipython_and_keeps_scan_id_and_runs(ioc, prefix, tmp_path):
    env = dict(os.environ, BEAMLINE_LS_DATA_DIR=str(ioc.data_dir), BEAMLINE_LS_PREFIX=prefix)
    startup = ROOT / "profile_collection" / "startup"
    ids, runs = [], []
    for _ in range(2):  # two sessions one after the other, as when IPython restarts
        out = subprocess.run([sys.executable, "-c", STARTUP_RUNNER, str(startup)],
                             capture_output=True, text=True, timeout=180, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        # bluesky's progress bars draw on stdout with carriage returns and no final
        # newline, so on a slow (first, cold-cache) run the marker can share their line
        line = re.findall(r"PROFILE_OK[^\r\n]*", out.stdout)[-1]
        ids.append(int(line.split()[1]))
        runs.append(int(line.split()[3]))
        assert "success" in line
        assert ("['RE', 'bec', 'bp', 'bps', 'cat', 'laser', 'piezo', 'stage', "
                "'volumetric_scan']") in line
    assert ids[1] == ids[0] + 1  # scan_id and the catalog persist across restarts
    assert runs[1] == runs[0] + 1


def test_profile_loads_in_ipython(ioc, prefix, tmp_path):
    env = dict(os.environ, BEAMLINE_LS_DATA_DIR=str(ioc.data_dir), BEAMLINE_LS_PREFIX=prefix,
               MPLBACKEND="Agg", IPYTHONDIR=str(tmp_path / "ipython"))
    ipython = Path(sys.executable).with_name("ipython")
    code = ("print('IPY', type(RE).__name__, type(bec).__name__, piezo.name, "
            "callable(volumetric_scan)); session.close(); [d.destroy() for d in scope.all()]")
    out = subprocess.run([str(ipython), f"--profile-dir={ROOT / 'profile_collection'}",
                          "--no-banner", "-c", code],
                         capture_output=True, text=True, timeout=180, env=env,
                         stdin=subprocess.DEVNULL)
    assert "IPY RunEngine BestEffortCallback piezo True" in out.stdout, (
        out.stdout[-2000:] + out.stderr[-3000:])
