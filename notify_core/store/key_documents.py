"""Key documents in the Store: how every Lambda function and pod of one deployment shares its keys.

The :class:`notify_core.security.key_documents.KeyDocuments` port on a Store table
(:data:`~notify_core.store.tables.KEY_DOCUMENTS`; DynamoDB in aws). A document is one item: its JSON
``body`` and a ``revision`` that every save raises by one under a condition on the revision it read, so
two instances minting the same key at once cannot both win. The bodies hold only wrapped secrets
(:mod:`notify_core.security.vault` wraps them with the master key before they get here); the table is
encrypted at rest with the stack's key as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from notify_core.errors import ConditionFailedError, ConfigurationError
from notify_core.security.key_documents import KeyDocument
from notify_core.store import tables
from notify_core.store.port import Condition, Store


class StoreKeyDocuments:
    """Key documents as items of the ``key_documents`` table (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._table = store.table(tables.KEY_DOCUMENTS)

    def read(self, name: str) -> KeyDocument | None:
        item = self._table.get(name, tables.KEY_DOCUMENT_SK, consistent=True)
        if item is None:
            return None
        try:
            body = json.loads(str(item["body"]))
            revision = int(item["revision"])
        except (KeyError, ValueError, TypeError):
            raise ConfigurationError(f"unreadable key document {name!r} in the Store") from None
        if not isinstance(body, dict):
            raise ConfigurationError(f"unreadable key document {name!r} in the Store")
        return KeyDocument(body, str(revision))

    def save(self, name: str, body: Mapping[str, Any], *, replaces: str | None) -> bool:
        revision = 1 if replaces is None else int(replaces) + 1
        condition = Condition.absent() if replaces is None else Condition.matches(revision=int(replaces))
        item = {"pk": name, "sk": tables.KEY_DOCUMENT_SK, "body": json.dumps(body, sort_keys=True),
                "revision": revision}
        try:
            self._table.put(item, condition=condition)
        except ConditionFailedError:
            return False
        return True
