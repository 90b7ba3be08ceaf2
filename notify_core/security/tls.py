"""Transport security options: TLS 1.2+ for ``notify serve`` and TLS/SASL for the Kafka clients.

``notify serve --tls-cert cert.pem --tls-key key.pem`` (or ``NOTIFY_TLS_CERT`` / ``NOTIFY_TLS_KEY``)
serves HTTPS only, with TLS 1.2 as the minimum version (:func:`harden_server_context`, installed through
uvicorn's ``ssl_context_factory``: clients offering TLS 1.0/1.1 fail the handshake). Plain HTTP remains
the local default on 127.0.0.1; in aws, API Gateway terminates TLS (HTTPS-only endpoints).

:func:`kafka_security_config` maps the ``NOTIFY_KAFKA_*`` security settings to librdkafka's
configuration keys (``security.protocol``, ``ssl.ca.location``, ``sasl.mechanisms``...), the one place
both the producer and the consumer take them from.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notify_core.errors import ConfigurationError

if TYPE_CHECKING:
    from notify_core.settings import NotifySettings

log = logging.getLogger(__name__)

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


def harden_server_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2 minimum, no compression, server cipher preference, no TLS renegotiation."""
    context.minimum_version = MINIMUM_TLS
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def tls12_context_factory(_config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its own context (cert, key) made TLS 1.2+ (module-level so
    worker processes can import it)."""
    return harden_server_context(default_factory())


def check_tls_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """Both or neither; both must exist. Returns the pair, or None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    for path in (cert, key):
        if not Path(path).is_file():
            raise ConfigurationError(f"TLS file {path} does not exist")
    return Path(cert), Path(key)


def kafka_security_config(settings: NotifySettings) -> dict[str, str]:
    """librdkafka configuration for the settings' Kafka security options (empty: plaintext)."""
    protocol = settings.kafka_security_protocol
    sasl = settings.kafka_sasl_mechanism
    if protocol is None and sasl is None and settings.kafka_ssl_ca_location is None:
        return {}
    if protocol is None:  # a SASL mechanism or a CA without a protocol: the secure combination
        protocol = "SASL_SSL" if sasl is not None else "SSL"
    config: dict[str, str] = {"security.protocol": protocol.lower()}
    if protocol in ("SSL", "SASL_SSL"):
        config["ssl.endpoint.identification.algorithm"] = "https"
        for key, value in (("ssl.ca.location", settings.kafka_ssl_ca_location),
                           ("ssl.certificate.location", settings.kafka_ssl_certificate_location),
                           ("ssl.key.location", settings.kafka_ssl_key_location)):
            if value is not None:
                config[key] = str(value)
    if protocol.startswith("SASL"):
        if sasl is None:
            raise ConfigurationError(f"security protocol {protocol} needs NOTIFY_KAFKA_SASL_MECHANISM")
        config["sasl.mechanisms"] = sasl
        if sasl != "OAUTHBEARER":
            if not (settings.kafka_sasl_username and settings.kafka_sasl_password):
                raise ConfigurationError(f"SASL {sasl} needs NOTIFY_KAFKA_SASL_USERNAME and _PASSWORD")
            config["sasl.username"] = settings.kafka_sasl_username
            config["sasl.password"] = settings.kafka_sasl_password
        if protocol == "SASL_PLAINTEXT" and sasl == "PLAIN":  # allowed (a broker on this host), never silent
            log.warning("Kafka over SASL_PLAINTEXT with PLAIN: the password and every event cross the network in "
                        "clear text; set NOTIFY_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
                        extra={"kafka_security_protocol": protocol, "kafka_sasl_mechanism": sasl})
    return config
