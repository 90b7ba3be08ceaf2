"""Streams: the port, its two adapters, and the one place that picks an adapter for an environment.

The adapters are imported lazily by :func:`open_stream`, so ``import notify_core.stream`` never loads
confluent-kafka.
"""

from __future__ import annotations

from notify_core.errors import ConfigurationError
from notify_core.settings import NotifySettings
from notify_core.stream.port import Message, Record, Stream, StreamConsumer, next_positions

__all__ = [
    "Message",
    "Record",
    "Stream",
    "StreamConsumer",
    "next_positions",
    "open_stream",
]


def open_stream(settings: NotifySettings) -> Stream:
    """The Stream for this environment: the embedded log by default, Kafka when configured."""
    if settings.stream == "kafka":
        if not settings.kafka_bootstrap:
            raise ConfigurationError("the Kafka stream needs NOTIFY_KAFKA_BOOTSTRAP (host:port,...)")
        from notify_core.security.tls import kafka_security_config
        from notify_core.stream.kafka import KafkaStream

        return KafkaStream(bootstrap_servers=settings.kafka_bootstrap, security_config=kafka_security_config(settings),
                           delivery_timeout=settings.kafka_delivery_timeout_s, linger_ms=settings.kafka_linger_ms)
    from notify_core.stream.local_log import LocalLog

    return LocalLog(settings.local_log_path, fsync=settings.stream_fsync, clock=settings.clock())
