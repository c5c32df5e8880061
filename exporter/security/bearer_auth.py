"""Bearer tokens on the servers, as the Collector's ``bearertokenauth`` extension checks them.

Clients send ``authorization: Bearer <token>`` (gRPC metadata or an HTTP header). The
token file lists the accepted tokens, one per line, and is re-read when it changes
(``WatchedFiles``). Tokens are compared in constant time and never logged. A refused
call is answered before its body is decoded: gRPC ``UNAUTHENTICATED``, or HTTP 401 with
``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware  # aiohttp >= 3.9

from otel_anomaly.exporter.config_security import BearerAuthConfig
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.security.watched_files import WatchedFiles, describe_error

REFUSED_MESSAGE = "missing or wrong bearer token (expected authorization: Bearer <token>)"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="otel-anomaly"'}
"""The header a 401 carries (RFC 6750): which scheme the server expects."""


if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:  # generic in the stubs only
    _ServerInterceptor = grpc.aio.ServerInterceptor


class BearerTokens:
    """The tokens a server accepts, from ``auth.bearer_token_file``.

    Parameters
    ----------
    config
        The ``auth`` block; must be enabled.
    what
        The server and config key, for errors and log lines.

    Raises
    ------
    StartupError
        When the file cannot be read or holds no token.
    """

    def __init__(self, config: BearerAuthConfig, what: str) -> None:
        try:
            self._tokens = WatchedFiles([config.bearer_token_file], _load_tokens, what)
        except (OSError, ValueError) as exc:
            msg = f"{what}: {describe_error(exc)}"
            raise StartupError(msg) from exc

    @property
    def reloads(self) -> int:
        """Times a changed token file was loaded."""
        return self._tokens.reloads

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``authorization`` value is ``Bearer`` and one of the tokens."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # surrogateescape: header bytes that are not UTF-8 come back as they were sent.
        given = token.strip().encode("utf-8", "surrogateescape")
        matched = False
        for expected in self._tokens.current():
            matched |= hmac.compare_digest(given, expected)
        return matched


def _load_tokens(paths: Sequence[str]) -> tuple[bytes, ...]:
    with open(paths[0], "rb") as handle:
        lines = handle.read().splitlines()
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens:
        # An empty file is what a reader sees halfway through a rewrite: never "no token".
        msg = f"bearer_token_file {paths[0]!r} holds no token"
        raise ValueError(msg)
    return tokens


def http_middleware(
    tokens: BearerTokens, refuse: Callable[[web.Request], web.StreamResponse],
    open_paths: frozenset[str] = frozenset(),
) -> Middleware:
    """An aiohttp middleware that answers ``refuse(request)`` unless the token is right.

    ``open_paths`` need no token (health probes).
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths or tokens.accepts(request.headers.get("Authorization")):
            return await handler(request)
        return refuse(request)

    return authenticate


class GrpcBearerInterceptor(_ServerInterceptor):
    """Refuses calls without a right token with ``UNAUTHENTICATED``, before decoding.

    Parameters
    ----------
    tokens
        The accepted tokens.
    refused
        Called with the method's full name for each refused call (to count it).
    """

    def __init__(self, tokens: BearerTokens, refused: Callable[[str], None]) -> None:
        self._tokens = tokens
        self._refused = refused
        self._refuse = grpc.unary_unary_rpc_method_handler(_unauthenticated)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails],
                               Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Pass the call on if its ``authorization`` metadata holds a token."""
        authorization = next(
            (value for key, value in handler_call_details.invocation_metadata or ()
             if key == "authorization"),
            None,
        )
        if isinstance(authorization, str) and self._tokens.accepts(authorization):
            return await continuation(handler_call_details)
        self._refused(handler_call_details.method)
        return self._refuse


async def _unauthenticated(_: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED_MESSAGE)
