"""A deployment's keys, chosen from its settings: where the key documents live and what wraps them.

* **local** (the default): the documents are 0600 files under ``<data_dir>/secrets`` and the master key is
  the file beside them (or ``NOTIFY_KMS_KEY_ID``). Everything that runs on the box shares the folder.
* **aws**: every Lambda function and pod has a disk of its own, so the documents live in the Store's
  ``key_documents`` table, and the secrets in them are wrapped by a master key every instance shares:
  KMS (``NOTIFY_KMS_KEY_ID``; the template passes the stack's key) or a file every instance mounts
  (``NOTIFY_MASTER_KEY_FILE``). Without either, the settings are refused: a master minted per instance
  would seal data no other instance can open.

:func:`build_vault` is the one place that decides this; the Store's sealing, the delivery worker's
tracking links and webhook signatures, the tracking and unsubscribe functions and ``notify secrets`` all
ask it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from notify_core.errors import ConfigurationError
from notify_core.security.crypto import MASTER_FILE, FieldSealer, KmsMasterKey, LocalMasterKey, MasterKey
from notify_core.security.key_documents import FileKeyDocuments, KeyDocuments
from notify_core.security.keyring import DEFAULT_OVERLAP, KeyRing, LiveRing, load_ring, rotate_ring

if TYPE_CHECKING:
    from notify_core.clock import Clock
    from notify_core.settings import NotifySettings
    from notify_core.store.port import Store


@dataclass(frozen=True, slots=True)
class KeyVault:
    """Where the key documents are and the master key that wraps them. ``wrap_rings``: the signing rings'
    secrets are stored wrapped by the master (documents outside the data directory: the Store)."""

    documents: KeyDocuments
    master: MasterKey
    wrap_rings: bool

    @property
    def _ring_master(self) -> MasterKey | None:
        return self.master if self.wrap_rings else None

    def sealer(self) -> FieldSealer:
        return FieldSealer(self.documents, self.master)

    def ring(self, purpose: str, *, clock: Clock) -> KeyRing:
        """The ring of ``purpose`` as it is now (minted on first use)."""
        return load_ring(self.documents, purpose, clock=clock, master=self._ring_master)

    def live_ring(self, purpose: str, *, clock: Clock, check_s: float = 5.0) -> LiveRing:
        """The ring of ``purpose``, following rotations made by any instance."""
        return LiveRing(self.documents, purpose, clock=clock, master=self._ring_master, check_s=check_s)

    def rotate_ring(self, purpose: str, *, clock: Clock, overlap: timedelta = DEFAULT_OVERLAP) -> KeyRing:
        return rotate_ring(self.documents, purpose, clock=clock, overlap=overlap, master=self._ring_master)


def master_key_file(settings: NotifySettings) -> Path | None:
    """Where the master key file is (None: KMS holds the master). In aws it must be named explicitly."""
    if settings.kms_key_id:
        return None
    if settings.master_key_file is not None:
        return settings.master_key_file
    if settings.env == "aws":
        raise ConfigurationError(
            "in aws every instance must share one master key: set NOTIFY_KMS_KEY_ID (the stack's DataKey; "
            "the template passes it) or NOTIFY_MASTER_KEY_FILE (a 0600 file every instance mounts)")
    return settings.secrets_dir / MASTER_FILE


def master_key(settings: NotifySettings) -> MasterKey:
    """KMS when a key id is set, else the master key file (made on a first start)."""
    path = master_key_file(settings)
    return KmsMasterKey(str(settings.kms_key_id), region=settings.aws_region) if path is None else LocalMasterKey(path)


def existing_master_key(settings: NotifySettings) -> MasterKey | None:
    """The deployment's master key when there is one now: KMS, or its file when that exists. Never mints one,
    as :func:`master_key` does on a first start: the backup's keys open only with the master that sealed them
    (:mod:`notify_core.backup.keys`), and a new one would be taken for it."""
    path = master_key_file(settings)
    return master_key(settings) if path is None or path.exists() else None


def build_vault(settings: NotifySettings, *, store: Store | None = None) -> KeyVault:
    """The vault of a deployment (see the module docstring). In aws the documents are read through
    ``store``, the unsealed adapter (built from the settings when not given)."""
    master = master_key(settings)
    if settings.env != "aws":
        return KeyVault(FileKeyDocuments(settings.secrets_dir), master, wrap_rings=False)
    from notify_core.store.key_documents import StoreKeyDocuments

    if store is None:
        from notify_core.store.adapter import build_adapter

        store = build_adapter(settings)
    return KeyVault(StoreKeyDocuments(store), master, wrap_rings=True)
