"""Settings an IOC keeps across restarts (EPICS' autosave idea): one small JSON file
per device under the deployment's ``autosave_dir``, written atomically."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path``: temporary name, fsync, rename, so a crash
    leaves the old file or the new one, never half of one; never through a symlink."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_saved(path: Path | None, what: str) -> dict:
    """The values saved at ``path``: {} when there is none, or when it cannot be read
    (said at WARNING, naming ``what``: the IOC starts with its defaults)."""
    if path is None:
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the saved %s %s (%s)", what, path, exc)
        return {}
    return saved if isinstance(saved, dict) else {}


async def restore_pvs(pvdb: dict, prefix: str, names: Iterable[str], saved: dict,
                      what: str) -> None:
    """Write each saved value through its PV, in the order of ``names``, so the PV's
    own checks apply: one that today's hardware or limits refuse is skipped, with a
    warning naming ``what``; an unchanged one is not written again."""
    for name in names:
        pv = pvdb[prefix + name]
        if name not in saved or saved[name] == pv.value:
            continue
        try:
            await pv.write(saved[name])
        except Exception as exc:  # noqa: BLE001 - out of today's range, not a number
            log.warning("%s: saved %s = %r not restored: %s", what, name, saved[name], exc)
