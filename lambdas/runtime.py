"""What every handler in a process shares, built once at cold start: settings, Store, index holder, keys.

On Lambda each function reads its settings from its environment at cold start (that is how Lambda is
configured). Locally, ``notify serve`` builds the settings once and hands them over with
:func:`configure`: no handler reads settings the CLI wrote into ``os.environ``. Handlers never build
their state from another handler's module; they all ask this one.

Tests install parts with :func:`configure` (``store=``, ``holder=``, ``keyring=``) or :func:`use_auth`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lambdas.coldstart import ColdStart
from notify_core.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from notify_core.recommend.serving import IndexHolder
    from notify_core.security.keycheck import KeyCheck
    from notify_core.settings import NotifySettings
    from notify_core.store.port import Store


@dataclass
class Runtime:
    settings: NotifySettings
    clock: Clock = SYSTEM_CLOCK
    _store: Any = None
    _adapter: Any = None
    _holder: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def adapter(self) -> Store:
        """The bare Store adapter, for tables without personal fields (the API-key check). It is built
        from :mod:`notify_core.store.adapter`, which reaches no key: the authorizer and the event capture
        read ``api_keys`` alone, so their derived roles get no key documents and no direct use of the KMS
        key. A Store installed with :func:`configure` is used as it is."""
        if self._adapter is None:
            with self._lock:
                if self._adapter is None:
                    if self._store is not None:
                        self._adapter = self._store
                    else:
                        from notify_core.store.adapter import build_adapter

                        self._adapter = build_adapter(self.settings)
        adapter: Store = self._adapter
        return adapter

    def store(self, seal: Callable[[NotifySettings, Store], Store]) -> Store:
        """The Store with personal fields sealed: :meth:`adapter` through ``seal``
        (:func:`notify_core.store.factory.seal_store`). The sealer comes from the handler module, as the
        index builder does for :meth:`holder`, so only the functions that open personal fields or sign
        links reach the keys."""
        if self._store is None:
            adapter = self.adapter()
            with self._lock:
                if self._store is None:
                    self._store = seal(self.settings, adapter)
        store: Store = self._store
        return store

    def holder(self, build: Callable[[NotifySettings], IndexHolder]) -> IndexHolder:
        """The live index, built by ``build`` on first use and shared by every handler of the process
        (recommendations and campaign upserts: an upsert is live at once). The builder comes from the
        handler module (:func:`lambdas.index.build_holder`), so the functions that never serve the index
        do not reach the artefact store (their IAM roles are derived from what they import)."""
        if self._holder is None:
            with self._lock:
                if self._holder is None:
                    self._holder = build(self.settings)
        holder: IndexHolder = self._holder
        return holder


def _build() -> Runtime:
    from notify_core.settings import load_settings

    settings = load_settings()
    return Runtime(settings=settings, clock=settings.clock())


@dataclass(frozen=True, slots=True)
class Auth:
    """The key check of this process; ``keyring`` None only under the explicit ``--insecure-no-auth``."""

    keyring: KeyCheck | None


def build_key_check(settings: NotifySettings, store: Store, *, clock: Clock) -> KeyCheck:
    """The read-only key check over the Store, peppered from settings (aws: a secret) or the local 0600
    pepper file. Handlers never create or change keys (``notify keys`` does, with the audited KeyRing)."""
    from notify_core.security.keycheck import KeyCheck, resolve_pepper

    pepper = resolve_pepper(configured=settings.api_key_pepper, env=settings.env, secrets_dir=settings.secrets_dir,
                            secret=settings.api_key_pepper_secret, region=settings.aws_region)
    return KeyCheck(store, pepper=pepper, clock=clock)


def _build_auth() -> Auth:
    rt = get()
    return Auth(build_key_check(rt.settings, rt.adapter(), clock=rt.clock))


_runtime = ColdStart(_build)
_auth = ColdStart(_build_auth)
get = _runtime.get
auth = _auth.get


def configure(settings: NotifySettings | None, *, store: Store | None = None, holder: IndexHolder | None = None,
              clock: Clock | None = None) -> None:
    """Install this process's settings (and optionally a Store / index holder / clock; the clock defaults to
    the settings' own, ``NOTIFY_CLOCK_START`` included); None: from the environment."""
    _runtime.use(None if settings is None else Runtime(settings=settings, clock=clock or settings.clock(),
                                                       _store=store, _holder=holder))


def use_auth(keyring: KeyCheck | None, *, insecure: bool = False) -> None:
    """Install the key check (tests, ``notify serve``). ``insecure=True`` with no keyring turns checks off."""
    if keyring is None and not insecure:
        _auth.use(None)  # build from settings on next use
    else:
        _auth.use(Auth(keyring))
