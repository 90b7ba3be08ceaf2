"""One resource per thread, made on first use and closed together: the pool behind the SQLite Store,
the embedded log and the webhook channel.

Why per thread: a sqlite3 connection or an http.client connection must not be used by two threads at
once, while each sending / consuming thread wants to keep its own open (a new SQLite connection costs
its PRAGMAs, a new HTTP connection its handshake). ``close_all`` closes every thread's resource from
whichever thread shuts the owner down; a thread that uses the pool afterwards gets a new one.

A thread that ends takes its resource with it: the resource is closed when the thread's locals go (a
finalizer on the thread's slot), and the pool keeps no strong reference to it. Why: the local gateway runs
handlers on anyio's worker threads, which end after 10 s idle and are made again on the next burst; the
pool used to keep every ended thread's connection open in its list for ``close_all``, so ``notify serve``
leaked two SQLite descriptors per ended thread and file (Store and log), burst after burst, until the
process ran out of descriptors (tests/api/test_gateway_connections.py).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Slot(Generic[T]):
    """A thread's resource, held only by that thread's locals: when the thread ends (or the pool drops its
    locals in ``close_all``) the slot is freed and its finalizer closes the resource (``closer``: that
    finalizer, which holds the resource and only a weak reference to the slot, for an explicit close)."""

    __slots__ = ("resource", "closer", "__weakref__")

    def __init__(self, resource: T, close: Callable[[T], None]) -> None:
        self.resource = resource
        self.closer = weakref.finalize(self, close, resource)
        self.closer.atexit = False  # at exit the process's descriptors go anyway; no closing in a dying VM


class PerThread(Generic[T]):
    """``get()`` returns this thread's resource, making it with ``factory`` the first time."""

    def __init__(self, factory: Callable[[], T], *, close: Callable[[T], None]) -> None:
        self._factory = factory
        self._close = close
        self._local = threading.local()
        self._lock = threading.Lock()
        # One finalizer per live resource: close_all() runs them; a thread that ends runs its own. A
        # finalizer holds the resource (not the slot, nor this pool), so a live thread's resource stays open.
        self._made: list[weakref.finalize[[T], _Slot[T]]] = []

    def current(self) -> T | None:
        """This thread's resource if it has one (nothing is made)."""
        slot: _Slot[T] | None = getattr(self._local, "slot", None)
        return None if slot is None else slot.resource

    def get(self) -> T:
        slot: _Slot[T] | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = _Slot(self._factory(), self._close)
            self._local.slot = slot
            with self._lock:
                self._made = [f for f in self._made if f.alive]  # forget the resources of ended threads
                self._made.append(slot.closer)
        return slot.resource

    def renew(self) -> T:
        """Close this thread's resource (a connection the peer dropped) and make a new one."""
        slot: _Slot[T] | None = getattr(self._local, "slot", None)
        if slot is not None:
            self._local.slot = None
            slot.closer()  # closed now, once (the finalizer is then dead, and close_all skips it)
        return self.get()

    def close_all(self) -> None:
        with self._lock:
            made, self._made = self._made, []
            self._local = threading.local()
        for finalizer in made:
            finalizer()  # closes the resource once (a no-op for one its thread already closed)
