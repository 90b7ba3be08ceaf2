"""The keys a restored data directory needs, in the backup, sealed by the master key.

Personal fields in the Store are sealed by data keys, API keys are checked against hashes keyed by the pepper,
and tracking links and webhooks are signed by rings: all of them live in ``<data_dir>/secrets``, which the
backup left out. Restored after the data directory was lost (the disaster a backup is for), the Store came
back with every sealed field unreadable (``DecryptionError: unknown data key``), every API key refused and
every tracking link already sent invalid.

So each backup tick also writes the key files of ``secrets/`` (the data keys, wrapped by the master already;
the pepper; the signing rings) to the target as one bundle sealed by the master key (AES-256-GCM under a bundle
key that the master wraps, with :data:`CONTEXT` as associated data): the target never holds a secret that
opens without the master. The master key itself and the first admin key are never in it. Keep a copy of the
master key off the machine (or use ``NOTIFY_MASTER_KEY_FILE`` on another disk, or KMS): a restore opens the
newest bundle its master can unwrap, and one the master cannot open is refused before anything is replaced.

One bundle per master version (``keys/<version>.json``): after ``notify secrets rotate`` a copy of the older
master still opens the bundle written under it. Keys only accumulate (data keys and ring keys are kept while
data or links may use them), so the newest bundle serves a restore ``--at`` an earlier time too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notify_core.backup.target import BlobStore
from notify_core.clock import Clock
from notify_core.errors import ConditionFailedError, NotifyError
from notify_core.security.crypto import MASTER_FILE, DecryptionError, MasterKey
from notify_core.security.files import write_private

log = logging.getLogger(__name__)

PREFIX = "keys/"
CONTEXT = "notify-backup-keys"
LEFT_OUT = frozenset({MASTER_FILE, "admin.key"})  # the master opens the bundle; the admin token is a credential
_NONCE = 12
_SAFE = re.compile(r"[^A-Za-z0-9._-]")  # a KMS master's version is its key ARN


class KeysNotOpenedError(ConditionFailedError):
    """The backup holds keys this machine's master key cannot open (or there is no master key here)."""


def key_files(secrets_dir: Path) -> dict[str, bytes]:
    """The files of ``secrets_dir`` a restore needs: every regular file but the master key, the admin token and
    dotfiles (locks, temporaries)."""
    if not secrets_dir.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(secrets_dir.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name not in LEFT_OUT}


def seal(files: Mapping[str, bytes], master: MasterKey, *, written_at: float) -> tuple[str, bytes]:
    """(the master version that wraps it, the bundle's bytes)."""
    key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(_NONCE)
    plain = json.dumps({name: base64.b64encode(data).decode() for name, data in files.items()}).encode()
    wrapped = master.wrap(key, context=CONTEXT)
    body = {"format": 1, "written_at": written_at, "wrapped_key": wrapped,
            "sealed": base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, CONTEXT.encode())).decode()}
    return wrapped["master"], json.dumps(body).encode()


def unseal(raw: bytes, master: MasterKey) -> tuple[float, dict[str, bytes]]:
    """(when it was written, the files); :class:`DecryptionError` when ``master`` cannot open it."""
    try:
        body = json.loads(raw)
        sealed = base64.b64decode(body["sealed"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecryptionError(f"not a key bundle: {type(exc).__name__}") from None
    key = master.unwrap(body["wrapped_key"], context=CONTEXT)
    try:
        plain = AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], CONTEXT.encode())
    except InvalidTag:
        raise DecryptionError("the key bundle does not open under its key") from None
    return float(body["written_at"]), {name: base64.b64decode(data) for name, data in json.loads(plain).items()}


@dataclass
class KeysRestore:
    """What :meth:`KeyBackup.fetch` found: the files to install (empty: the backup holds none)."""

    files: dict[str, bytes]
    written_at: float | None = None


class KeyBackup:
    """The sealed key bundles of one target (see the module doc)."""

    def __init__(self, blobs: BlobStore, *, secrets_dir: Path, master: Callable[[], MasterKey | None],
                 clock: Clock) -> None:
        self._blobs = blobs
        self._secrets = secrets_dir
        self._master = master
        self._clock = clock
        self._written: str | None = None  # the digest of what was last written (a tick writes only a change)

    def snapshot(self) -> bool:
        """Write the bundle when the key files or the master changed since the last one; True when written."""
        files = key_files(self._secrets)
        master = self._master() if files else None
        if master is None:  # nothing sealed yet, so nothing to keep
            return False
        # a rotation of the master re-wraps the data keys, so their file (and this digest) changes with it
        digest = hashlib.sha256(json.dumps({n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
                                           sort_keys=True).encode()).hexdigest()
        if digest == self._written:
            return False
        version, raw = seal(files, master, written_at=self._clock.now())
        self._blobs.put_bytes(f"{PREFIX}{_SAFE.sub('_', version)}.json", raw)
        self._written = digest
        log.info("keys backed up", extra={"files": len(files), "master_version": version})
        return True

    def fetch(self, *, without_keys: bool) -> KeysRestore:
        """The newest bundle this machine's master opens, read before anything is replaced. Refused
        (:class:`KeysNotOpenedError`) when the backup holds bundles and none opens, unless ``without_keys``."""
        names = sorted(name for name in self._blobs.list(PREFIX) if name.endswith(".json"))
        if not names:
            log.warning("the backup holds no keys (written before they were backed up): sealed personal fields "
                        "open only with the keys of this data directory")
            return KeysRestore(files={})
        master = self._master()
        best: tuple[float, dict[str, bytes]] | None = None
        for name in names:
            raw = self._blobs.get_bytes(name)
            if raw is None or master is None:
                continue
            try:
                opened = unseal(raw, master)
            except NotifyError as exc:  # DecryptionError, or the master's own refusal (KMS)
                log.info("a key bundle this master does not open", extra={"bundle": name, "error": str(exc)})
                continue
            if best is None or opened[0] > best[0]:
                best = opened
        if best is not None:
            return KeysRestore(files=best[1], written_at=best[0])
        versions = ", ".join(n.removeprefix(PREFIX).removesuffix(".json") for n in names)
        if without_keys:
            log.warning("restoring without the backup's keys: its sealed personal fields will not open, its API "
                        "keys will not verify", extra={"master_versions": versions})
            return KeysRestore(files={})
        where = "no master key here" if master is None else "this master key cannot open them"
        raise KeysNotOpenedError(
            f"the backup's keys are sealed by master key version(s) {versions} and {where}: put the copy of the "
            f"master key file kept off this machine at {self._secrets / MASTER_FILE} (or set "
            "NOTIFY_MASTER_KEY_FILE / NOTIFY_KMS_KEY_ID) and restore again; --without-keys restores the data "
            "without them (sealed personal fields and API keys will not open)")

    def install(self, keys: KeysRestore) -> list[str]:
        """Write the fetched key files into ``secrets/``; a different file already there is kept beside it
        (``<name>.replaced-<time>``: keys minted after the loss may have sealed something). Returns the names."""
        stamp = datetime.fromtimestamp(self._clock.now(), UTC).strftime("%Y%m%dT%H%M%SZ")
        for name, data in keys.files.items():
            path = self._secrets / name
            if path.exists() and path.read_bytes() != data:
                os.replace(path, path.with_name(f"{name}.replaced-{stamp}"))
            write_private(path, data)
        if keys.files:
            log.info("keys restored", extra={"files": len(keys.files)})
        return sorted(keys.files)
