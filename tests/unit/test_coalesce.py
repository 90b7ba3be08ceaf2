"""notify_core.coalesce: calls of one batch park at ``ask`` and are answered by one resolver call."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from notify_core.coalesce import ask, run_together

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who")


class Doubler:
    """A resolver that records each call's items and answers 2 x item, or an error for negative items."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def resolve(self, items: Sequence[int]) -> list[int | Exception]:
        self.calls.append(list(items))
        return [ValueError(f"negative {i}") if i < 0 else 2 * i for i in items]


def test_outside_a_batch_ask_is_the_resolver_called_with_the_one_item() -> None:
    doubler = Doubler()
    assert ask(doubler.resolve, 21) == 42
    with pytest.raises(ValueError, match="negative -1"):
        ask(doubler.resolve, -1)
    assert doubler.calls == [[21], [-1]]


def test_a_batchs_asks_are_answered_by_one_resolver_call_each_call_its_own_answer() -> None:
    doubler = Doubler()
    done: list[int] = []

    def call(i: int) -> Callable[[], int]:
        def run() -> int:
            answer = ask(doubler.resolve, i)
            done.append(i)
            return answer + 1
        return run

    results = run_together([call(i) for i in range(10)])
    assert results == [2 * i + 1 for i in range(10)]
    assert doubler.calls == [list(range(10))]  # one call, the items in the calls' order
    assert done == list(range(10))


def test_errors_stay_with_their_call() -> None:
    """An answer that is an error raises in its own call only; a call that raises, or a resolver that
    raises, ends only the calls concerned; the others get their answers."""
    doubler = Doubler()

    def failing_resolver(items: Sequence[int]) -> list[int]:
        raise RuntimeError("resolver down")

    def caught(i: int) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return ask(doubler.resolve, i)
            except ValueError as exc:
                return f"caught {exc}"
        return run

    def broken() -> int:
        raise KeyError("before asking")

    results = run_together([caught(3), caught(-4), broken, lambda: ask(failing_resolver, 1), caught(5)])
    assert results[0] == 6 and results[1] == "caught negative -4" and results[4] == 10
    assert isinstance(results[2], KeyError)
    assert isinstance(results[3], RuntimeError) and str(results[3]) == "resolver down"
    assert doubler.calls == [[3, -4, 5]]


def test_calls_that_ask_several_times_and_several_resolvers_take_turns() -> None:
    first, second = Doubler(), Doubler()

    def call(i: int) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            a = ask(first.resolve, i)
            b = ask(second.resolve, a) if i % 2 else ask(first.resolve, a)
            return a, b
        return run

    results = run_together([call(i) for i in range(4)])
    assert results == [(0, 0), (2, 4), (4, 8), (6, 12)]
    assert first.calls == [[0, 1, 2, 3], [0, 4]] and second.calls == [[2, 6]]


def test_a_call_without_asks_returns_at_once_and_nothing_is_resolved() -> None:
    doubler = Doubler()
    assert run_together([lambda: 1, lambda: ask(doubler.resolve, 2)]) == [1, 4]
    assert doubler.calls == [[2]]


def test_each_call_keeps_its_own_context_variables_across_the_park() -> None:
    doubler = Doubler()
    WHO.set("outside")

    def call(name: str) -> Callable[[], tuple[str, str]]:
        def run() -> tuple[str, str]:
            inherited = WHO.get()
            WHO.set(name)
            ask(doubler.resolve, 1)  # the other calls set theirs while this one is parked
            return inherited, WHO.get()
        return run

    assert run_together([call("a"), call("b"), call("c")]) == [("outside", "a"), ("outside", "b"), ("outside", "c")]
    assert WHO.get() == "outside"


def test_a_resolver_answering_the_wrong_number_of_items_fails_its_calls() -> None:
    def short(items: Sequence[int]) -> list[int]:
        return [1]

    results = run_together([lambda: ask(short, 1), lambda: ask(short, 2)])
    assert all(isinstance(r, RuntimeError) and "answered 1 of 2" in str(r) for r in results)
