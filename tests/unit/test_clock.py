"""The injected clock's three forms: the system clock, NOTIFY_CLOCK_START (moves with real time from an
instant) and NOTIFY_CLOCK_FROZEN (stands at it), chosen by the settings every entry point reads."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notify_core.clock import SYSTEM_CLOCK, starting_at, utcnow
from notify_core.errors import ConfigurationError
from notify_core.settings import NotifySettings

WHEN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_without_a_start_it_is_the_system_clock(tmp_path: Path) -> None:
    assert NotifySettings(data_dir=tmp_path).clock() is SYSTEM_CLOCK
    assert starting_at(None, frozen=True) is SYSTEM_CLOCK


def test_a_start_moves_with_real_time_and_every_caller_agrees(tmp_path: Path) -> None:
    when = datetime(2031, 1, 1, 0, 30, tzinfo=UTC)  # an instant no other test anchors
    first = NotifySettings(data_dir=tmp_path, clock_start=when).clock()
    assert abs(first.now() - when.timestamp()) < 5.0
    time.sleep(0.05)
    second = NotifySettings(data_dir=tmp_path, clock_start=when).clock()
    assert second.now() - when.timestamp() >= 0.05  # the same anchor: the second caller is not reset
    assert abs(second.now() - first.now()) < 0.01


def test_frozen_stands_still_and_sleeps_move_only_the_sleepers_copy(tmp_path: Path) -> None:
    settings = NotifySettings(data_dir=tmp_path, clock_start=WHEN, clock_frozen=True)
    clock = settings.clock()
    time.sleep(0.05)
    assert utcnow(clock) == WHEN
    clock.sleep(30)
    assert clock.now() == WHEN.timestamp() + 30
    assert utcnow(settings.clock()) == WHEN  # another stage of the run still sees the same instant


def test_a_naive_start_is_utc(tmp_path: Path) -> None:
    clock = NotifySettings(data_dir=tmp_path, clock_start=WHEN.replace(tzinfo=None), clock_frozen=True).clock()
    assert utcnow(clock) == WHEN


def test_frozen_without_a_start_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_CLOCK_FROZEN", "true")
    monkeypatch.delenv("NOTIFY_CLOCK_START", raising=False)
    with pytest.raises(ConfigurationError, match="NOTIFY_CLOCK_START"):
        NotifySettings(data_dir=tmp_path)
