"""Small helpers shared by plans."""

from __future__ import annotations

import time
import uuid


def file_name_for(kind: str) -> tuple[str, str]:
    """(directory relative to the camera IOC's data root, unique file name)."""
    return time.strftime("%Y/%m/%d"), f"{kind}_{time.strftime('%H%M%S')}_{uuid.uuid4().hex[:8]}"
