"""The bare Store adapter of an environment: the one place that maps ``env`` to an adapter.

Apart from :mod:`notify_core.store.factory` (which seals personal fields with the deployment's keys) so that
code needing only tables without personal fields, such as the API-key check, reaches no key: in aws the
functions' IAM roles are derived from what their code imports (``notify_cli/deploy_access.py``), and the
authorizer and the event capture then get neither the key documents nor direct use of the KMS key.
"""

from __future__ import annotations

from notify_core.settings import NotifySettings
from notify_core.store.port import Store


def build_adapter(settings: NotifySettings) -> Store:
    """SQLite under the data directory for ``local``; DynamoDB (optionally DynamoDB Local) for ``aws``.
    Nothing sealed: :func:`notify_core.store.factory.build_store` is what reads or writes personal fields."""
    if settings.env == "aws":
        from notify_core.store.dynamodb import DynamoStore  # boto3 only where it is used

        return DynamoStore(
            region=settings.aws_region,
            endpoint_url=settings.dynamodb_endpoint_url,
            table_prefix=settings.table_prefix,
            clock=settings.clock(),
        )
    from notify_core.store.sqlite import SqliteStore

    return SqliteStore(settings.sqlite_path, clock=settings.clock(), fsync=settings.store_fsync)
