"""Listening endpoints: ``HOST:PORT`` parsing and binding the sockets the servers use."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Sequence
from typing import Any

from otel_anomaly.exporter.errors import StartupError

MAX_PORT = 65535


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 hosts in brackets) into host and port.

    Raises ``ValueError`` with a message that says what was expected and what was given.

    Examples
    --------
    >>> split_endpoint("localhost:4317")
    ('localhost', 4317)
    >>> split_endpoint("[::1]:0")
    ('::1', 0)
    >>> split_endpoint(":9464")
    ('', 9464)
    """
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit():
        msg = f"expected HOST:PORT such as 'localhost:4317'; got {endpoint!r}"
        raise ValueError(msg)
    port = int(port_text)
    if port > MAX_PORT:
        msg = f"port must be in 0..{MAX_PORT}; got {endpoint!r}"
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        msg = f"IPv6 hosts must be in brackets, e.g. '[::1]:4317'; got {endpoint!r}"
        raise ValueError(msg)
    return host, port


def listen_sockets(endpoint: str, what: str) -> list[socket.socket]:
    """Bind listening TCP sockets for every address ``endpoint``'s host resolves to.

    All sockets share one port: with port 0 the first bind picks it and the others reuse
    it (an address that cannot take that port is skipped), so ``localhost:0`` serves IPv4
    and IPv6 on the same port, as the gRPC server does.

    Parameters
    ----------
    endpoint
        ``HOST:PORT``; an empty host means every interface.
    what
        The component, for the error message (e.g. ``"OTLP/HTTP receiver"``).
    """
    host, port = split_endpoint(endpoint)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        msg = f"{what}: cannot resolve endpoint {endpoint!r}: {exc.strerror}"
        raise StartupError(msg) from exc
    sockets: list[socket.socket] = []
    try:
        for family, address in _unique(infos):
            bound_port = sockets[0].getsockname()[1] if sockets else port
            try:
                sockets.append(_bind(family, (address[0], bound_port, *address[2:])))
            except OSError as exc:
                if sockets and _skippable(exc, port):
                    continue  # a second address family that cannot have this port
                msg = f"{what}: cannot listen on {endpoint!r}: {exc.strerror or exc}"
                raise StartupError(msg) from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _unique(
    infos: Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]],
) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    seen: set[tuple[int, object]] = set()
    out = []
    for family, _, _, _, address in infos:
        if (family, address[0]) not in seen:
            seen.add((family, address[0]))
            out.append((family, address))
    return out


def _skippable(exc: OSError, requested_port: int) -> bool:
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return True
    return exc.errno == errno.EADDRINUSE and requested_port == 0


def _bind(family: socket.AddressFamily, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restart rebind past TIME_WAIT; unlike SO_REUSEPORT it does not
        # let two live servers share the port, so a taken port is still an error.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def probe_bind_error(endpoint: str) -> str:
    """Explain why ``endpoint`` cannot be bound (for servers that only say "failed")."""
    try:
        for sock in listen_sockets(endpoint, "probe"):
            with contextlib.suppress(OSError):
                sock.close()
    except StartupError as exc:
        return str(exc).removeprefix("probe: ")
    return f"cannot listen on {endpoint!r}"
