"""Copies of closed frame files to a slow destination, as ``HDF1:Mirror...`` PVs.

The camera writes to fast local staging (the IOC's data root). When ``HDF1:MirrorPath``
names a destination root (a network share), each file is queued for copying the
moment its capture closes: copied on a background thread with retries, verified by
sha256, never overwriting (:class:`beamline_ls.pipeline.mirror.Mirror`). Acquisition
never waits for the share. Every outcome is appended to the copy ledger, which the
RunEngine session reads to point the catalog at the verified copy
(:mod:`beamline_ls.relocation`), and shown here:

- ``MirrorQueued_RBV``: files waiting or being copied
- ``MirrorVerified_RBV`` / ``MirrorFailed_RBV``: files finished either way
- ``MirrorMessage_RBV``: the latest outcome, ``MirrorLastCopy_RBV``: latest copy path
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from pathlib import Path

from caproto.server import PVGroup, pvproperty

from beamline_ls.iocs.text import text_pv
from beamline_ls.pipeline.copy_ledger import CopyLedger, CopyRecord
from beamline_ls.pipeline.mirror import VERIFIED, FileStatus, Mirror

log = logging.getLogger(__name__)


def _string(name: str, read_only: bool = False, doc: str = ""):
    return text_pv(name, read_only=read_only, max_length=1024, doc=doc)


class MirrorGroup(PVGroup):
    """Copy closed files from ``staging_root`` to ``MirrorPath`` (empty: no copies)."""

    mirror_path = _string("MirrorPath", doc="absolute destination root; empty: no copies")
    retries = pvproperty(name="MirrorRetries", value=5, lower_ctrl_limit=0,
                         upper_ctrl_limit=100, doc="attempts after the first")
    backoff = pvproperty(name="MirrorBackoff", value=1.0, units="s", precision=3,
                         lower_ctrl_limit=0.0, upper_ctrl_limit=600.0,
                         doc="delay before the first retry (doubles, at most 60 s)")
    queued = pvproperty(name="MirrorQueued_RBV", value=0, read_only=True)
    verified = pvproperty(name="MirrorVerified_RBV", value=0, read_only=True)
    failed = pvproperty(name="MirrorFailed_RBV", value=0, read_only=True)
    message = _string("MirrorMessage_RBV", read_only=True)
    last_copy = _string("MirrorLastCopy_RBV", read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._mirrors: dict[tuple[str, int, float], Mirror] = {}
        self._outcomes: collections.deque[FileStatus] = collections.deque()
        self.configure(Path.cwd())

    def configure(self, staging_root: Path, default_path: str | Path | None = None) -> None:
        """Set the staging directory (the camera's data root) and the initial MirrorPath
        (the deployment's ``mirror_dir``); called by the camera group that owns this."""
        self.staging_root = Path(staging_root).resolve()
        self.ledger = CopyLedger.in_directory(self.staging_root)
        self._default_path = str(default_path or "")

    def submit(self, path: Path) -> None:
        """Queue a closed file for copying (returns at once; no-op without MirrorPath)."""
        root = self.mirror_path.value.strip()
        if not root:
            return
        key = (root, int(self.retries.value), float(self.backoff.value))
        mirror = self._mirrors.get(key)
        if mirror is None:
            mirror = Mirror(self.staging_root, root, retries=key[1], backoff_s=key[2],
                            on_finished=functools.partial(self._record, root))
            self._mirrors[key] = mirror
        try:
            mirror.submit(path)
        except (ValueError, RuntimeError) as exc:  # not under staging, or not a file
            log.error("cannot copy %s to %s: %s", path, root, exc)
            self._outcomes.append(FileStatus(staging=str(path), destination=root,
                                             state="failed", last_error=str(exc)))

    def _record(self, root: str, st: FileStatus) -> None:
        """Mirror thread: put the outcome in the ledger first, then on the PVs."""
        self.ledger.append(CopyRecord(
            staging=st.staging, destination=st.destination, destination_root=root,
            state=st.state, sha256=st.sha256, size=st.size, attempts=st.attempts,
            error=st.last_error, time=st.finished_at))
        self._outcomes.append(st)

    def pending(self) -> int:
        return sum(m.in_flight for m in self._mirrors.values())

    def close(self, timeout: float = 0.0) -> None:
        for mirror in self._mirrors.values():
            mirror.close(timeout)

    @mirror_path.putter
    async def mirror_path(self, instance, value):
        value = value.strip()
        if value and not Path(value).is_absolute():
            raise ValueError(f"MirrorPath must be an absolute directory (got {value!r})")
        if value and Path(value).resolve() == self.staging_root:
            raise ValueError("MirrorPath must differ from the staging directory")
        return value

    @queued.startup
    async def queued(self, instance, async_lib):
        if self._default_path:
            await self.mirror_path.write(self._default_path)
        while True:
            while self._outcomes:
                st = self._outcomes.popleft()
                if st.state == VERIFIED:
                    await self.verified.write(self.verified.value + 1)
                    await self.last_copy.write(st.destination)
                    text = f"verified {Path(st.staging).name} -> {st.destination}"
                else:
                    await self.failed.write(self.failed.value + 1)
                    text = f"FAILED {Path(st.staging).name}: {st.last_error}"
                await self.message.write(text[:1000])
            n = self.pending()
            if n != self.queued.value:
                await self.queued.write(n)
            await asyncio.sleep(0.2)
