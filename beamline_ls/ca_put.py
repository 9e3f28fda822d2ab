"""A Channel Access put that waits for completion, safe to run on many threads at once.

Why not ``caproto.sync.client.write``: it keeps its TCP circuits in module-level
dictionaries keyed by the server's address, so two writes to the same IOC from two
threads share one socket. Each reads the other's replies, and whichever finishes first
closes the socket under the other ("Disconnected while waiting for write response",
``KeyError: <VirtualCircuit ...>``), or the second write is never sent. The operator
console writes from a pool of threads (a motor move that takes seconds must not hold up
the STOP clicked after it), so it needs a write that owns its circuit.

Why not caproto's asyncio or threading client: a put the IOC refuses is answered with
an ``ErrorResponse``, which those clients (caproto 1.3) drop; the caller would wait out
its whole timeout and never learn the reason.

This module speaks the protocol through caproto's sans-I/O core (``VirtualCircuit``,
``ClientChannel``) on a circuit of its own per call, after the same UDP name search the
synchronous client makes.
"""

from __future__ import annotations

import getpass
import socket
import threading
import time
from typing import Any

import caproto as ca
from caproto import ErrorResponseReceived
from caproto.sync.client import search

__all__ = ["put_and_wait", "ErrorResponseReceived"]

_CANCEL_POLL_S = 0.25


def put_and_wait(name: str, data: list[Any], *, timeout: float,
                 data_type: ca.ChannelType | None = None,
                 cancel: threading.Event | None = None) -> ca.WriteNotifyResponse:
    """Write ``data`` to the PV ``name`` and wait until the IOC reports the put done.

    Raises :class:`caproto.ErrorResponseReceived` (carrying the IOC's message) when the
    IOC refuses the put, :class:`TimeoutError` when the search, the connection or the
    completion takes longer than ``timeout`` seconds in all, and
    :class:`ConnectionError` when the IOC drops the circuit. Setting ``cancel``
    abandons the wait within a quarter of a second (:class:`ConnectionAbortedError`):
    a client shutting down does not wait for a long move to finish.
    """
    deadline = time.monotonic() + timeout
    address = _find(name, timeout)
    circuit = ca.VirtualCircuit(our_role=ca.CLIENT, address=address, priority=0)
    chan = ca.ClientChannel(name, circuit)
    try:
        sock = socket.create_connection(address, timeout=_left(deadline, name, "connect"))
    except OSError as exc:
        raise ConnectionError(f"{name}: cannot connect to the IOC at "
                              f"{address[0]}:{address[1]}: {exc}") from exc
    with sock:
        circuit.our_address = sock.getsockname()

        def send(*commands: Any) -> None:
            sock.sendall(b"".join(circuit.send(*commands)))

        send(ca.VersionRequest(priority=0, version=ca.DEFAULT_PROTOCOL_VERSION),
             chan.host_name(socket.gethostname()), chan.client_name(getpass.getuser()),
             chan.create())
        _until(sock, circuit, deadline, cancel, name, "channel creation",
               lambda command: chan.states[ca.CLIENT] is ca.CONNECTED)
        request = chan.write(data=data, notify=True, data_type=data_type)
        send(request)
        reply = _until(sock, circuit, deadline, cancel, name, "completion of the put",
                       lambda command: isinstance(command, ca.WriteNotifyResponse)
                       and command.ioid == request.ioid)
        try:
            send(chan.clear())
        except OSError:
            pass  # the put is done; closing the socket clears the channel anyway
    if not reply.status.success:
        raise ErrorResponseReceived(reply)
    return reply


def _find(name: str, timeout: float) -> tuple[str, int]:
    udp = ca.bcast_socket()
    try:
        udp.bind(("", 0))
        udp.settimeout(timeout)
        return search(name, udp, timeout)
    except ca.CaprotoTimeoutError as exc:
        raise TimeoutError(f"{name}: no IOC answered the search within "
                           f"{timeout:.0f} s") from exc
    finally:
        udp.close()


def _left(deadline: float, name: str, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{name}: timed out waiting for {what}")
    return left


def _until(sock: socket.socket, circuit: ca.VirtualCircuit, deadline: float,
           cancel: threading.Event | None, name: str, what: str, done) -> Any:
    """Read the circuit until a command satisfies ``done`` (returned); an error reply
    raises :class:`ErrorResponseReceived`."""
    while True:
        if cancel is not None and cancel.is_set():
            raise ConnectionAbortedError(f"{name}: abandoned waiting for {what}")
        sock.settimeout(min(_left(deadline, name, what), _CANCEL_POLL_S))
        try:
            received = sock.recv(65536)
        except TimeoutError:
            continue  # the deadline and the cancel flag are checked above
        commands, _ = circuit.recv(received)
        for command in commands:
            if command is ca.DISCONNECTED:
                raise ConnectionError(f"{name}: the IOC closed the connection while "
                                      f"waiting for {what}")
            circuit.process_command(command)
            if isinstance(command, ca.ErrorResponse):
                raise ErrorResponseReceived(command)
            if done(command):
                return command
