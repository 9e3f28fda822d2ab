"""Build the RunEngine a user works with: catalog writer, persisted metadata,
progress bars and (optionally) live tables/plots. Used by the IPython profile, the
demo and tests alike, so all of them record runs the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from beamline_ls.callbacks import BackgroundCallback
from beamline_ls.catalog import open_catalog
from beamline_ls.config import Settings

log = logging.getLogger(__name__)


@dataclass
class Session:
    RE: Any
    catalog: Any
    settings: Settings
    tiled_writer: Any
    bec: Any = None
    catalog_feed: BackgroundCallback | None = None

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until the catalog holds every document emitted so far."""
        if self.catalog_feed is not None:
            if not self.catalog_feed.flush(timeout):
                raise TimeoutError(f"catalog writer still busy after {timeout} s")
            if self.catalog_feed.errors:
                raise RuntimeError(
                    f"{self.catalog_feed.errors} document(s) failed to reach the catalog; "
                    f"last error: {self.catalog_feed.last_error}"
                )

    def close(self) -> None:
        """Flush and stop the catalog writer thread."""
        if self.catalog_feed is not None:
            self.catalog_feed.flush()
            self.catalog_feed.close()


def make_session(
    settings: Settings,
    *,
    progress_bar: bool = True,
    best_effort: bool = False,
) -> Session:
    """RunEngine + catalog + subscriptions.

    ``RE.md`` is persisted under the data directory, so ``scan_id`` keeps counting
    across restarts. ``best_effort`` adds bluesky's live table and plots (IPython).
    """
    from bluesky import RunEngine
    from bluesky.utils import PersistentDict, ProgressBarManager
    from bluesky_tiled_plugins import TiledWriter

    settings.ensure_dirs()
    catalog = open_catalog(settings=settings, create=True)
    RE = RunEngine({}, call_returns_result=True)
    RE.md = PersistentDict(str(settings.state_dir / "runengine-md"))
    RE.md.setdefault("beamline_id", "beamline-ls")
    writer = TiledWriter(catalog)
    # Catalog writes (~0.5 s for a run's final flush) must not hold up the RunEngine.
    feed = BackgroundCallback(writer)
    RE.subscribe(feed)
    if progress_bar:
        RE.waiting_hook = ProgressBarManager()
    bec = None
    if best_effort:
        from bluesky.callbacks.best_effort import BestEffortCallback

        bec = BestEffortCallback()
        RE.subscribe(bec)
    return Session(RE=RE, catalog=catalog, settings=settings, tiled_writer=writer, bec=bec,
                   catalog_feed=feed)
