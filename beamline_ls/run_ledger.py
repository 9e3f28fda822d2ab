"""What each run emitted, and what of it the catalog holds when read back.

Why: the catalog writer runs behind the RunEngine, and a request it loses (a locked
database, a server that went away for a moment) is counted as an error. But a failed
request is not a lost row: bluesky-tiled-plugins' writer keeps an event it could not
write and sends it with the next one, so after a short outage the run may be complete
after all; and a request that "succeeded" proves nothing about what the run holds.
What the user needs at the end of a run is the fact: which streams, events and
frames the catalog lacks. The ledger counts them from the documents as they are
emitted (on the RunEngine's thread: a few dictionary updates per document), and
`RunLedger.shortfalls` reads the run back from the catalog and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Run:
    streams: dict[str, str] = field(default_factory=dict)  # descriptor uid -> stream
    events: dict[str, int] = field(default_factory=dict)  # stream -> events emitted
    internal: dict[str, list[str]] = field(default_factory=dict)  # stream -> its keys
    #: (stream, data key) -> rows (StreamDatum indices) announced for external data
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    resource_key: dict[str, str] = field(default_factory=dict)  # resource uid -> key


class RunLedger:
    """Document subscriber counting, per run, the events and external rows emitted."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self._runs[doc["uid"]] = _Run()
            return
        run = self._runs.get(doc.get("run_start", "")) if name in (
            "descriptor", "stream_resource") else None
        if name == "descriptor" and run is not None:
            run.streams[doc["uid"]] = doc["name"]
            run.events.setdefault(doc["name"], 0)
            run.internal[doc["name"]] = [k for k, v in doc["data_keys"].items()
                                         if not v.get("external")]
        elif name == "stream_resource" and run is not None:
            run.resource_key[doc["uid"]] = doc["data_key"]
        elif name in ("event", "event_page", "stream_datum"):
            self._count(name, doc)

    def _count(self, name: str, doc: dict) -> None:
        for run in self._runs.values():
            stream = run.streams.get(doc["descriptor"])
            if stream is None:
                continue
            if name == "event":
                run.events[stream] += 1
            elif name == "event_page":
                run.events[stream] += len(doc["seq_num"])
            else:
                key = run.resource_key.get(doc["stream_resource"])
                if key is not None:
                    n = doc["indices"]["stop"] - doc["indices"]["start"]
                    run.rows[(stream, key)] = run.rows.get((stream, key), 0) + n
            return

    def forget(self, uid: str) -> None:
        """Drop a finished run's counts."""
        self._runs.pop(uid, None)

    def shortfalls(self, catalog: Any, uid: str) -> list[str]:
        """What of run ``uid`` the catalog lacks, read back from it (empty: nothing).

        Each entry names what is missing: the whole run, a whole stream, events of a
        stream, or rows (frames, volumes) of an external data key.
        """
        run = self._runs.get(uid)
        if run is None:
            return []
        try:
            node = catalog[uid]
        except KeyError:
            return ["the whole run"]
        out = []
        for stream, n_events in run.events.items():
            wanted = {key: n for (s, key), n in run.rows.items() if s == stream}
            internal = run.internal.get(stream, [])
            if not wanted and not (internal and n_events):
                continue
            try:
                shapes = {key: tuple(arr.shape) for key, arr in node[stream].items()}
            except KeyError:
                out.append(f"all of stream '{stream}'")
                continue
            have = [shapes[k][0] for k in internal if k in shapes and shapes[k]]
            if internal and n_events and min(have, default=0) < n_events:
                out.append(f"{n_events - min(have, default=0)} of {n_events} events of "
                           f"'{stream}'")
            for key, n in wanted.items():
                shape = shapes.get(key)
                got = shape[0] if shape else 0
                if got < n:
                    out.append(f"{n - got} of {n} rows of '{stream}/{key}'")
        return out
