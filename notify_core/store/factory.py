"""Build the Store for an environment: the one place that maps ``env`` to an adapter."""

from __future__ import annotations

from notify_core.settings import NotifySettings
from notify_core.store.port import Store


def build_adapter(settings: NotifySettings) -> Store:
    """The bare adapter: SQLite under the data directory for ``local``; DynamoDB (optionally DynamoDB Local)
    for ``aws``. Nothing sealed: :func:`build_store` is what the application uses."""
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


def build_store(settings: NotifySettings) -> Store:
    """The Store of a deployment (:func:`build_adapter`), its personal fields sealed at rest
    (:class:`~notify_core.store.sealed.SealedStore`) with the deployment's keys
    (:func:`notify_core.security.vault.build_vault`) unless ``NOTIFY_ENCRYPT_PERSONAL_FIELDS=false`` says
    otherwise."""
    store = build_adapter(settings)
    if not settings.encrypt_personal_fields:
        return store
    from notify_core.security.vault import build_vault
    from notify_core.store.sealed import SealedStore

    try:
        sealer = build_vault(settings, store=store).sealer()
    except BaseException:
        store.close()
        raise
    return SealedStore(store, sealer)
