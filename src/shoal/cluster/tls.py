"""TLS for the NSQ TCP upgrade and the HTTPS listener, from nsqd's flags.

nsqd builds one ``tls.Config`` from ``--tls-cert``, ``--tls-key``,
``--tls-root-ca-file``, ``--tls-client-auth-policy`` and
``--tls-min-version``, and uses it for the IDENTIFY ``tls_v1`` upgrade and
for ``--https-address``; so does this module, with the standard library's
``ssl`` (trio's `trio.SSLStream` runs it over any stream).

Two differences: ``--tls-min-version`` below ``tls1.2`` leaves the system
OpenSSL's floor in place (usually TLS 1.2); and Go's ``require`` policy asks
for a client certificate but does not verify it, which OpenSSL cannot do, so
here ``require`` verifies against ``--tls-root-ca-file`` (or the system's
roots), as ``require-verify`` does.
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import Any

from shoal.errors import ConfigError

__all__ = ["MIN_VERSIONS", "TLSConfig", "peer_common_name", "server_context"]

#: ``--tls-min-version`` values, as nsqd spells them.
MIN_VERSIONS = {
    "ssl3.0": ssl.TLSVersion.SSLv3,
    "tls1.0": ssl.TLSVersion.TLSv1,
    "tls1.1": ssl.TLSVersion.TLSv1_1,
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH_POLICIES = ("", "require", "require-verify")
#: nsqd gives up on a TLS handshake after this long.
HANDSHAKE_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """The node's TLS settings (nsqd's flags of the same names).

    Attributes:
        cert: PEM certificate chain file; without it there is no TLS.
        key: PEM private key file.
        root_ca_file: PEM CAs that client certificates must chain to.
        client_auth_policy: "" (no client certificate), ``require`` or
            ``require-verify``.
        required: ``""`` (TLS optional), ``true`` (TCP must upgrade and the
            plain HTTP listener refuses) or ``tcp-https`` (TCP must
            upgrade; plain HTTP still served). A client auth policy implies
            ``true``, as in nsqd.
        min_version: lowest protocol version accepted, e.g. ``tls1.2``.
    """

    cert: str | None = None
    key: str | None = None
    root_ca_file: str | None = None
    client_auth_policy: str = ""
    required: str = ""
    min_version: str = "tls1.0"

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("tls-cert and tls-key must be given together")
        if self.client_auth_policy not in CLIENT_AUTH_POLICIES:
            raise ConfigError(
                f"tls-client-auth-policy {self.client_auth_policy!r} is not require or "
                "require-verify"
            )
        if self.required not in ("", "false", "true", "tcp-https"):
            raise ConfigError(f"tls-required {self.required!r} is not true, false or tcp-https")
        if self.min_version not in MIN_VERSIONS:
            raise ConfigError(
                f"tls-min-version {self.min_version!r} is not one of {', '.join(MIN_VERSIONS)}"
            )
        if self.required in ("true", "tcp-https") and not self.cert:
            raise ConfigError("tls-required needs tls-cert and tls-key")
        if (self.client_auth_policy or self.root_ca_file) and not self.cert:
            raise ConfigError(
                "tls-client-auth-policy and tls-root-ca-file need tls-cert and tls-key"
            )

    @property
    def enabled(self) -> bool:
        """A certificate is configured."""
        return bool(self.cert)

    @property
    def tcp_required(self) -> bool:
        """TCP clients must upgrade before any command but IDENTIFY."""
        return self.required in ("true", "tcp-https") or bool(self.client_auth_policy)

    @property
    def http_required(self) -> bool:
        """The plain HTTP listener answers 403 TLS_REQUIRED."""
        return self.required == "true" or (
            bool(self.client_auth_policy) and self.required in ("", "false")
        )


def server_context(config: TLSConfig) -> ssl.SSLContext:
    """Build the server-side context for ``config``.

    Raises:
        ConfigError: a file cannot be read or does not hold what it should.
    """
    if not config.cert or not config.key:
        raise ConfigError("TLS needs tls-cert and tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    minimum = MIN_VERSIONS[config.min_version]
    # Below TLS 1.2 (nsqd's default is tls1.0) the system OpenSSL's own floor
    # applies: Python deprecates asking for less, and OpenSSL's security
    # level refuses it anyway.
    if minimum >= ssl.TLSVersion.TLSv1_2:
        context.minimum_version = minimum
    try:
        context.load_cert_chain(config.cert, config.key)
        if config.root_ca_file:
            context.load_verify_locations(config.root_ca_file)
        elif config.client_auth_policy:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}") from None
    if config.client_auth_policy:
        context.verify_mode = ssl.CERT_REQUIRED
    elif config.root_ca_file:
        # Go's default with a root CA: verify a client certificate if given.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_common_name(cert: dict[str, Any] | None) -> str:
    """The subject common name of a peer certificate (``getpeercert()``), or ""."""
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
