"""Build the Store for an environment: the one place that maps ``env`` to an adapter."""

from __future__ import annotations

from notify_core.settings import NotifySettings
from notify_core.store.port import Store


def build_store(settings: NotifySettings) -> Store:
    """SQLite under the data directory for ``local``; DynamoDB (optionally DynamoDB Local) for ``aws``.

    Personal fields are sealed at rest (:class:`~notify_core.store.sealed.SealedStore`) unless
    ``NOTIFY_ENCRYPT_PERSONAL_FIELDS=false`` says otherwise."""
    store: Store
    if settings.env == "aws":
        from notify_core.store.dynamodb import DynamoStore  # boto3 only where it is used

        store = DynamoStore(
            region=settings.aws_region,
            endpoint_url=settings.dynamodb_endpoint_url,
            table_prefix=settings.table_prefix,
            clock=settings.clock(),
        )
    else:
        from notify_core.store.sqlite import SqliteStore

        store = SqliteStore(settings.sqlite_path, clock=settings.clock())
    if not settings.encrypt_personal_fields:
        return store
    from notify_core.security.crypto import build_sealer
    from notify_core.store.sealed import SealedStore

    return SealedStore(store, build_sealer(settings.secrets_dir, kms_key_id=settings.kms_key_id,
                                           region=settings.aws_region))
