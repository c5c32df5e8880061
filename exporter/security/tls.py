"""Server TLS from the ``tls`` files: an ``ssl.SSLContext`` for aiohttp, credentials for gRPC.

Both follow the files as they change (``WatchedFiles``). aiohttp listens with one context
whose SNI callback hands each handshake the context of the current files: OpenSSL calls
it for every ClientHello, with or without a server name, before the certificate is
chosen. gRPC calls its certificate fetcher before each handshake for the same purpose.
Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import grpc

from otel_anomaly.exporter.config_security import TlsServerConfig, TlsVersion
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.security.watched_files import WatchedFiles, describe_error

_VERSIONS: dict[TlsVersion, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True, slots=True)
class ServerTls:
    """One loaded set of TLS files: a server context, and the PEM bytes gRPC takes."""

    context: ssl.SSLContext
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


def load_server_tls(config: TlsServerConfig, what: str) -> WatchedFiles[ServerTls]:
    """Load ``config``'s files and follow their changes.

    Raises ``StartupError`` starting with ``what`` (the server and its config key) when
    the files do not make a certificate chain, its key and (for mTLS) a CA.
    """
    paths = [config.cert_file, config.key_file]
    if config.client_ca_file:
        paths.append(config.client_ca_file)
    try:
        return WatchedFiles(paths, partial(_load, config.min_version), what)
    except (OSError, ValueError) as exc:
        msg = f"{what}: cannot load the TLS files: {describe_error(exc)}"
        raise StartupError(msg) from exc


def listening_context(tls: WatchedFiles[ServerTls]) -> ssl.SSLContext:
    """The context an HTTP server listens with: each handshake gets the current files'."""
    front = tls.current().context

    def pick(connection: ssl.SSLObject, _server_name: str | None, _: ssl.SSLContext) -> None:
        current = tls.current().context
        if current is not front:
            connection.context = current

    front.sni_callback = pick
    return front


def grpc_credentials(tls: WatchedFiles[ServerTls]) -> grpc.ServerCredentials:
    """Server credentials for gRPC that follow the files; client certificates if mTLS."""
    served = [tls.current()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        current = tls.current()
        if current is served[0]:
            return None  # gRPC keeps the configuration it has
        served[0] = current
        return _grpc_configuration(current)

    return grpc.dynamic_ssl_server_credentials(
        _grpc_configuration(served[0]),
        fetch,  # type: ignore[arg-type]  # grpcio documents None as "unchanged"
        require_client_authentication=served[0].client_ca is not None,
    )


def _grpc_configuration(tls: ServerTls) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(tls.private_key, tls.cert_chain)], root_certificates=tls.client_ca
    )


def _load(min_version: TlsVersion, paths: Sequence[str]) -> ServerTls:
    cert_file, key_file, *ca_files = paths
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    try:
        # Without a password callback OpenSSL would prompt for one on the terminal.
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        msg = (f"cert_file {cert_file!r} and key_file {key_file!r} are not a PEM "
               f"certificate chain and its private key ({exc.reason or exc})")
        raise ValueError(msg) from exc
    client_ca = None
    if ca_files:
        try:
            context.load_verify_locations(cafile=ca_files[0])
        except ssl.SSLError as exc:
            msg = f"client_ca_file {ca_files[0]!r} holds no PEM certificate ({exc.reason or exc})"
            raise ValueError(msg) from exc
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca = _read(ca_files[0])
    return ServerTls(context, _read(cert_file), _read(key_file), client_ca)


def _no_password() -> bytes:
    msg = "the private key is encrypted: key_file must hold an unencrypted PEM key"
    raise ValueError(msg)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
