"""Build the Store a deployment uses: its adapter (:mod:`notify_core.store.adapter`) with personal fields
sealed at rest."""

from __future__ import annotations

import logging

from notify_core.settings import NotifySettings
from notify_core.store.adapter import build_adapter
from notify_core.store.port import Store

log = logging.getLogger(__name__)


def seal_store(settings: NotifySettings, adapter: Store) -> Store:
    """``adapter`` with its personal fields sealed (:class:`~notify_core.store.sealed.SealedStore`) by the
    deployment's keys (:func:`notify_core.security.vault.build_vault`), unless
    ``NOTIFY_ENCRYPT_PERSONAL_FIELDS=false`` says otherwise."""
    if not settings.encrypt_personal_fields:  # allowed (tests, benchmarks), never silent
        log.warning("personal fields are stored in clear: NOTIFY_ENCRYPT_PERSONAL_FIELDS=false",
                    extra={"encrypt_personal_fields": False})
        return adapter
    from notify_core.security.vault import build_vault
    from notify_core.store.sealed import SealedStore

    return SealedStore(adapter, build_vault(settings, store=adapter).sealer())


def build_store(settings: NotifySettings) -> Store:
    """The Store of a deployment: :func:`~notify_core.store.adapter.build_adapter` through :func:`seal_store`
    (the adapter is closed when sealing fails: no keys, no Store)."""
    adapter = build_adapter(settings)
    try:
        return seal_store(settings, adapter)
    except BaseException:
        adapter.close()
        raise
