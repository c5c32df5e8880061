"""Frames between the sidecar and its OTLP/gRPC receiver process, over a socket pair.

A frame is a tuple pickled behind its length (four bytes, big-endian). Both ends are this
package, started together, so pickle is safe here; the request bytes travel as they came.

From the receiver process:

- ``("started", port)`` once it listens, or ``("failed", message)`` if it cannot;
- ``("export", call_id, transport, signal, data, count, scan)``: a decoded, non-empty
  request (``scan``: ``data`` are the bytes the client sent, which the engine may scan; else
  the request serialized for the trip, from JSON or a remote-write body);
- ``("request", transport, signal, outcome)``: a call it answered itself (a request that
  does not decode, an unauthenticated one, an empty one), for the sidecar's telemetry;
- ``("pong", n)``: the answer to ``("ping", n)``.

From the sidecar: ``("outcome", call_id, status, message, response)`` (``response`` the
serialized reply, or None), ``("ping", n)`` every few seconds and ``("stop", grace_s)``.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
Frame = tuple[Any, ...]


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next frame (``asyncio.IncompleteReadError`` once the other end has closed)."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    frame: Frame = pickle.loads(await reader.readexactly(size))  # noqa: S301 -- our own peer
    return frame


def write_frame(writer: asyncio.StreamWriter, frame: Frame) -> None:
    """Queue ``frame`` on ``writer`` (``drain`` it where the sender must wait for room)."""
    body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    writer.writelines((_LENGTH.pack(len(body)), body))


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Write ``frame`` to a blocking socket (callers serialise their sends)."""
    body = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(body)) + body)  # the sidecar's frames are small: one send


def recv_frame(sock: socket.socket) -> Frame:
    """The next frame from a blocking socket (``EOFError`` once the other end has closed)."""
    (size,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    frame: Frame = pickle.loads(_recv_exactly(sock, size))  # noqa: S301 -- our own peer
    return frame


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            msg = "the other end closed the socket"
            raise EOFError(msg)
        got += n
    return buffer
