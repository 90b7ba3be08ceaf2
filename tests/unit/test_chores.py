"""The housekeeping schedule (notify_core/chores.py) on a clock that steps back: the next slice is due at
once, not the step's length later (before, a step back of an hour put off the hourly expiry sweep and the
stream log's trim by two hours)."""

from __future__ import annotations

from notify_core.chores import SlicedChore

HOUR = 3600.0


def test_a_chore_runs_on_its_schedule_and_at_once_after_the_clock_steps_back() -> None:
    calls: list[int] = []

    def work(limit: int) -> int:
        calls.append(limit)
        return 0

    chore = SlicedChore(work, what="sweep", now=1_000_000.0, every_s=HOUR, first_after_s=60.0, per_call=10)
    assert chore.maybe_run(1_000_059.0) == 0 and calls == []  # first due a minute after the start
    chore.maybe_run(1_000_060.0)
    assert calls == [10]
    chore.maybe_run(1_000_060.0 + HOUR - 1)
    assert calls == [10]  # then hourly
    chore.maybe_run(1_000_060.0 + HOUR)
    assert calls == [10, 10]
    chore.maybe_run(1_000_060.0 + HOUR - 2 * HOUR)  # the clock stepped back two hours
    assert calls == [10, 10, 10]
    chore.maybe_run(1_000_060.0 - HOUR + 1)
    assert calls == [10, 10, 10]  # and hourly again from there


def test_a_full_slice_is_followed_by_the_next_at_once() -> None:
    done = iter([10, 10, 3])
    chore = SlicedChore(lambda limit: next(done), what="trim", now=0.0, every_s=HOUR, first_after_s=0.0,
                        per_call=10)
    assert [chore.maybe_run(5.0), chore.maybe_run(5.0), chore.maybe_run(5.0), chore.maybe_run(6.0)] == [10, 10, 3, 0]
