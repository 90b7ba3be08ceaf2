"""Where key documents live: the wrapped data keys and the HMAC signing rings, one JSON document each.

Every process that seals a field, signs a tracking link or a webhook, or verifies one must read the same
keys. On one box that is a folder of 0600 files (:class:`FileKeyDocuments`, the default, under
``<data_dir>/secrets``). In aws each Lambda function and pod has its own disk (``/tmp/notify`` in Lambda),
so keys kept there would be minted once per instance: a user sealed by one function would not open in
another, and a tracking link signed by the delivery worker would not verify in the tracking function.
There the documents live in the Store (:class:`notify_core.store.key_documents.StoreKeyDocuments`), every
secret in them wrapped by the shared master key (KMS).

Writes are compare-and-set on an opaque ``tag`` (a content digest for files, a revision for the Store):
two instances minting the first key of a purpose at once both try to create the document, one wins, and
the other reads the winner's instead of keeping a key nobody else has.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from notify_core.errors import ConfigurationError
from notify_core.security.files import FILE_MODE, private_dir, require_private, write_private

DATA_KEYS = "data.keys"


def ring_document(purpose: str) -> str:
    """The document of one signing ring (``tracking.keys``, ``webhook.keys``)."""
    return f"{purpose}.keys"


@dataclass(frozen=True, slots=True)
class KeyDocument:
    body: dict[str, Any]
    tag: str  # what a compare-and-set names: the version this body was read at


class KeyDocuments(Protocol):
    """A small named-document area with compare-and-set writes (see the module docstring)."""

    def read(self, name: str) -> KeyDocument | None:
        """The document as stored now (strongly consistent), or None when it was never written."""
        ...

    def save(self, name: str, body: Mapping[str, Any], *, replaces: str | None) -> bool:
        """Write ``body`` if the document is still at tag ``replaces`` (None: only if it does not exist).
        False when another writer got there first: read it again and decide anew."""
        ...


class FileKeyDocuments:
    """Documents as 0600 files ``<secrets_dir>/<name>.json`` (the layout Notify has always used), written
    atomically under an ``flock`` so the compare-and-set holds between processes on one box."""

    def __init__(self, secrets_dir: Path) -> None:
        self.dir = Path(secrets_dir)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _read_raw(self, name: str) -> bytes | None:
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        require_private(path, what="key file")
        return raw

    def read(self, name: str) -> KeyDocument | None:
        raw = self._read_raw(name)
        if raw is None:
            return None
        try:
            body = json.loads(raw)
        except ValueError:
            raise ConfigurationError(f"unreadable key file {self.path(name)}") from None
        if not isinstance(body, dict):
            raise ConfigurationError(f"unreadable key file {self.path(name)}")
        return KeyDocument(body, _digest(raw))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.dir)
        fd = os.open(self.dir / ".documents.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def save(self, name: str, body: Mapping[str, Any], *, replaces: str | None) -> bool:
        with self._locked():
            raw = self._read_raw(name)
            if (None if raw is None else _digest(raw)) != replaces:
                return False
            write_private(self.path(name), json.dumps(body, indent=1).encode())
            return True


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
