"""Prospective optical gating: pure numpy/numba, no EPICS, no ophyd, no bluesky.

Modules (one job each): `sad` (numba SAD/binning kernels), `reference` (period search
and the reference heartbeat), `phase` (phase of a frame), `predict` (unwrapping and
least-squares prediction with guards), `analyzer` (per-frame state machine and trigger
decisions), `scheduler` (absolute-time firing on a real or virtual clock), `adaptive`
(long-term reference updating), `evaluate` (scoring against a simulator's true phase),
`replay` (the ``replay`` CLI).
"""

from .adaptive import AdaptiveReferenceUpdater, InlineExecutor
from .analyzer import Decision, GatingAnalyzer, GatingConfig
from .reference import PeriodFinder, Reference
from .scheduler import (
    RealTimeClock,
    RecordingSink,
    TriggerReport,
    TriggerScheduler,
    TriggerSink,
    VirtualClock,
)

__all__ = [
    "AdaptiveReferenceUpdater", "Decision", "GatingAnalyzer", "GatingConfig",
    "InlineExecutor", "PeriodFinder", "RealTimeClock", "RecordingSink", "Reference",
    "TriggerReport", "TriggerScheduler", "TriggerSink", "VirtualClock",
]
