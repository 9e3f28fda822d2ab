"""A put the IOC refuses is logged on one line with its reason, not as a traceback."""

from __future__ import annotations

import logging

import pytest

from beamline_ls.log import OneLineRefusal

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def test_a_refused_write_is_one_line_with_the_reason(caplog):
    circuit = logging.getLogger("caproto.circ")  # where caproto's server logs it
    refusal = OneLineRefusal()
    circuit.addFilter(refusal)
    try:
        with caplog.at_level(logging.ERROR, logger="caproto.circ"):
            try:
                raise ValueError("BLS:stage:X: 50000 is outside the limits [-12500, 7500]")
            except ValueError:
                circuit.exception("Invalid write request by %s (%s): %r", "vm", "host",
                                  "WriteNotifyRequest(data=[50000.0])")
            try:
                raise RuntimeError("the IOC itself failed")
            except RuntimeError:
                circuit.exception("Server error in %s", "handler")
    finally:
        circuit.removeFilter(refusal)
    refused, other = caplog.records
    assert refused.exc_info is None and refused.exc_text is None
    assert refused.getMessage() == (
        "Invalid write request by vm (host): 'WriteNotifyRequest(data=[50000.0])' refused: "
        "ValueError: BLS:stage:X: 50000 is outside the limits [-12500, 7500]")
    assert other.exc_info is not None  # anything else keeps its traceback


def test_other_task_failures_keep_their_traceback(caplog):
    """Only caproto's failed reply to a refused put is dropped from the asyncio log."""
    from beamline_ls.log import LateRefusalNoise

    loop_log = logging.getLogger("asyncio")
    noise = LateRefusalNoise()
    loop_log.addFilter(noise)

    def handle_other():
        try:
            raise ValueError("refused")
        except ValueError:
            {}[0]

    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            try:
                handle_other()
            except KeyError:
                loop_log.error("Task exception was never retrieved", exc_info=True)
    finally:
        loop_log.removeFilter(noise)
    (kept,) = caplog.records
    assert kept.exc_info is not None
