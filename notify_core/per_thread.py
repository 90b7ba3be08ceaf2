"""One resource per thread, made on first use and closed together: the pool behind the SQLite Store,
the embedded log and the webhook channel.

Why per thread: a sqlite3 connection or an http.client connection must not be used by two threads at
once, while each sending / consuming thread wants to keep its own open (a new SQLite connection costs
its PRAGMAs, a new HTTP connection its handshake). ``close_all`` closes every thread's resource from
whichever thread shuts the owner down; a thread that uses the pool afterwards gets a new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    """``get()`` returns this thread's resource, making it with ``factory`` the first time."""

    def __init__(self, factory: Callable[[], T], *, close: Callable[[T], None]) -> None:
        self._factory = factory
        self._close = close
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[T] = []

    def current(self) -> T | None:
        """This thread's resource if it has one (nothing is made)."""
        resource: T | None = getattr(self._local, "resource", None)
        return resource

    def get(self) -> T:
        resource = self.current()
        if resource is None:
            resource = self._factory()
            self._local.resource = resource
            with self._lock:
                self._made.append(resource)
        return resource

    def renew(self) -> T:
        """Close this thread's resource (a connection the peer dropped) and make a new one."""
        old = self.current()
        if old is not None:
            self._close(old)
            with self._lock:
                self._made = [r for r in self._made if r is not old]
            self._local.resource = None
        return self.get()

    def close_all(self) -> None:
        with self._lock:
            made, self._made = self._made, []
            self._local = threading.local()
        for resource in made:
            self._close(resource)
