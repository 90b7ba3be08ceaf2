"""Environment writes that cannot crash a process running under libfaketime 0.9.10.

libfaketime intercepts ``pthread_cond_timedwait`` and, on every call, reads ``getenv
("FAKETIME_FORCE_MONOTONIC_FIX")`` (``needs_forced_monotonic_fix``, seen in gdb). CPython waits for the GIL in
``pthread_cond_timedwait`` without holding it, so a thread waiting for the GIL scans the C ``environ`` while
the thread that holds it may be writing ``os.environ``. glibc's ``setenv`` of a new name ``realloc``\\ s that
array, which can move it and free the old one under the scan: SIGSEGV. pytest itself adds
``PYTEST_CURRENT_TEST`` at every test, and tests ``monkeypatch.setenv``. That is how ``make test-timeshift``
died 21 tests in ("Caught Segmentation fault", CI of c98e405); ``tests/unit/test_timeshift_environ.py``
reproduces it with four threads, one of them writing the environment (SIGSEGV within 0.1 s, 17 tries of 18).
libfaketime's thread-safe build (``faketime -m``) crashes the same way, and ran 17 of these tests 1.8x slower.

The fix is in how the interpreter writes the environment, as ``sitecustomize`` does for ``time.sleep``: under
libfaketime ``os.putenv`` and ``os.unsetenv`` publish a new ``environ`` array and never free one. A reader
that loaded the old pointer finishes its scan over memory that stays valid; the swap is one aligned pointer
store. Each write copies the array (~100 pointers) and keeps the old one: a few MB over a whole run.
C code calling ``setenv`` itself still goes through glibc; none in the suite's processes was found to.
"""

from __future__ import annotations

import ctypes
import os
import threading

_libc = ctypes.CDLL(None)
# The ``environ`` every getenv reads (the executable's copy where it has one, as the dynamic linker binds it).
_environ = ctypes.c_void_p.in_dll(_libc, "environ")
_published: list[ctypes.Array[ctypes.c_void_p] | ctypes.Array[ctypes.c_char]] = []  # never freed, by design
_lock = threading.Lock()  # the GIL does not serialise writers: ctypes releases it around each foreign call


def _entries() -> list[int]:
    """The addresses of the ``NAME=value`` strings of the current C environment, in order."""
    if not _environ.value:
        return []
    array = ctypes.cast(_environ.value, ctypes.POINTER(ctypes.c_void_p))
    entries: list[int] = []
    while (entry := array[len(entries)]) is not None:
        entries.append(entry)
    return entries


def _without(name: bytes) -> list[int]:
    prefix = name + b"="
    return [e for e in _entries() if ctypes.string_at(e, len(prefix)) != prefix]


def _publish(entries: list[int]) -> None:
    array = (ctypes.c_void_p * (len(entries) + 1))(*entries, None)
    _published.append(array)
    _environ.value = ctypes.addressof(array)


def _name(key: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> bytes:
    name = os.fsencode(key)
    if not name or b"=" in name or b"\0" in name:  # what os.putenv refuses, refused the same way
        raise ValueError(f"illegal environment variable name: {name!r}")
    return name


def putenv(key: str | bytes | os.PathLike[str] | os.PathLike[bytes],
           value: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
    """``os.putenv`` that publishes a new array with ``key`` set instead of letting glibc move the live one."""
    name, data = _name(key), os.fsencode(value)
    if b"\0" in data:
        raise ValueError("embedded null byte")
    entry = ctypes.create_string_buffer(name + b"=" + data)
    with _lock:
        _published.append(entry)
        _publish([*_without(name), ctypes.addressof(entry)])


def unsetenv(key: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
    """``os.unsetenv`` that publishes a new array without ``key``."""
    name = _name(key)
    with _lock:
        _publish(_without(name))


def install() -> None:
    """Route ``os.environ``'s writes (it calls the module's ``putenv``/``unsetenv``) through the functions above."""
    os.putenv = putenv
    os.unsetenv = unsetenv
