"""The Kafka adapter's message -> Record conversion, on stand-ins for confluent-kafka's messages."""

from __future__ import annotations

from typing import Any

import pytest

from notify_core.errors import BackendError
from notify_core.stream.kafka import _records
from notify_core.stream.port import Record


class _Error:
    def __init__(self, *, fatal: bool) -> None:
        self._fatal = fatal

    def fatal(self) -> bool:
        return self._fatal


class _Message:
    """What ``consumer.consume()`` returns: accessors only, a fresh headers list per call as confluent's."""

    def __init__(self, offset: int | None, headers: list[tuple[str, bytes | None]] | None, *,
                 error: _Error | None = None, value: bytes | None = b"v") -> None:
        self._offset, self._headers, self._error, self._value = offset, headers, error, value

    def error(self) -> _Error | None:
        return self._error

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 3

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000 + (self._offset or 0))

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return None if self._headers is None else list(self._headers)


def _full(m: _Message) -> Record:
    """The conversion written out in full, one tuple per header (what the adapter did before)."""
    raw: Any = m.headers()
    headers = tuple((str(k), bytes(v or b"")) for k, v in raw) if raw else ()
    return Record(m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", m.timestamp()[1], headers)  # type: ignore[arg-type]


def test_records_equal_the_full_conversion_across_runs_of_headers() -> None:
    a = [("x-request-id", b"r1"), ("x-notify-validated", b"1")]
    b = [("x-request-id", b"r2"), ("x-notify-validated", b"1")]
    plan = [a, a, b, b, None, None, a, [("x-empty", None)], [("x-empty", b"")], [], a]
    messages = [_Message(i, h, value=None if i == 4 else b"v%d" % i) for i, h in enumerate(plan)]
    got = _records(messages)
    assert got == [_full(m) for m in messages]
    assert all(type(r) is Record for r in got)
    assert got[7].headers == got[8].headers == (("x-empty", b""),)
    assert got[4].value == b"" and got[4].headers == () and got[9].headers == ()
    assert got[0].offset == 0 and got[0].timestamp_ms == 1_000


def test_informational_errors_are_skipped_and_a_fatal_one_raises() -> None:
    messages = [_Message(0, None), _Message(None, None, error=_Error(fatal=False)), _Message(1, None)]
    assert [r.offset for r in _records(messages)] == [0, 1]
    with pytest.raises(BackendError, match="Kafka consumer error"):
        _records([_Message(0, None), _Message(None, None, error=_Error(fatal=True))])
