"""Personal fields sealed at rest: AES-256-GCM under per-purpose data keys wrapped by a master key.

Envelope encryption, the scheme KMS is built for:

* a **master key** never touches data. Locally it is a 0600 file (``<data_dir>/secrets/master.keys.json``,
  created on first use, several versions so rotation can re-wrap); in aws it is a KMS key
  (:class:`KmsMasterKey`, boto3 imported only when built), or a file every instance mounts;
* a **data key** (256 random bits) per purpose (``store.users``, ``outbox``...) encrypts field values; it
  is stored only *wrapped* by the master key, in the ``data.keys`` key document (a 0600 file under
  ``<data_dir>/secrets`` on one box, an item of the Store in aws, so every instance opens what another
  sealed: :mod:`.key_documents`), with the purpose as associated data / KMS encryption context, so a key
  wrapped for one purpose does not open another's;
* a **sealed value** is the text ``enc:v1:<data key id>:<base64(nonce | ciphertext | tag)>``; the
  associated data is ``<purpose>|<field>``, so a value moved to another field or table fails to open.

Rotation (``notify secrets rotate``) makes a new master version and re-wraps every data key under it
(data is not rewritten; the old master version is dropped once nothing references it); ``new_data_keys``
also starts new data keys for new writes (old ones keep opening old values).

Values that are not sealed pass through :meth:`FieldSealer.open` unchanged, so a data directory written
before encryption keeps working and is sealed row by row as rows are rewritten.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notify_core.errors import ConfigurationError, NotifyError
from notify_core.security.files import require_private, write_private
from notify_core.security.key_documents import DATA_KEYS, FileKeyDocuments, KeyDocuments

SEALED_PREFIX = "enc:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
MASTER_FILE = "master.keys.json"

# Which fields are personal, per table / purpose: the one list sealing and erasure both read.
PERSONAL_FIELDS: Mapping[str, tuple[str, ...]] = {
    "users": ("email", "phone", "first_name", "last_name", "full_name", "address", "about", "notes"),
    "outbox": ("body",),
}


class DecryptionError(NotifyError):
    """A sealed value does not open (wrong key, tampered, or moved to another field)."""

    http_status = 500


class MasterKey(Protocol):
    """Wraps and unwraps data keys; ``context`` binds a wrapped key to its purpose."""

    def wrap(self, data_key: bytes, *, context: str) -> dict[str, str]: ...

    def unwrap(self, wrapped: Mapping[str, str], *, context: str) -> bytes: ...

    def rotate(self) -> str:
        """Start a new master version for future wraps; returns its id."""
        ...

    def retire_unused(self, in_use: Iterable[str]) -> list[str]:
        """Forget master versions no wrapped key references any more; returns their ids."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LocalMasterKey:
    """Master key versions in a 0600 JSON file; AES-256-GCM key wrap with the purpose as associated data."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if not self.path.exists():
            self._create()
        require_private(self.path, what="master key file")

    def _load(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.path.read_bytes())
            return doc
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"unreadable master key file {self.path}: {type(exc).__name__}") from None

    def _save(self, doc: Mapping[str, Any]) -> None:
        write_private(self.path, json.dumps(doc, indent=1).encode())

    def _create(self) -> None:
        """The first master version, linked into place only if no other process or thread made one first:
        two starting at once on a fresh folder must not each keep (and wrap with) a master the other lost."""
        version = secrets.token_hex(4)
        doc = {"active": version, "keys": {version: _b64(secrets.token_bytes(KEY_BYTES))}}
        tmp = write_private(self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.new"),
                            json.dumps(doc, indent=1).encode())
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    @property
    def active_version(self) -> str:
        return str(self._load()["active"])

    def wrap(self, data_key: bytes, *, context: str) -> dict[str, str]:
        doc = self._load()
        version = str(doc["active"])
        nonce = secrets.token_bytes(NONCE_BYTES)
        blob = AESGCM(base64.b64decode(doc["keys"][version])).encrypt(nonce, data_key, context.encode())
        return {"master": version, "blob": _b64(nonce + blob)}

    def unwrap(self, wrapped: Mapping[str, str], *, context: str) -> bytes:
        keys = self._load()["keys"]
        version = wrapped.get("master", "")
        if version not in keys:
            raise DecryptionError(f"master key version {version!r} is gone")
        raw = base64.b64decode(wrapped["blob"])
        try:
            return AESGCM(base64.b64decode(keys[version])).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                                                   context.encode())
        except InvalidTag:
            raise DecryptionError("a data key does not unwrap under its master key") from None

    def rotate(self) -> str:
        with self._lock:
            doc = self._load()
            version = secrets.token_hex(4)
            doc["keys"][version] = _b64(secrets.token_bytes(KEY_BYTES))
            doc["active"] = version
            self._save(doc)
            return version

    def retire_unused(self, in_use: Iterable[str]) -> list[str]:
        with self._lock:
            doc = self._load()
            keep = set(in_use) | {str(doc["active"])}
            gone = [v for v in doc["keys"] if v not in keep]
            for version in gone:
                del doc["keys"][version]
            self._save(doc)
            return gone


def secret_string(secret_id: str, *, region: str, client: Any = None) -> str:
    """A Secrets Manager secret's string (in aws the API-key pepper, read at a cold start rather than put in
    a function's environment)."""
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=region)
    try:
        return str(client.get_secret_value(SecretId=secret_id)["SecretString"])
    except Exception as exc:  # botocore's errors: the secret missing, access refused, the service unreachable
        raise ConfigurationError(f"cannot read the secret {secret_id}: {type(exc).__name__}") from exc


