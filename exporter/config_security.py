"""The servers' ``tls`` and ``auth`` blocks: certificates as in configtls, bearer token files.

Key names follow the Collector's ``configtls`` server settings and its ``bearertokenauth``
extension, so a Collector config's values carry over. Files are checked to be readable
here; their contents are loaded when the servers start, and re-read when they change.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, model_validator

from otel_anomaly.exporter.config_types import Model, ReadableFile

TlsVersion = Literal["1.2", "1.3"]


def _version_text(value: object) -> object:
    # YAML reads an unquoted `min_version: 1.2` as a float.
    return str(value) if isinstance(value, float) else value


class TlsServerConfig(Model):
    """A server's TLS (``tls``); off while ``cert_file`` is empty.

    ``client_ca_file`` turns on mutual TLS: clients must present a certificate it signed.
    """

    cert_file: ReadableFile = ""
    key_file: ReadableFile = ""
    client_ca_file: ReadableFile = ""
    min_version: Annotated[TlsVersion, BeforeValidator(_version_text)] = "1.2"

    @property
    def enabled(self) -> bool:
        """Whether the server speaks TLS."""
        return bool(self.cert_file)

    @model_validator(mode="after")
    def _files_together(self) -> TlsServerConfig:
        if bool(self.cert_file) != bool(self.key_file):
            given, missing = ("cert_file", "key_file") if self.cert_file else (
                "key_file", "cert_file")
            msg = f"`{missing}` must be set when `{given}` is (TLS needs both)"
            raise ValueError(msg)
        if self.client_ca_file and not self.cert_file:
            msg = "`client_ca_file` (mutual TLS) needs `cert_file` and `key_file` too"
            raise ValueError(msg)
        return self


class BearerAuthConfig(Model):
    """Bearer-token authentication (``auth``); off while ``bearer_token_file`` is empty.

    Clients send ``authorization: Bearer <token>``; the file holds the accepted tokens,
    one per line (two lines let clients move to a new token without a refused request).
    """

    bearer_token_file: ReadableFile = ""

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a token."""
        return bool(self.bearer_token_file)

    @model_validator(mode="after")
    def _holds_a_token(self) -> BearerAuthConfig:
        if not self.bearer_token_file:
            return self
        with open(self.bearer_token_file, "rb") as handle:  # readable: checked above
            text = handle.read()
        if not text.strip():
            msg = f"`bearer_token_file` {self.bearer_token_file!r} holds no token (it is empty)"
            raise ValueError(msg)
        return self
