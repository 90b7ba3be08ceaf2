"""Build the Store for an environment: the one place that maps ``env`` to an adapter."""

from __future__ import annotations

from notify_core.settings import NotifySettings
from notify_core.store.port import Store


def build_store(settings: NotifySettings) -> Store:
    """SQLite under the data directory for ``local``; DynamoDB (optionally DynamoDB Local) for ``aws``."""
    if settings.env == "aws":
        from notify_core.store.dynamodb import DynamoStore  # boto3 only where it is used

        return DynamoStore(
            region=settings.aws_region,
            endpoint_url=settings.dynamodb_endpoint_url,
            table_prefix=settings.table_prefix,
            clock=settings.clock(),
        )
    from notify_core.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, clock=settings.clock())