class KmsMasterKey:
    """AWS KMS as the master key (the aws environment): ``Encrypt``/``Decrypt`` with the purpose as the
    encryption context. Rotation of the KMS key material itself is KMS's automatic rotation; ``rotate``
    here only re-wraps (KMS decrypts old wraps with old material transparently)."""

    def __init__(self, key_id: str, *, region: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("kms", region_name=region)
        self._client = client
        self.key_id = key_id

    def wrap(self, data_key: bytes, *, context: str) -> dict[str, str]:
        out = self._client.encrypt(KeyId=self.key_id, Plaintext=data_key, EncryptionContext={"purpose": context})
        return {"master": f"kms:{self.key_id}", "blob": _b64(out["CiphertextBlob"])}

    def unwrap(self, wrapped: Mapping[str, str], *, context: str) -> bytes:
        try:
            out = self._client.decrypt(CiphertextBlob=base64.b64decode(wrapped["blob"]),
                                       EncryptionContext={"purpose": context})
        except Exception as exc:  # botocore's ClientError (InvalidCiphertextException...) without importing it
            raise DecryptionError(f"KMS could not unwrap a data key: {type(exc).__name__}") from None
        plaintext: bytes = out["Plaintext"]
        return plaintext

    def rotate(self) -> str:
        return f"kms:{self.key_id}"

    def retire_unused(self, in_use: Iterable[str]) -> list[str]:
        return []


@dataclass(frozen=True, slots=True)
class RotationReport:
    master_version: str
    rewrapped: int
    new_data_keys: list[str]
    retired_master_versions: list[str]


class FieldSealer:
    """Seals and opens personal field values with per-purpose data keys (see the module docstring).

    Thread-safe; unwrapped data keys are cached in memory for the process's life (one unwrap per key,
    which is what keeps the cost per value to one AES-GCM call)."""

    def __init__(self, documents: KeyDocuments, master: MasterKey) -> None:
        self.documents = documents
        self.master = master
        self._lock = threading.Lock()
        self._aead: dict[str, AESGCM] = {}
        self._active: dict[str, str] = {}

    # data keys ------------------------------------------------------------------------------------
    def _load(self) -> tuple[dict[str, Any], str | None]:
        """The wrapped data keys and the tag a compare-and-set names (None: no key minted yet)."""
        found = self.documents.read(DATA_KEYS)
        return ({"purposes": {}}, None) if found is None else (found.body, found.tag)

    def _new_data_key(self, doc: dict[str, Any], purpose: str) -> str:
        kid = f"{purpose}.{secrets.token_hex(4)}"
        entry = doc["purposes"].setdefault(purpose, {"active": kid, "keys": {}})
        entry["keys"][kid] = self.master.wrap(secrets.token_bytes(KEY_BYTES), context=purpose)
        entry["active"] = kid
        return kid

    def _key(self, kid: str) -> AESGCM:
        aead = self._aead.get(kid)
        if aead is not None:
            return aead
        with self._lock:
            purpose = kid.rsplit(".", 1)[0]
            entry = self._load()[0]["purposes"].get(purpose, {})
            wrapped = entry.get("keys", {}).get(kid)
            if wrapped is None:
                raise DecryptionError(f"unknown data key {kid!r}")
            aead = self._aead[kid] = AESGCM(self.master.unwrap(wrapped, context=purpose))
            return aead

    def _active_kid(self, purpose: str) -> str:
        kid = self._active.get(purpose)
        if kid is not None:
            return kid
        with self._lock:
            while True:  # another instance minting this purpose's first key at once: use the winner's
                doc, tag = self._load()
                entry = doc["purposes"].get(purpose)
                if entry is not None:
                    kid = str(entry["active"])
                    break
                kid = self._new_data_key(doc, purpose)
                if self.documents.save(DATA_KEYS, doc, replaces=tag):
                    break
            self._active[purpose] = kid
            return kid

    # values ---------------------------------------------------------------------------------------
    def seal(self, value: str, *, purpose: str, field: str) -> str:
        if value.startswith(SEALED_PREFIX):
            return value
        kid = self._active.get(purpose) or self._active_kid(purpose)
        aead = self._aead.get(kid) or self._key(kid)
        nonce = os.urandom(NONCE_BYTES)  # 96 random bits per value: GCM's nonce, never reused in practice
        blob = aead.encrypt(nonce, value.encode(), f"{purpose}|{field}".encode())
        return f"{SEALED_PREFIX}{kid}:{binascii.b2a_base64(nonce + blob, newline=False).decode()}"

    def open(self, value: str, *, purpose: str, field: str) -> str:
        if not value.startswith(SEALED_PREFIX):
            return value
        try:
            kid, blob = value[len(SEALED_PREFIX):].split(":", 1)
            raw = base64.b64decode(blob)
            return self._key(kid).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], f"{purpose}|{field}".encode()).decode()
        except (ValueError, InvalidTag):
            raise DecryptionError(f"a sealed {purpose}.{field} does not open") from None

    def seal_row(self, purpose: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` with its personal fields (:data:`PERSONAL_FIELDS`) sealed; other fields untouched."""
        out = dict(row)
        for name in PERSONAL_FIELDS.get(purpose, ()):
            value = out.get(name)
            if isinstance(value, str) and value:
                out[name] = self.seal(value, purpose=purpose, field=name)
        return out

    def open_row(self, purpose: str, row: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(row)
        for name in PERSONAL_FIELDS.get(purpose, ()):
            value = out.get(name)
            if isinstance(value, str) and value.startswith(SEALED_PREFIX):
                out[name] = self.open(value, purpose=purpose, field=name)
        return out

    # rotation -------------------------------------------------------------------------------------
    def rotate(self, *, new_data_keys: bool = False) -> RotationReport:
        """New master version, every data key re-wrapped under it, unused master versions retired."""
        with self._lock:
            version = self.master.rotate()
            while True:  # a data key minted meanwhile by another instance: re-wrap that one too
                doc, tag = self._load()
                rewrapped = 0
                for purpose, entry in doc["purposes"].items():
                    for kid, wrapped in list(entry["keys"].items()):
                        plain = self.master.unwrap(wrapped, context=purpose)
                        entry["keys"][kid] = self.master.wrap(plain, context=purpose)
                        rewrapped += 1
                created = [self._new_data_key(doc, p) for p in list(doc["purposes"])] if new_data_keys else []
                if self.documents.save(DATA_KEYS, doc, replaces=tag):
                    break
            self._active.clear()
            in_use = {w["master"] for e in doc["purposes"].values() for w in e["keys"].values()}
            retired = self.master.retire_unused(in_use)
            return RotationReport(version, rewrapped, created, retired)


def build_sealer(secrets_dir: Path, *, kms_key_id: str | None = None, region: str = "eu-west-1",
                 kms_client: Any = None) -> FieldSealer:
    """A sealer whose keys are files under ``secrets_dir``: KMS as the master when a key id is given, the
    local master key file beside them otherwise. A deployment builds its sealer from its settings instead
    (:func:`notify_core.security.vault.build_vault`), which puts the keys where every instance reads them."""
    master: MasterKey = (KmsMasterKey(kms_key_id, region=region, client=kms_client) if kms_key_id
                         else LocalMasterKey(Path(secrets_dir) / MASTER_FILE))
    return FieldSealer(FileKeyDocuments(secrets_dir), master)
