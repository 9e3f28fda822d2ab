"""Merge the documents a slow writer has not reached yet, so it catches up.

The catalog writer takes each document as it is emitted (``TiledWriter(batch_size=1)``:
a running scan is in the catalog at every collect). Each StreamDatum and EventPage is
one request to the catalog, 40-90 ms on a 2-core machine during an acquisition, and a
volumetric scan at 512 x 512 emits six StreamDatums and an EventPage twice a second:
more work than the writer can do, so it fell behind and the stop document waited for
the backlog (1.7 s at the end of a 4 s scan).

:func:`coalesce` merges what is waiting in the queue, never waiting for more: the
StreamDatums of one stream resource with consecutive indices into one (with
bluesky-tiled-plugins' own ``concatenate_stream_datums``, what TiledWriter does when it
batches), the EventPages of one descriptor into one (``event_model.merge_event_pages``).
A writer that keeps up sees every document as before; one that falls behind makes one
request per stream for the whole backlog. Only runs of StreamDatum and EventPage
documents are regrouped; every other document (start, descriptor, resource, stop, a
flush marker) stays where it was, and the documents of one stream keep their order.
"""

from __future__ import annotations

from typing import Any

Item = tuple[str, Any]


def coalesce(items: list[Item]) -> list[Item]:
    """``items`` (name, document) in emission order, with mergeable neighbours merged."""
    out: list[Item] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for name, doc in items:
        if name == "stream_datum":
            groups.setdefault((name, doc["stream_resource"]), []).append(doc)
        elif name == "event_page":
            groups.setdefault((name, doc["descriptor"]), []).append(doc)
        else:
            out.extend(_merged(groups))
            groups = {}
            out.append((name, doc))
    out.extend(_merged(groups))
    return out


def _merged(groups: dict[tuple[str, str], list[dict]]) -> list[Item]:
    from bluesky_tiled_plugins.writing.tiled_writer import concatenate_stream_datums
    from event_model import merge_event_pages

    out: list[Item] = []
    for (name, _), docs in groups.items():
        if len(docs) == 1:
            out.append((name, docs[0]))
        elif name == "event_page":
            out.append((name, merge_event_pages(docs)))
        else:
            for run in _consecutive(docs):
                out.append((name, concatenate_stream_datums(*run)))
    return out


def _consecutive(docs: list[dict]) -> list[list[dict]]:
    """``docs`` split where one's indices (or sequence numbers) do not start where the
    previous one's stop: a unit missing in between stays visible as a gap."""
    runs = [[docs[0]]]
    for doc in docs[1:]:
        if doc["indices"]["start"] == runs[-1][-1]["indices"]["stop"] \
                and doc["seq_nums"]["start"] == runs[-1][-1]["seq_nums"]["stop"]:
            runs[-1].append(doc)
        else:
            runs.append([doc])
    return runs
