"""What watching costs: volumetric scans with 0 and with N browsers on the operator
console, alternated in one process, on the simulated microscope (real IOC, console
process, Debian's headless Chromium).

Per scan: wall time of ``RE(volumetric_scan(...))``, frames in the file against frames
planned, frames the writer dropped, and the CPU seconds the IOC, the console and the
browsers used during the scan (from /proc). Run from the project directory:

``python benchmarks/bench_console.py [--volumes 20 --planes 20 --size 512 --rate 5
--browsers 3 --repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes ``pids`` and their children so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def browser_pids(driver) -> list[int]:
    """chromedriver's pid and every process under it (Chromium's)."""
    root = driver.service.process.pid
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    pairs = [tuple(map(int, ln.split())) for ln in out.strip().splitlines()]
    for pid, ppid in pairs:
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--volumes", type=int, default=20)
    ap.add_argument("--planes", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rate", type=float, default=5.0)
    ap.add_argument("--browsers", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from beamline_ls import log as bls_log
    from beamline_ls.config import load_settings
    from beamline_ls.epics_env import LoopbackEpics, free_port
    from beamline_ls.stack import running_microscope

    bls_log.configure("WARNING")
    epics = LoopbackEpics()
    epics.apply()
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    settings = load_settings(data_dir=tmp, prefix="BENCHC:")
    port = free_port()
    with running_microscope(epics, settings, tmp / "ioc.log", roi=args.size,
                            progress_bar=False) as (ioc, scope, session):
        import h5py
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        from plans import volumetric_scan

        console = subprocess.Popen(
            [sys.executable, "-m", "beamline_ls.cli", "console", "--prefix", "BENCHC:",
             "--data-dir", str(tmp), "--port", str(port), "--api-key", "bench"],
            env={**os.environ, **epics.env()}, stdout=open(tmp / "console.log", "wb"),
            stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        drivers = []
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(url + "api/state", timeout=5) as r:
                        if json.load(r)["connected"] > 100:
                            break
                except OSError:
                    time.sleep(0.2)
            rows = []
            for rep in range(args.repeats):
                for n in (0, args.browsers):
                    while len(drivers) > n:
                        drivers.pop().quit()
                    while len(drivers) < n:
                        o = webdriver.ChromeOptions()
                        o.binary_location = "/usr/bin/chromium"
                        for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
                                  "--disable-quic", "--no-first-run",
                                  "--disable-background-networking",
                                  "--disable-component-update", "--disable-sync",
                                  "--disable-dev-shm-usage", "--window-size=1500,1700"):
                            o.add_argument(a)
                        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"),
                                             options=o)
                        d.get(url)
                        drivers.append(d)
                    time.sleep(3)  # pages loaded and drawing
                    bpids = [p for d in drivers for p in browser_pids(d)]
                    cpu0 = [cpu_seconds([ioc.proc.pid]), cpu_seconds([console.pid]),
                            cpu_seconds(bpids)]
                    t0 = time.perf_counter()
                    result = session.RE(volumetric_scan(
                        scope.camera, scope.scanboard, args.volumes, args.planes, 10.0, 80.0,
                        args.rate))
                    wall = time.perf_counter() - t0
                    cpu1 = [cpu_seconds([ioc.proc.pid]), cpu_seconds([console.pid]),
                            cpu_seconds(bpids)]
                    path = scope.camera.hdf.full_file_name.get(use_monitor=False)
                    with h5py.File(path, "r") as f:
                        stored = int((f["/entry/meta/frame_id"][...] >= 0).sum())
                    row = {"browsers": n, "repeat": rep, "status": result.exit_status,
                           "wall_s": round(wall, 2),
                           "ideal_s": round(args.volumes / args.rate, 2),
                           "frames": stored, "planned": args.volumes * args.planes,
                           "dropped": int(scope.camera.hdf.dropped_frames.get(
                               use_monitor=False)),
                           "cpu_ioc_s": round(cpu1[0] - cpu0[0], 2),
                           "cpu_console_s": round(cpu1[1] - cpu0[1], 2),
                           "cpu_browsers_s": round(cpu1[2] - cpu0[2], 2)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for d in drivers:
                d.quit()
            console.terminate()
            console.wait(15)
    for n in (0, args.browsers):
        sel = [r for r in rows if r["browsers"] == n]
        print(f"{n} browsers: wall median {statistics.median(r['wall_s'] for r in sel):.2f} s "
              f"(ideal {sel[0]['ideal_s']} s), frames {[r['frames'] for r in sel]} of "
              f"{sel[0]['planned']}, dropped {[r['dropped'] for r in sel]}, CPU s median "
              f"IOC {statistics.median(r['cpu_ioc_s'] for r in sel):.1f}, console "
              f"{statistics.median(r['cpu_console_s'] for r in sel):.1f}, browsers "
              f"{statistics.median(r['cpu_browsers_s'] for r in sel):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
