"""Per-process state built on first use: what a Lambda builds at cold start, never at import.

Every handler needs the same thing: settings read once, clients (Store, Stream, index holder) built
once per process on the first request, shared by the threads of the local gateway, and replaceable by
tests. ``ColdStart`` is that, once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from notify_core.security.files import use_private_umask

T = TypeVar("T")


class ColdStart(Generic[T]):
    """A value built by ``build`` on first :meth:`get` (thread-safe), or installed with :meth:`use`."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    # what the cold start creates (Store file, stream log, key files) is private
                    use_private_umask()
                    self._value = self._build()
                value = self._value
        return value

    def use(self, value: T | None) -> None:
        """Install a value (tests, the gateway); None: build from settings again on next use."""
        with self._lock:
            self._value = value
